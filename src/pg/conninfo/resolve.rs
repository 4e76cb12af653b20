//! What a connection string leaves out, filled in as libpq would: the service file's section, the `PG*`
//! environment, `.pgpass`, defaults; and what dr's own connection cannot honour, refused.

use std::fmt;
use std::path::{Path, PathBuf};

use super::pgpass::pgpass_lookup;
use super::transport::{self, Transport};
use super::{ConnInfo, ConnInfoError, service};

/// A [`ConnInfoError::Refused`] with a formatted message.
macro_rules! refused {
    ($($arg:tt)*) => { ConnInfoError::Refused(format!($($arg)*)) };
}

/// A [`ConnInfoError::Invalid`] with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => { ConnInfoError::Invalid(format!($($arg)*)) };
}

/// The environment variable libpq reads for a keyword, when there is one.
fn env_var(key: &str) -> Option<&'static str> {
    Some(match key {
        "host" => "PGHOST",
        "hostaddr" => "PGHOSTADDR",
        "port" => "PGPORT",
        "dbname" => "PGDATABASE",
        "user" => "PGUSER",
        "password" => "PGPASSWORD",
        "passfile" => "PGPASSFILE",
        "service" => "PGSERVICE",
        "options" => "PGOPTIONS",
        "application_name" => "PGAPPNAME",
        "connect_timeout" => "PGCONNECT_TIMEOUT",
        "target_session_attrs" => "PGTARGETSESSIONATTRS",
        "sslmode" => "PGSSLMODE",
        "sslrootcert" => "PGSSLROOTCERT",
        "sslcert" => "PGSSLCERT",
        "sslkey" => "PGSSLKEY",
        "sslcertmode" => "PGSSLCERTMODE",
        "sslcrl" => "PGSSLCRL",
        "sslcrldir" => "PGSSLCRLDIR",
        "gssencmode" => "PGGSSENCMODE",
        "krbsrvname" => "PGKRBSRVNAME",
        "gsslib" => "PGGSSLIB",
        "gssdelegation" => "PGGSSDELEGATION",
        "channel_binding" => "PGCHANNELBINDING",
        "require_auth" => "PGREQUIREAUTH",
        "requirepeer" => "PGREQUIREPEER",
        "load_balance_hosts" => "PGLOADBALANCEHOSTS",
        _ => return None,
    })
}

/// Where libpq takes a setting from, highest first: the connection string, the service file's section, the
/// environment variable (libpq's documented order: "a service file setting overrides the corresponding
/// environment variable, and in turn can be overridden by a value given directly in the connection string").
/// Defaults come last, in [`Sources::resolve`].
pub(super) struct Sources<'a> {
    pub explicit: &'a ConnInfo,
    pub service: Option<&'a service::Service>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// A setting with where it came from, for messages.
pub(super) struct Setting {
    pub value: String,
    pub origin: String,
}

impl Setting {
    /// `key=value` plus its origin, as messages show it (never used for secrets).
    pub fn describe(&self, key: &str) -> String {
        format!("{key}={}{}", self.value, self.origin)
    }
}

