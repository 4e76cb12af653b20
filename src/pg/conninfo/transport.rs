//! The TLS and TCP keywords beyond `sslmode` and the certificate files: `sslnegotiation`,
//! `ssl_min_protocol_version`, `ssl_max_protocol_version`, `sslsni`, `keepalives`, `keepalives_idle`,
//! `keepalives_interval`, `keepalives_count`, `tcp_user_timeout`. pg_dump's libpq applies them, so dr's own
//! connection applies them too (tokio-postgres's socket options, rustls's protocol versions and SNI), or refuses
//! what it cannot do, naming the keyword. They are parsed and checked here, once.

use std::time::Duration;

use super::ConnInfoError;
use super::resolve::{Setting, Sources};

/// A TLS protocol version dr's own connection can speak (rustls speaks TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// How dr's own connection reaches the server, as libpq's keywords ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// `sslnegotiation=direct`: TLS from the first byte, without asking first (PostgreSQL 17 and later).
    pub direct_tls: bool,
    /// `ssl_min_protocol_version` (libpq's default TLSv1.2; TLSv1 and TLSv1.1 also mean TLS 1.2 here, the
    /// oldest dr speaks).
    pub tls_min: TlsVersion,
    /// `ssl_max_protocol_version` (no maximum by default).
    pub tls_max: TlsVersion,
    /// `sslsni`: send the host name in the TLS handshake (libpq's default 1).
    pub sni: bool,
    /// `keepalives`: TCP keepalives on (libpq's default 1).
    pub keepalives: bool,
    /// `keepalives_idle`, `keepalives_interval`: seconds; `None` leaves the system's (or driver's) default.
    pub keepalives_idle: Option<Duration>,
    pub keepalives_interval: Option<Duration>,
    /// `keepalives_count`: probes lost before the connection is dropped.
    pub keepalives_count: Option<u32>,
    /// `tcp_user_timeout`: milliseconds; 0 or unset leaves the system's default.
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport {
            direct_tls: false,
            tls_min: TlsVersion::Tls12,
            tls_max: TlsVersion::Tls13,
            sni: true,
            keepalives: true,
            keepalives_idle: None,
            keepalives_interval: None,
            keepalives_count: None,
            tcp_user_timeout: None,
        }
    }
}

/// libpq's environment variables for these keywords (the TCP ones have none).
pub(super) fn env_var(key: &str) -> Option<&'static str> {
    Some(match key {
        "sslnegotiation" => "PGSSLNEGOTIATION",
        "ssl_min_protocol_version" => "PGSSLMINPROTOCOLVERSION",
        "ssl_max_protocol_version" => "PGSSLMAXPROTOCOLVERSION",
        "sslsni" => "PGSSLSNI",
        _ => return None,
    })
}

