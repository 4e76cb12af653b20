//! libpq connection strings: `postgres://user:pass@host:port/db?sslmode=require` or `host=... dbname=...`.
//!
//! Two consumers with different needs:
//! - child tools (pg_dump, pg_restore) get the string back as key=value **without the password** on their
//!   command line, and the password, when the string had one, in `PGPASSWORD` (argv is world-readable in
//!   /proc; a child's environment is not). Their own libpq applies the `PG*` variables and `.pgpass`.
//! - dr's own connection (tokio-postgres) has no libpq, so [`ConnInfo::try_resolve`] applies the same rules:
//!   explicit value, then the `service`'s section of `pg_service.conf`, then the `PG*` environment variable,
//!   then `.pgpass` for the password, then libpq's default. It applies every keyword that decides which server
//!   is reached, as whom, how the server is checked and how the connection is carried (TLS versions, SNI,
//!   direct TLS, TCP keepalives and timeouts: see `transport`), and refuses what it cannot honour (GSSAPI, TLS
//!   below 1.2, ...), so the two connections never silently differ. The few keywords it leaves to the tools
//!   change none of that (`client_encoding`, `fallback_application_name`, `sslcompression`, `sslpassword`,
//!   `replication`; docs/configuration.md says why for each).
//!
//! Layout: `parse` (the text), `resolve` (service file, environment, defaults; refusals), `transport` (the TLS
//! and TCP keywords), `pgpass` (the password file), `service` (`pg_service.conf`).

use std::fmt;

mod parse;
mod pgpass;
mod resolve;
mod service;
mod transport;

use parse::{parse_keyword_value, parse_url};
pub use resolve::Resolved;
use resolve::{Sources, home_dir};
pub use transport::TlsVersion;

/// Why a connection string cannot be used. The message names the keyword (never a secret's value), where its
/// value came from when that was not the string itself, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    /// The text is not a connection string libpq would read: bad syntax, a bad URL escape, an unknown keyword.
    #[error("{0}")]
    Syntax(String),
    /// A value its keyword does not take (a port that is not a number, an sslmode libpq does not know).
    #[error("{0}")]
    Invalid(String),
    /// A setting libpq would honour and dr's own connection cannot: refused, so that the two connections never
    /// silently differ.
    #[error("{0}")]
    Refused(String),
    /// The service the parameters name is not defined, or a service file cannot be read or parsed.
    #[error("{0}")]
    Service(String),
}

/// A parsed connection string: libpq keywords and values, in the order given.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    params: Vec<(String, String)>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({})", self.redacted())
    }
}

/// Keywords libpq knows; anything else is a typo worth rejecting before a backup runs at 3 a.m.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Values that must never reach an argv or a log line.
const SECRET_KEYWORDS: &[&str] = &["password", "sslpassword"];

/// Whether a restore target or runbook value is a connection string (a URL or `key=value` words) rather than
/// a path.
pub fn looks_like_conninfo(text: &str) -> bool {
    text.contains("://") || text.contains('=')
}

/// A restore target for messages, logs and the audit log: a connection string as `user@host:port/dbname`
/// (never its password, and nothing of one that does not parse), anything else (a path) as it is.
pub fn redact_target(target: &str) -> String {
    if looks_like_conninfo(target) {
        ConnInfo::parse(target).map_or_else(|_| "(a connection string)".to_string(), |c| c.redacted())
    } else {
        target.to_string()
    }
}