impl Sources<'_> {
    pub fn setting(&self, key: &str) -> Option<Setting> {
        if let Some(value) = self.explicit.get(key) {
            return Some(Setting { value: value.to_string(), origin: String::new() });
        }
        if let Some(service) = self.service
            && let Some(value) = service.get(key)
        {
            let origin = format!(" (from service {:?} in {})", service.name, service.file.display());
            return Some(Setting { value: value.to_string(), origin });
        }
        let var = env_var(key).or_else(|| transport::env_var(key))?;
        (self.env)(var).filter(|v| !v.is_empty()).map(|value| Setting { value, origin: format!(" (from {var})") })
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.setting(key).map(|s| s.value)
    }

    /// Where a connection goes, as `user@host:port/dbname` (no password file read, nothing logged): for
    /// messages.
    pub fn target(&self) -> String {
        let user = self.get("user").unwrap_or_else(crate::host::user_name);
        let host = self.get("host").or_else(|| self.get("hostaddr")).unwrap_or_else(default_host);
        let port = self.get("port").unwrap_or_else(|| "5432".to_string());
        let dbname = self.get("dbname").unwrap_or_else(|| user.clone());
        format!("{user}@{host}:{port}/{dbname}")
    }

    pub fn resolve(&self) -> Resolved {
        let pick = |key: &str| self.get(key);
        let user = pick("user").unwrap_or_else(crate::host::user_name);
        let host = pick("host").unwrap_or_else(default_host);
        let port = pick("port").unwrap_or_else(|| "5432".to_string());
        let dbname = pick("dbname").unwrap_or_else(|| user.clone());
        let home = home_dir(self.env);
        let passfile = pick("passfile").map(PathBuf::from).or_else(|| home.as_ref().map(|home| home.join(".pgpass")));
        let mut resolved = Resolved {
            passfile,
            host,
            hostaddr: pick("hostaddr"),
            port,
            dbname,
            password: pick("password"),
            sslmode: pick("sslmode").unwrap_or_else(|| "prefer".to_string()),
            sslrootcert: pick("sslrootcert"),
            sslcert: pick("sslcert"),
            sslkey: pick("sslkey"),
            sslcertmode: pick("sslcertmode").unwrap_or_else(|| "allow".to_string()),
            sslcrl: pick("sslcrl"),
            sslcrldir: pick("sslcrldir"),
            application_name: pick("application_name"),
            options: pick("options"),
            connect_timeout: pick("connect_timeout"),
            target_session_attrs: pick("target_session_attrs"),
            channel_binding: pick("channel_binding"),
            // Checked in `refuse_unsupported` before a connection uses it; the lenient `resolve` that only
            // wants names takes the defaults for a bad value.
            transport: self.transport().unwrap_or_default(),
            home,
            user,
        };
        if resolved.password.is_none()
            && let Some(passfile) = &resolved.passfile
        {
            resolved.password = pgpass_lookup(passfile, &resolved);
        }
        resolved
    }

    /// Settings dr's own connection cannot honour, and values it cannot apply the way libpq would (see
    /// [`transport`]). Accepting them silently would let dr's connection and pg_dump's differ (the exported
    /// snapshot must come from the server pg_dump reads), so they are refused.
    pub fn refuse_unsupported(&self) -> Result<(), ConnInfoError> {
        self.transport()?;
        if let Some(s) = self.setting("gssencmode") {
            match s.value.as_str() {
                // Without GSSAPI credentials libpq's `prefer` goes on without GSS encryption, as dr does.
                "disable" | "prefer" => {}
                "require" => {
                    return Err(refused!(
                        "{}: dr's own connection cannot use GSSAPI encryption (it has no Kerberos/GSSAPI \
                         support); use gssencmode=prefer or disable, and sslmode=verify-full for encryption",
                        s.describe("gssencmode")
                    ));
                }
                _ => return Err(invalid!("{}: not one of disable, prefer, require", s.describe("gssencmode"))),
            }
        }
        for key in ["krbsrvname", "gsslib", "gssdelegation"] {
            let Some(s) = self.setting(key) else { continue };
            // gssdelegation=0 (libpq's default) asks for nothing dr does not already do.
            if key == "gssdelegation" && s.value == "0" {
                continue;
            }
            return Err(refused!(
                "{}: dr's own connection cannot authenticate with Kerberos/GSSAPI, so this setting cannot take \
                 effect; remove it and use password (.pgpass, PGPASSWORD) or client-certificate (sslcert, sslkey) \
                 authentication",
                s.describe(key)
            ));
        }
        if let Some(s) = self.setting("sslcertmode") {
            match s.value.as_str() {
                "disable" | "allow" => {}
                "require" => {
                    return Err(refused!(
                        "{}: dr's own connection cannot insist that the server asks for a client certificate; \
                         use sslcertmode=allow (the default), which still presents sslcert when the server asks",
                        s.describe("sslcertmode")
                    ));
                }
                _ => return Err(invalid!("{}: not one of disable, allow, require", s.describe("sslcertmode"))),
            }
        }
        if let Some(s) = self.setting("require_auth") {
            return Err(refused!(
                "{}: dr's own connection cannot limit the authentication methods the server may ask for; remove \
                 it, and protect the password with sslmode=verify-full (and channel_binding=require for SCRAM)",
                s.describe("require_auth")
            ));
        }
        if let Some(s) = self.setting("requirepeer") {
            return Err(refused!(
                "{}: dr's own connection cannot check which user runs the server behind a unix socket; remove it, \
                 or connect over TCP with sslmode=verify-full",
                s.describe("requirepeer")
            ));
        }
        if let Some(s) = self.setting("load_balance_hosts").filter(|s| s.value == "random") {
            let several = |key: &str| self.get(key).is_some_and(|v| v.contains(','));
            if several("host") || several("hostaddr") {
                return Err(refused!(
                    "{}: dr's own connection and pg_dump's would each pick a host at random, and pg_dump must \
                     reach the server that holds dr's snapshot; name one host, or use load_balance_hosts=disable",
                    s.describe("load_balance_hosts")
                ));
            }
        }
        // libpq reads an sslkey with a colon as an OpenSSL engine and key name.
        if let Some(s) = self.setting("sslkey")
            && s.value.contains(':')
        {
            // Not quoted: an engine's key name (a PKCS#11 URI) can carry a PIN.
            return Err(refused!(
                "sslkey{} names an OpenSSL engine key (ENGINE:KEY), which dr's own connection cannot use; point \
                 sslkey at a PEM key file",
                s.origin
            ));
        }
        Ok(())
    }
}