impl Sources<'_> {
    /// The transport settings from every source, each checked; the error names the keyword, where its value
    /// came from, and what to do.
    pub(super) fn transport(&self) -> Result<Transport, ConnInfoError> {
        let mut t = Transport::default();
        if let Some(s) = self.setting("sslnegotiation") {
            match s.value.as_str() {
                "postgres" => {}
                "direct" => {
                    // libpq's rule: a direct handshake cannot fall back to an unencrypted connection.
                    let sslmode = self.get("sslmode").unwrap_or_else(|| "prefer".to_string());
                    if !matches!(sslmode.as_str(), "require" | "verify-ca" | "verify-full") {
                        return Err(ConnInfoError::Invalid(format!(
                            "{}: sslmode={sslmode} may not be used with sslnegotiation=direct; use sslmode=require, \
                             verify-ca or verify-full",
                            s.describe("sslnegotiation")
                        )));
                    }
                    t.direct_tls = true;
                }
                _ => return Err(invalid(&s, "sslnegotiation", "not one of postgres, direct")),
            }
        }
        if let Some(s) = self.setting("ssl_min_protocol_version").filter(|s| !s.value.is_empty()) {
            t.tls_min = match protocol_version(&s.value) {
                Some(ProtocolVersion::Old) => TlsVersion::Tls12,
                Some(ProtocolVersion::Spoken(v)) => v,
                None => return Err(invalid(&s, "ssl_min_protocol_version", PROTOCOL_VERSIONS)),
            };
        }
        if let Some(s) = self.setting("ssl_max_protocol_version").filter(|s| !s.value.is_empty()) {
            t.tls_max = match protocol_version(&s.value) {
                Some(ProtocolVersion::Old) => {
                    return Err(ConnInfoError::Refused(format!(
                        "{}: dr's own connection speaks TLSv1.2 and TLSv1.3 only, so it cannot stop below TLSv1.2; \
                         use ssl_max_protocol_version=TLSv1.2 or TLSv1.3, or remove it",
                        s.describe("ssl_max_protocol_version")
                    )));
                }
                Some(ProtocolVersion::Spoken(v)) => v,
                None => return Err(invalid(&s, "ssl_max_protocol_version", PROTOCOL_VERSIONS)),
            };
            if t.tls_max < t.tls_min {
                return Err(ConnInfoError::Invalid(format!(
                    "{}: below ssl_min_protocol_version, so no TLS version is left; raise it, or lower the minimum",
                    s.describe("ssl_max_protocol_version")
                )));
            }
        }
        if let Some(s) = self.setting("sslsni") {
            t.sni = match s.value.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(invalid(&s, "sslsni", "not 0 or 1")),
            };
        }
        if let Some(s) = self.setting("keepalives") {
            t.keepalives = integer(&s, "keepalives")? != 0;
        }
        t.keepalives_idle = positive(self.setting("keepalives_idle"), "keepalives_idle")?.map(Duration::from_secs);
        t.keepalives_interval =
            positive(self.setting("keepalives_interval"), "keepalives_interval")?.map(Duration::from_secs);
        t.keepalives_count = positive(self.setting("keepalives_count"), "keepalives_count")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(s) = self.setting("tcp_user_timeout") {
            let ms = integer(&s, "tcp_user_timeout")?;
            let ms = u64::try_from(ms).map_err(|_| invalid(&s, "tcp_user_timeout", "not a number of milliseconds"))?;
            t.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        Ok(t)
    }
}

const PROTOCOL_VERSIONS: &str = "not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3";

enum ProtocolVersion {
    /// TLSv1 or TLSv1.1: libpq knows them, rustls does not speak them.
    Old,
    Spoken(TlsVersion),
}

/// libpq compares these names without regard to case.
fn protocol_version(value: &str) -> Option<ProtocolVersion> {
    Some(match value.to_ascii_lowercase().as_str() {
        "tlsv1" | "tlsv1.1" => ProtocolVersion::Old,
        "tlsv1.2" => ProtocolVersion::Spoken(TlsVersion::Tls12),
        "tlsv1.3" => ProtocolVersion::Spoken(TlsVersion::Tls13),
        _ => return None,
    })
}

fn invalid(s: &Setting, key: &str, problem: &str) -> ConnInfoError {
    ConnInfoError::Invalid(format!("{}: {problem}", s.describe(key)))
}

/// An integer, as libpq reads one (surrounding blanks allowed).
fn integer(s: &Setting, key: &str) -> Result<i64, ConnInfoError> {
    s.value.trim().parse().map_err(|_| invalid(s, key, "not an integer"))
}

