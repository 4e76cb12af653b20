//! libpq connection strings: `postgres://user:pass@host:port/db?sslmode=require` or `host=... dbname=...`.
//!
//! Two consumers with different needs:
//! - child tools (pg_dump, pg_restore) get the string back as key=value **without the password** on their
//!   command line, and the password, when the string had one, in `PGPASSWORD` (argv is world-readable in
//!   /proc; a child's environment is not). Their own libpq applies the `PG*` variables and `.pgpass`.
//! - dr's own connection (tokio-postgres) has no libpq, so [`ConnInfo::resolve`] applies the same defaults:
//!   explicit value, then the `PG*` environment variable, then `.pgpass` for the password, then libpq's default.

use std::fmt;
use std::path::{Path, PathBuf};

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
        Ok(ConnInfo { params })
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

    /// Environment for a child tool: the password the command line must not carry. (`sslpassword` has no
    /// environment variable in libpq, so it is not passed on; use an unencrypted client key.)
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        self.get("password").map(|password| ("PGPASSWORD", password.to_string())).into_iter().collect()
    }

    /// `user@host:port/dbname` with whatever is known, never the password; for messages and logs.
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        if let Some(user) = self.get("user") {
            out.push_str(user);
            out.push('@');
        }
        out.push_str(self.get("host").or(self.get("hostaddr")).unwrap_or("localhost"));
        if let Some(port) = self.get("port") {
            out.push(':');
            out.push_str(port);
        }
        out.push('/');
        out.push_str(self.get("dbname").unwrap_or(""));
        out
    }

    /// Fills in what the string left out, as libpq would: environment, `.pgpass`, defaults.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
        let pick =
            |key: &str, var: &str| self.get(key).map(str::to_string).or_else(|| env(var).filter(|v| !v.is_empty()));
        let user = pick("user", "PGUSER").unwrap_or_else(current_os_user);
        let host = pick("host", "PGHOST").unwrap_or_else(default_host);
        let hostaddr = pick("hostaddr", "PGHOSTADDR");
        let port = pick("port", "PGPORT").unwrap_or_else(|| "5432".to_string());
        let dbname = pick("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
        let mut resolved = Resolved {
            host,
            hostaddr,
            port,
            dbname,
            password: pick("password", "PGPASSWORD"),
            sslmode: pick("sslmode", "PGSSLMODE").unwrap_or_else(|| "prefer".to_string()),
            sslrootcert: pick("sslrootcert", "PGSSLROOTCERT"),
            application_name: pick("application_name", "PGAPPNAME"),
            options: pick("options", "PGOPTIONS"),
            connect_timeout: pick("connect_timeout", "PGCONNECT_TIMEOUT"),
            target_session_attrs: pick("target_session_attrs", "PGTARGETSESSIONATTRS"),
            user,
        };
        if resolved.password.is_none() {
            let passfile = pick("passfile", "PGPASSFILE").map(PathBuf::from).or_else(default_passfile);
            if let Some(passfile) = passfile {
                resolved.password = pgpass_lookup(&passfile, &resolved);
            }
        }
        resolved
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
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub connect_timeout: Option<String>,
    pub target_session_attrs: Option<String>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resolved({}@{}:{}/{})", self.user, self.host, self.port, self.dbname)
    }
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

fn default_passfile() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass"))
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
}
