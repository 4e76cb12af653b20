//! libpq connection strings: `postgres://user:pass@host:port/db?sslmode=require` or `host=... dbname=...`.
//!
//! Two consumers with different needs:
//! - child tools (pg_dump, pg_restore) get the string back as key=value **without the password** on their
//!   command line, and the password, when the string had one, in `PGPASSWORD` (argv is world-readable in
//!   /proc; a child's environment is not). Their own libpq applies the `PG*` variables and `.pgpass`.
//! - dr's own connection (tokio-postgres) has no libpq, so [`ConnInfo::try_resolve`] applies the same rules:
//!   explicit value, then the `service`'s section of `pg_service.conf`, then the `PG*` environment variable,
//!   then `.pgpass` for the password, then libpq's default. What it cannot honour (GSSAPI) it refuses, so the
//!   two connections never silently go to different servers or authenticate differently.

use std::fmt;
use std::path::{Path, PathBuf};

mod service;

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
    pub fn parse(text: &str) -> Result<ConnInfo, String> {
        let text = text.trim();
        let params = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            parse_url(text)?
        } else {
            parse_keyword_value(text)?
        };
        for (key, _) in &params {
            if !KEYWORDS.contains(&key.as_str()) {
                return Err(format!("unknown connection parameter {key:?}"));
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
    pub fn try_resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
        let service = service::lookup(self, env)?;
        let sources = Sources { explicit: self, service: service.as_ref(), env };
        sources.refuse_unsupported()?;
        Ok(sources.resolve())
    }
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
struct Sources<'a> {
    explicit: &'a ConnInfo,
    service: Option<&'a service::Service>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A setting with where it came from, for messages.
struct Setting {
    value: String,
    origin: String,
}

impl Setting {
    /// `key=value` plus its origin, as messages show it (never used for secrets).
    fn describe(&self, key: &str) -> String {
        format!("{key}={}{}", self.value, self.origin)
    }
}

impl Sources<'_> {
    fn setting(&self, key: &str) -> Option<Setting> {
        if let Some(value) = self.explicit.get(key) {
            return Some(Setting { value: value.to_string(), origin: String::new() });
        }
        if let Some(service) = self.service
            && let Some(value) = service.get(key)
        {
            let origin = format!(" (from service {:?} in {})", service.name, service.file.display());
            return Some(Setting { value: value.to_string(), origin });
        }
        let var = env_var(key)?;
        (self.env)(var).filter(|v| !v.is_empty()).map(|value| Setting { value, origin: format!(" (from {var})") })
    }

    fn get(&self, key: &str) -> Option<String> {
        self.setting(key).map(|s| s.value)
    }

    /// Where a connection goes, as `user@host:port/dbname` (no password file read, nothing logged): for
    /// messages.
    fn target(&self) -> String {
        let user = self.get("user").unwrap_or_else(current_os_user);
        let host = self.get("host").or_else(|| self.get("hostaddr")).unwrap_or_else(default_host);
        let port = self.get("port").unwrap_or_else(|| "5432".to_string());
        let dbname = self.get("dbname").unwrap_or_else(|| user.clone());
        format!("{user}@{host}:{port}/{dbname}")
    }

    fn resolve(&self) -> Resolved {
        let pick = |key: &str| self.get(key);
        let user = pick("user").unwrap_or_else(current_os_user);
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

    /// Settings dr's own connection cannot honour. Accepting them silently would let dr's connection and
    /// pg_dump's differ (the exported snapshot must come from the server pg_dump reads), so they are refused.
    fn refuse_unsupported(&self) -> Result<(), String> {
        if let Some(s) = self.setting("gssencmode") {
            match s.value.as_str() {
                // Without GSSAPI credentials libpq's `prefer` goes on without GSS encryption, as dr does.
                "disable" | "prefer" => {}
                "require" => {
                    return Err(format!(
                        "{}: dr's own connection cannot use GSSAPI encryption (it has no Kerberos/GSSAPI \
                         support); use gssencmode=prefer or disable, and sslmode=verify-full for encryption",
                        s.describe("gssencmode")
                    ));
                }
                _ => return Err(format!("{}: not one of disable, prefer, require", s.describe("gssencmode"))),
            }
        }
        for key in ["krbsrvname", "gsslib", "gssdelegation"] {
            let Some(s) = self.setting(key) else { continue };
            // gssdelegation=0 (libpq's default) asks for nothing dr does not already do.
            if key == "gssdelegation" && s.value == "0" {
                continue;
            }
            return Err(format!(
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
                    return Err(format!(
                        "{}: dr's own connection cannot insist that the server asks for a client certificate; \
                         use sslcertmode=allow (the default), which still presents sslcert when the server asks",
                        s.describe("sslcertmode")
                    ));
                }
                _ => return Err(format!("{}: not one of disable, allow, require", s.describe("sslcertmode"))),
            }
        }
        if let Some(s) = self.setting("require_auth") {
            return Err(format!(
                "{}: dr's own connection cannot limit the authentication methods the server may ask for; remove \
                 it, and protect the password with sslmode=verify-full (and channel_binding=require for SCRAM)",
                s.describe("require_auth")
            ));
        }
        if let Some(s) = self.setting("requirepeer") {
            return Err(format!(
                "{}: dr's own connection cannot check which user runs the server behind a unix socket; remove it, \
                 or connect over TCP with sslmode=verify-full",
                s.describe("requirepeer")
            ));
        }
        if let Some(s) = self.setting("load_balance_hosts").filter(|s| s.value == "random") {
            let several = |key: &str| self.get(key).is_some_and(|v| v.contains(','));
            if several("host") || several("hostaddr") {
                return Err(format!(
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
            return Err(format!(
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
fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.dir))
}

fn current_os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// libpq's compiled-in socket directory differs between builds; Debian's is /var/run/postgresql.
fn default_host() -> String {
    ["/var/run/postgresql", "/tmp"].into_iter().find(|dir| Path::new(dir).is_dir()).unwrap_or("localhost").to_string()
}

/// Looks up a password in a `.pgpass` file, with libpq's rules: `host:port:db:user:password`, `*` matches
/// anything, `\` escapes, a socket directory matches `localhost`, and a file readable by others is ignored.
fn pgpass_lookup(path: &Path, target: &Resolved) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "password file has group or world access; libpq ignores it too");
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = if target.host.starts_with('/') { "localhost" } else { target.host.as_str() };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let wanted = [host, target.port.as_str(), target.dbname.as_str(), target.user.as_str()];
        if fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

fn quote_value(value: &str) -> String {
    let plain = !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain { value.to_string() } else { format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'")) }
}

fn parse_keyword_value(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?} (expected key=value pairs or a postgres:// URL)"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or("unterminated quoted value")?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        params.push((key, value));
    }
    Ok(params)
}

fn parse_url(text: &str) -> Result<Vec<(String, String)>, String> {
    let rest = text.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut params = Vec::new();
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            params.push(("user".to_string(), percent_decode(user)?));
        }
        if let Some(password) = password {
            params.push(("password".to_string(), percent_decode(password)?));
        }
    }
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (host, port) = split_host_port(spec)?;
            hosts.push(percent_decode(host)?);
            ports.push(port.unwrap_or_default().to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            params.push(("host".to_string(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            params.push(("port".to_string(), ports.join(",")));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        params.push(("dbname".to_string(), percent_decode(path)?));
    }
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("URL parameter {pair:?} has no value"))?;
        params.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(params)
}

fn split_host_port(spec: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let end = rest.find(']').ok_or("unterminated [IPv6] address in URL")?;
        let port = rest[end + 1..].strip_prefix(':');
        return Ok((&rest[..end], port));
    }
    Ok(match spec.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (spec, None),
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("truncated %-escape in URL")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex} in URL"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URL decodes to invalid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_keywords() {
        let c = ConnInfo::parse("postgres://app:s%40cret@db.example.com:6543/isntgram?sslmode=require").unwrap();
        assert_eq!(c.get("user"), Some("app"));
        assert_eq!(c.get("password"), Some("s@cret"));
        assert_eq!(c.get("host"), Some("db.example.com"));
        assert_eq!(c.get("port"), Some("6543"));
        assert_eq!(c.get("dbname"), Some("isntgram"));
        assert_eq!(c.get("sslmode"), Some("require"));
    }

    #[test]
    fn socket_directories_and_ipv6_hosts_parse() {
        let c = ConnInfo::parse("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
        assert_eq!(c.get("host"), Some("/var/run/postgresql"));
        let c = ConnInfo::parse("postgresql://[::1]:5432/db").unwrap();
        assert_eq!(c.get("host"), Some("::1"));
        let c = ConnInfo::parse("postgresql:///db?host=/tmp").unwrap();
        assert_eq!(c.get("host"), Some("/tmp"));
    }

    #[test]
    fn keyword_value_strings_parse_with_quotes() {
        let c = ConnInfo::parse("host=localhost dbname = 'my db' password='it\\'s'").unwrap();
        assert_eq!(c.get("dbname"), Some("my db"));
        assert_eq!(c.get("password"), Some("it's"));
        assert!(ConnInfo::parse("host").is_err());
        assert!(ConnInfo::parse("hots=x").unwrap_err().contains("hots"));
    }

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
        let error = host("c").unwrap_err();
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
        let error = ConnInfo::parse("service=prod").unwrap().try_resolve(&env).unwrap_err();
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
            let error = ConnInfo::parse(text).unwrap_err();
            assert!(error.starts_with(parameter), "{text}: {error}");
            assert!(error.contains(':'), "{text}: {error}");
        }
        let error = ConnInfo::parse("host=db gssencmode=require").unwrap_err();
        assert!(error.contains("cannot use GSSAPI") && error.contains("gssencmode=prefer"), "{error}");
        let error = ConnInfo::parse("host=db sslkey=pkcs11:token?pin-value=1234").unwrap_err();
        assert!(!error.contains("1234"), "an engine key name can hold a PIN: {error}");
        let error = ConnInfo::parse("host=db krbsrvname=pg").unwrap_err();
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
        let error = ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap_err();
        assert!(error.starts_with("gssencmode=require (from PGGSSENCMODE): "), "{error}");
        let env = env_of(&[("PGKRBSRVNAME", "postgres".to_string())]);
        let error = ConnInfo::parse("host=db").unwrap().try_resolve(&env).unwrap_err();
        assert!(error.starts_with("krbsrvname=postgres (from PGKRBSRVNAME): "), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(&file, "[kerberos]\nhost=db\ngssencmode=require\n").unwrap();
        let env = env_of(&[("PGSERVICEFILE", file.display().to_string())]);
        let error = ConnInfo::parse("service=kerberos").unwrap().try_resolve(&env).unwrap_err();
        let origin = format!("gssencmode=require (from service \"kerberos\" in {}): ", file.display());
        assert!(error.starts_with(&origin), "{error}");
        // An explicit value overrides the service's, as libpq does.
        ConnInfo::parse("service=kerberos gssencmode=prefer").unwrap().try_resolve(&env).unwrap();
        ConnInfo::parse("host=db").unwrap().try_resolve(&env_of(&[("PGGSSENCMODE", "prefer".into())])).unwrap();
    }
}