/// A count or a number of seconds the kernel takes only when it is at least 1 (libpq passes 0 on, and Linux then
/// refuses the socket option, failing the connection).
fn positive(setting: Option<Setting>, key: &str) -> Result<Option<u64>, ConnInfoError> {
    let Some(s) = setting else { return Ok(None) };
    match u64::try_from(integer(&s, key)?) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(invalid(&s, key, "must be 1 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConnInfo;
    use super::*;

    fn transport(text: &str) -> Transport {
        ConnInfo::parse(text).unwrap().try_resolve(&|_| None).unwrap().transport
    }

    fn refusal(text: &str) -> String {
        ConnInfo::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn libpq_defaults_hold_when_nothing_is_set() {
        assert_eq!(transport("host=db"), Transport::default());
        let t = Transport::default();
        assert!(t.sni && t.keepalives && !t.direct_tls);
        assert_eq!((t.tls_min, t.tls_max), (TlsVersion::Tls12, TlsVersion::Tls13));
    }

    #[test]
    fn every_keyword_is_applied() {
        let t = transport(
            "host=db sslmode=require sslnegotiation=direct ssl_min_protocol_version=TLSv1.3 sslsni=0 keepalives=0 \
             keepalives_idle=30 keepalives_interval=5 keepalives_count=4 tcp_user_timeout=9000",
        );
        assert!(t.direct_tls && !t.sni && !t.keepalives);
        assert_eq!((t.tls_min, t.tls_max), (TlsVersion::Tls13, TlsVersion::Tls13));
        assert_eq!(t.keepalives_idle, Some(Duration::from_secs(30)));
        assert_eq!(t.keepalives_interval, Some(Duration::from_secs(5)));
        assert_eq!(t.keepalives_count, Some(4));
        assert_eq!(t.tcp_user_timeout, Some(Duration::from_millis(9000)));
        let t = transport("host=db ssl_max_protocol_version=tlsv1.2 ssl_min_protocol_version=TLSv1 tcp_user_timeout=0");
        assert_eq!((t.tls_min, t.tls_max), (TlsVersion::Tls12, TlsVersion::Tls12), "TLSv1 as a minimum: dr's 1.2");
        assert_eq!(t.tcp_user_timeout, None, "0 is the system's default, as in libpq");
        assert!(transport("host=db sslnegotiation=postgres keepalives=1 sslsni=1").keepalives);
    }

    #[test]
    fn what_cannot_be_applied_is_refused_naming_the_keyword() {
        for (text, start, words) in [
            ("host=db sslnegotiation=direct", "sslnegotiation=direct: ", "sslmode=require"),
            ("host=db sslmode=require sslnegotiation=fast", "sslnegotiation=fast: ", "postgres, direct"),
            ("host=db ssl_max_protocol_version=TLSv1.1", "ssl_max_protocol_version=TLSv1.1: ", "TLSv1.2 and TLSv1.3"),
            ("host=db ssl_min_protocol_version=SSLv3", "ssl_min_protocol_version=SSLv3: ", "TLSv1.3"),
            (
                "host=db ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
                "ssl_max_protocol_version=TLSv1.2: ",
                "below ssl_min_protocol_version",
            ),
            ("host=db sslsni=yes", "sslsni=yes: ", "0 or 1"),
            ("host=db keepalives=on", "keepalives=on: ", "integer"),
            ("host=db keepalives_idle=0", "keepalives_idle=0: ", "1 or more"),
            ("host=db keepalives_interval=-5", "keepalives_interval=-5: ", "1 or more"),
            ("host=db keepalives_count=x", "keepalives_count=x: ", "integer"),
            ("host=db tcp_user_timeout=-1", "tcp_user_timeout=-1: ", "milliseconds"),
        ] {
            let error = refusal(text);
            assert!(error.starts_with(start) && error.contains(words), "{text}: {error}");
        }
    }

    #[test]
    fn the_environment_and_a_service_are_checked_when_connecting() {
        let env = |key: &str| (key == "PGSSLMAXPROTOCOLVERSION").then(|| "TLSv1".to_string());
        let error = ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap_err().to_string();
        assert!(error.starts_with("ssl_max_protocol_version=TLSv1 (from PGSSLMAXPROTOCOLVERSION): "), "{error}");
        let env = |key: &str| (key == "PGSSLSNI").then(|| "0".to_string());
        assert!(!ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap().transport.sni);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(&file, "[slow]\nhost=db\nkeepalives_idle=0\n").unwrap();
        let services = file.display().to_string();
        let env = move |key: &str| (key == "PGSERVICEFILE").then(|| services.clone());
        let error = ConnInfo::parse("service=slow").unwrap().try_resolve(&env).unwrap_err().to_string();
        assert!(error.starts_with("keepalives_idle=0 (from service \"slow\""), "{error}");
    }
}