/// Connection parameters after defaults, for dr's own connections.
#[derive(Clone)]
pub struct Resolved {
    pub host: String,
    pub hostaddr: Option<String>,
    pub port: String,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    pub sslmode: String,
    pub sslrootcert: Option<String>,
    /// The client certificate and key as set (libpq then tries `~/.postgresql/postgresql.crt` / `.key`).
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub sslcertmode: String,
    /// Revocation lists for the server's chain (libpq then tries `~/.postgresql/root.crl`).
    pub sslcrl: Option<String>,
    pub sslcrldir: Option<String>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub connect_timeout: Option<String>,
    pub target_session_attrs: Option<String>,
    pub channel_binding: Option<String>,
    /// TLS negotiation, protocol versions, SNI, TCP keepalives and user timeout.
    pub transport: Transport,
    /// The home directory libpq looks in (`$HOME`, else the user database): `.pgpass`, `.postgresql/`.
    pub home: Option<PathBuf>,
    /// The password file libpq reads when no password is given: `passfile`, else `~/.pgpass`.
    pub passfile: Option<PathBuf>,
}

impl Resolved {
    /// A file libpq takes from `~/.postgresql/` when its keyword is not set.
    pub fn default_file(&self, name: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|home| home.join(".postgresql").join(name))
    }

    /// The file a TLS keyword's value names, else libpq's default `~/.postgresql/NAME` (libpq treats an empty
    /// value as unset there).
    pub fn file_or_default(&self, value: Option<&str>, default_name: &str) -> Option<PathBuf> {
        match value.filter(|v| !v.is_empty()) {
            Some(value) => Some(PathBuf::from(value)),
            None => self.default_file(default_name),
        }
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resolved({}@{}:{}/{})", self.user, self.host, self.port, self.dbname)
    }
}

/// `$HOME`, else the user database's home directory (libpq's order since PostgreSQL 15).
pub(super) fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.dir))
}

