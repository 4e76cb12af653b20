//! Parsing libpq connection strings: URLs (`postgres://...`) and `keyword=value` words.

use super::ConnInfoError;

fn syntax(message: impl Into<String>) -> ConnInfoError {
    ConnInfoError::Syntax(message.into())
}

pub(super) fn parse_keyword_value(text: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
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
            return Err(syntax(format!("missing \"=\" after {key:?} (expected key=value pairs or a postgres:// URL)")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(|| syntax("unterminated quoted value"))?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(syntax(format!("unterminated quoted value for {key:?}"))),
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

pub(super) fn parse_url(text: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
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
        let (key, value) =
            pair.split_once('=').ok_or_else(|| syntax(format!("URL parameter {pair:?} has no value")))?;
        params.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(params)
}

fn split_host_port(spec: &str) -> Result<(&str, Option<&str>), ConnInfoError> {
    if let Some(rest) = spec.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| syntax("unterminated [IPv6] address in URL"))?;
        let port = rest[end + 1..].strip_prefix(':');
        return Ok((&rest[..end], port));
    }
    Ok(match spec.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (spec, None),
    })
}

fn percent_decode(text: &str) -> Result<String, ConnInfoError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| syntax("truncated %-escape in URL"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| syntax(format!("bad %-escape %{hex} in URL")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| syntax("URL decodes to invalid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::super::ConnInfo;

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
        assert!(ConnInfo::parse("hots=x").unwrap_err().to_string().contains("hots"));
    }
}