impl ConnInfo {
    pub fn parse(text: &str) -> Result<ConnInfo, ConnInfoError> {
        let text = text.trim();
        let params = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            parse_url(text)?
        } else {
            parse_keyword_value(text)?
        };
        for (key, _) in &params {
            if !KEYWORDS.contains(&key.as_str()) {
                return Err(ConnInfoError::Syntax(format!("unknown connection parameter {key:?}")));
            }
        }
        let conninfo = ConnInfo { params };
        // What the string itself asks for and dr's own connection cannot do fails now, with the configuration;
        // the same settings from a service file or the environment are refused when connecting.
        Sources { explicit: &conninfo, service: None, env: &|_| None }.refuse_unsupported()?;
        Ok(conninfo)
    }

    /// The explicit value of a keyword (the last one wins, as in libpq).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A copy with one keyword set (replacing any earlier value).
    pub fn with(&self, key: &str, value: &str) -> ConnInfo {
        let mut params: Vec<_> = self.params.iter().filter(|(k, _)| k != key).cloned().collect();
        params.push((key.to_string(), value.to_string()));
        ConnInfo { params }
    }

    /// The string for a child tool's `--dbname`: key=value, secrets removed.
    pub fn for_child(&self) -> String {
        self.params
            .iter()
            .filter(|(k, _)| !SECRET_KEYWORDS.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The whole connection string as key=value, secrets included: for handing a target to dr's own restore
    /// code, which parses it again. Never for logs or argv (use [`ConnInfo::for_child`] and
    /// [`ConnInfo::redacted`]).
    pub fn to_keyword_value(&self) -> String {
        self.params.iter().map(|(k, v)| format!("{k}={}", quote_value(v))).collect::<Vec<_>>().join(" ")
    }

    /// Environment for a child tool: the password the command line must not carry. (`sslpassword` has no
    /// environment variable in libpq, so it is not passed on; use an unencrypted client key.)
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        self.get("password").map(|password| ("PGPASSWORD", password.to_string())).into_iter().collect()
    }

    /// `user@host:port/dbname`, never the password; for messages and logs. A string that names no host
    /// leaves it to a service or the environment (`PGSERVICE`, `PGHOST`, ...), as libpq does: then what they
    /// resolve to is shown, with the service's name, e.g. `service=site (app@db1:5432/shop)`, never a
    /// `localhost/` that dr would not connect to.
    pub fn redacted(&self) -> String {
        self.redacted_in(&|key| std::env::var(key).ok())
    }

    /// [`ConnInfo::redacted`] with the environment as a function (for tests).
    pub fn redacted_in(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        if self.get("host").is_some() || self.get("hostaddr").is_some() {
            return self.explicit_redacted();
        }
        let named = self.get("service").filter(|s| !s.is_empty()).map(str::to_string);
        let service = match service::lookup(self, env) {
            Ok(service) => service,
            // Connecting will say what is wrong with it; here, only name it.
            Err(_) => {
                let name = named.or_else(|| env("PGSERVICE").filter(|s| !s.is_empty()));
                return name.map_or_else(|| self.explicit_redacted(), |name| format!("service={name}"));
            }
        };
        let target = Sources { explicit: self, service: service.as_ref(), env }.target();
        match service {
            Some(service) => format!("service={} ({target})", service.name),
            None => target,
        }
    }

    /// The string's own `user@host:port/dbname`, without anything it leaves to defaults.
    fn explicit_redacted(&self) -> String {
        let mut out = String::new();
        if let Some(user) = self.get("user") {
            out.push_str(user);
            out.push('@');
        }
        match (self.get("host").or(self.get("hostaddr")), self.get("service")) {
            (Some(host), _) => out.push_str(host),
            (None, Some(service)) => out.push_str(&format!("service={service}")),
            (None, None) => out.push_str("localhost"),
        }
        if let Some(port) = self.get("port") {
            out.push(':');
            out.push_str(port);
        }
        out.push('/');
        out.push_str(self.get("dbname").unwrap_or(""));
        out
    }

    /// Fills in what the string left out, as libpq would: service file, environment, `.pgpass`, defaults.
    ///
    /// Lenient: a service that cannot be read is skipped here (for callers that only want a name, such as the
    /// database a restore creates); [`ConnInfo::try_resolve`], which dr's own connection uses, reports it.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
        let service = service::lookup(self, env).ok().flatten();
        Sources { explicit: self, service: service.as_ref(), env }.resolve()
    }

    /// [`ConnInfo::resolve`], refusing what dr's own connection cannot honour the way libpq would: an undefined
    /// or unreadable service, GSSAPI requirements, OpenSSL engine keys. The message names the parameter, where it
    /// came from, and what to do instead.
    pub fn try_resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, ConnInfoError> {
        let service = service::lookup(self, env)?;
        let sources = Sources { explicit: self, service: service.as_ref(), env };
        sources.refuse_unsupported()?;
        Ok(sources.resolve())
    }
}

fn quote_value(value: &str) -> String {
    let plain = !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain { value.to_string() } else { format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_string_never_holds_the_password() {
        let c = ConnInfo::parse("postgres://app:hunter2@db/x").unwrap();
        let child = c.for_child();
        assert!(!child.contains("hunter2"), "{child}");
        assert_eq!(ConnInfo::parse(&child).unwrap().get("dbname"), Some("x"));
        assert_eq!(c.child_env(), vec![("PGPASSWORD", "hunter2".to_string())]);
        assert!(!c.redacted().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