/// libpq's compiled-in socket directory differs between builds; Debian's is /var/run/postgresql.
pub(super) fn default_host() -> String {
    ["/var/run/postgresql", "/tmp"].into_iter().find(|dir| Path::new(dir).is_dir()).unwrap_or("localhost").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_applies_environment_then_pgpass() {
        let dir = tempfile::tempdir().unwrap();
        let passfile = dir.path().join("pgpass");
        std::fs::write(&passfile, "# comment\nother:*:*:*:no\nlocalhost:5433:app:alice:pa\\:ss\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let passfile_text = passfile.display().to_string();
        let env = move |key: &str| match key {
            "PGPORT" => Some("5433".to_string()),
            "PGUSER" => Some("alice".to_string()),
            "PGPASSFILE" => Some(passfile_text.clone()),
            _ => None,
        };
        let r = ConnInfo::parse("host=/tmp dbname=app").unwrap().resolve(&env);
        assert_eq!((r.port.as_str(), r.user.as_str()), ("5433", "alice"));
        assert_eq!(r.password.as_deref(), Some("pa:ss"));
    }

    /// An environment made of the given variables only.
    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_service_sits_between_the_string_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(&file, "[prod]\nhost=db.example.com\nport=6543\nuser=backup\nsslmode=verify-full\n").unwrap();
        let env = env_of(&[
            ("PGSERVICEFILE", file.display().to_string()),
            ("PGSYSCONFDIR", dir.path().join("none").display().to_string()),
            ("PGHOST", "env-host".to_string()),
            ("PGUSER", "env-user".to_string()),
            ("PGDATABASE", "env-db".to_string()),
        ]);
        // libpq's own example: "service=mydb port=5434" takes the service's host and the string's port.
        let r = ConnInfo::parse("service=prod port=5434").unwrap().try_resolve(&env).unwrap();
        assert_eq!(r.host, "db.example.com", "the service overrides PGHOST");
        assert_eq!(r.port, "5434", "the string overrides the service");
        assert_eq!(r.user, "backup");
        assert_eq!(r.dbname, "env-db", "what the service leaves out comes from the environment");
        assert_eq!(r.sslmode, "verify-full");
        // PGSERVICE names the service when the string does not.
        let with_pgservice = |key: &str| if key == "PGSERVICE" { Some("prod".to_string()) } else { env(key) };
        let r = ConnInfo::parse("dbname=app").unwrap().try_resolve(&with_pgservice).unwrap();
        assert_eq!((r.host.as_str(), r.dbname.as_str()), ("db.example.com", "app"));
        // Without a service, the environment.
        let r = ConnInfo::parse("dbname=app").unwrap().try_resolve(&env).unwrap();
        assert_eq!(r.host, "env-host");
        assert_eq!(ConnInfo::parse("service=prod").unwrap().redacted_in(&|_| None), "service=prod");
        // Messages name the service and where it leads, never a `localhost/` dr would not connect to.
        assert_eq!(
            ConnInfo::parse("").unwrap().redacted_in(&with_pgservice),
            "service=prod (backup@db.example.com:6543/env-db)"
        );
        assert_eq!(
            ConnInfo::parse("service=prod port=5434").unwrap().redacted_in(&env),
            "service=prod (backup@db.example.com:5434/env-db)"
        );
        assert_eq!(ConnInfo::parse("dbname=app").unwrap().redacted_in(&env), "env-user@env-host:5432/app");
        assert_eq!(ConnInfo::parse("host=h dbname=app").unwrap().redacted_in(&env), "h/app", "as written");
    }

    #[test]
    fn the_user_file_comes_before_the_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let sysconf = dir.path().join("etc");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&sysconf).unwrap();
        std::fs::write(sysconf.join("pg_service.conf"), "[a]\nhost=system-a\n[b]\nhost=system-b\n").unwrap();
        std::fs::write(home.join(".pg_service.conf"), "[a]\nhost=user-a\n").unwrap();
        let env = env_of(&[("HOME", home.display().to_string()), ("PGSYSCONFDIR", sysconf.display().to_string())]);
        let host =
            |service: &str| ConnInfo::parse(&format!("service={service}")).unwrap().try_resolve(&env).map(|r| r.host);
        assert_eq!(host("a").unwrap(), "user-a");
        // A section missing from the user file is looked up in the system file.
        assert_eq!(host("b").unwrap(), "system-b");
        let error = host("c").unwrap_err().to_string();
        assert!(error.contains("service \"c\" is not defined in"), "{error}");
        assert!(error.contains(".pg_service.conf") && error.contains("etc/pg_service.conf"), "{error}");
        assert!(error.contains("PGSERVICEFILE"), "{error}");
        // The lenient resolve skips what it cannot find; the connection (try_resolve) refuses it.
        assert_eq!(ConnInfo::parse("service=c").unwrap().resolve(&env).host, default_host());
    }

    #[test]
    fn a_bad_service_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(&file, "[prod]\nhost=db\npasword=hunter2\n").unwrap();
        let env = env_of(&[("PGSERVICEFILE", file.display().to_string())]);
        let error = ConnInfo::parse("service=prod").unwrap().try_resolve(&env).unwrap_err().to_string();
        assert!(error.contains(&format!("{}, line 3", file.display())), "{error}");
        assert!(error.contains("\"pasword\""), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn client_certificate_settings_resolve_like_libpq() {
        let env = env_of(&[
            ("PGSSLCERT", "/env/client.crt".to_string()),
            ("PGSSLKEY", "/env/client.key".to_string()),
            ("HOME", "/home/op".to_string()),
        ]);
        let r = ConnInfo::parse("host=db sslkey=/etc/key.pem").unwrap().try_resolve(&env).unwrap();
        assert_eq!(r.sslcert.as_deref(), Some("/env/client.crt"));
        assert_eq!(r.sslkey.as_deref(), Some("/etc/key.pem"));
        assert_eq!(r.sslcertmode, "allow");
        assert_eq!(r.default_file("postgresql.crt"), Some(PathBuf::from("/home/op/.postgresql/postgresql.crt")));
    }

    #[test]
    fn gssapi_is_refused_in_the_string_when_the_configuration_loads() {
        for (text, parameter) in [
            ("host=db gssencmode=require", "gssencmode=require"),
            ("postgres://db/x?krbsrvname=postgres", "krbsrvname=postgres"),
            ("host=db gsslib=gssapi", "gsslib=gssapi"),
            ("host=db gssdelegation=1", "gssdelegation=1"),
            ("host=db sslcertmode=require", "sslcertmode=require"),
            ("host=db sslkey=pkcs11:token?pin-value=1234", "sslkey names an OpenSSL engine key"),
            ("host=db gssencmode=maybe", "gssencmode=maybe"),
            ("host=db require_auth=scram-sha-256", "require_auth=scram-sha-256"),
            ("host=/run/postgresql requirepeer=postgres", "requirepeer=postgres"),
            ("host=a,b load_balance_hosts=random", "load_balance_hosts=random"),
        ] {
            let error = ConnInfo::parse(text).unwrap_err().to_string();
            assert!(error.starts_with(parameter), "{text}: {error}");
            assert!(error.contains(':'), "{text}: {error}");
        }
        let error = ConnInfo::parse("host=db gssencmode=require").unwrap_err().to_string();
        assert!(error.contains("cannot use GSSAPI") && error.contains("gssencmode=prefer"), "{error}");
        let error = ConnInfo::parse("host=db sslkey=pkcs11:token?pin-value=1234").unwrap_err().to_string();
        assert!(!error.contains("1234"), "an engine key name can hold a PIN: {error}");
        let error = ConnInfo::parse("host=db krbsrvname=pg").unwrap_err().to_string();
        assert!(error.contains("Kerberos/GSSAPI") && error.contains("remove it"), "{error}");
        for text in [
            "host=db gssencmode=prefer",
            "host=db gssencmode=disable",
            "host=db gssdelegation=0",
            "host=db load_balance_hosts=random",
            "host=a,b load_balance_hosts=disable",
        ] {
            ConnInfo::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn gssapi_from_the_environment_or_a_service_is_refused_when_connecting() {
        let env = env_of(&[("PGGSSENCMODE", "require".to_string())]);
        let error = ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap_err().to_string();
        assert!(error.starts_with("gssencmode=require (from PGGSSENCMODE): "), "{error}");
        let env = env_of(&[("PGKRBSRVNAME", "postgres".to_string())]);
        let error = ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap_err().to_string();
        assert!(error.starts_with("krbsrvname=postgres (from PGKRBSRVNAME): "), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(&file, "[kerberos]\nhost=db\ngssencmode=require\n").unwrap();
        let env = env_of(&[("PGSERVICEFILE", file.display().to_string())]);
        let error = ConnInfo::parse("service=kerberos").unwrap().try_resolve(&env).unwrap_err().to_string();
        let origin = format!("gssencmode=require (from service \"kerberos\" in {}): ", file.display());
        assert!(error.starts_with(&origin), "{error}");
        // An explicit value overrides the service's, as libpq does.
        ConnInfo::parse("service=kerberos gssencmode=prefer").unwrap().try_resolve(&env).unwrap();
        ConnInfo::parse("host=db").unwrap().try_resolve(&env_of(&[("PGGSSENCMODE", "prefer".into())])).unwrap();
    }
}
