//! The password file (`.pgpass`), read with libpq's rules.

use std::path::Path;

use super::Resolved;

/// Looks up a password in a `.pgpass` file, with libpq's rules: `host:port:db:user:password`, `*` matches
/// anything, `\` escapes, a socket directory matches `localhost`, and a file readable by others is ignored.
pub(super) fn pgpass_lookup(path: &Path, target: &Resolved) -> Option<String> {
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
