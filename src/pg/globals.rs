//! Restoring `pg_dumpall --globals-only` output: roles, memberships, role settings, tablespaces.
//!
//! A role that already exists on the target is kept as it is: its `CREATE ROLE`, `ALTER ROLE` and
//! `COMMENT ON ROLE` statements are skipped (with a notice), so a restore never resets a live password.
//! Statements that fail (a tablespace whose directory does not exist here, say) are reported, and the rest
//! still run: one odd global must not stand between an operator and the data.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::connect::describe;

/// What applying the globals did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GlobalsOutcome {
    pub created_roles: Vec<String>,
    /// Roles that existed already and were left alone.
    pub kept_roles: Vec<String>,
    pub statements_applied: usize,
    /// `statement: error` for each statement that failed.
    pub failures: Vec<String>,
}

pub async fn apply(client: &Client, sql: &str) -> Result<GlobalsOutcome, tokio_postgres::Error> {
    let existing: BTreeSet<String> =
        client.query("SELECT rolname::text FROM pg_roles", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut outcome = GlobalsOutcome::default();
    let mut kept = BTreeSet::new();
    for statement in split_statements(sql) {
        let role = role_defined_by(&statement);
        if let Some(role) = &role
            && existing.contains(role)
        {
            kept.insert(role.clone());
            continue;
        }
        match client.batch_execute(&statement).await {
            Ok(()) => {
                outcome.statements_applied += 1;
                if let Some(role) = role
                    && starts_with_words(&statement, &["CREATE", "ROLE"])
                {
                    outcome.created_roles.push(role);
                }
            }
            Err(e) => outcome.failures.push(format!("{}: {}", summarize(&statement), describe(&e))),
        }
    }
    outcome.kept_roles = kept.into_iter().collect();
    Ok(outcome)
}

/// The statement's first line, shortened, with any password literal masked.
fn summarize(statement: &str) -> String {
    let first = statement.lines().next().unwrap_or("").trim();
    let masked = match first.find(" PASSWORD '") {
        Some(i) => format!("{} PASSWORD '***'", &first[..i]),
        None => first.to_string(),
    };
    if masked.chars().count() > 120 { format!("{}...", masked.chars().take(117).collect::<String>()) } else { masked }
}

/// The role a `CREATE ROLE`, `ALTER ROLE` or `COMMENT ON ROLE` statement is about.
fn role_defined_by(statement: &str) -> Option<String> {
    let rest = [&["CREATE", "ROLE"][..], &["ALTER", "ROLE"], &["COMMENT", "ON", "ROLE"]]
        .iter()
        .find_map(|words| strip_words(statement, words))?;
    parse_identifier(rest)
}

fn starts_with_words(statement: &str, words: &[&str]) -> bool {
    strip_words(statement, words).is_some()
}

/// Strips leading keywords (case-insensitive, any whitespace between them).
fn strip_words<'a>(text: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = text.trim_start();
    for word in words {
        let head = rest.get(..word.len())?;
        if !head.eq_ignore_ascii_case(word) {
            return None;
        }
        let after = &rest[word.len()..];
        if !after.starts_with(char::is_whitespace) {
            return None;
        }
        rest = after.trim_start();
    }
    Some(rest)
}

/// A leading SQL identifier: `"Quoted ""name"""` or a bare word (already lower case in pg_dumpall output).
fn parse_identifier(text: &str) -> Option<String> {
    let mut chars = text.chars().peekable();
    if chars.peek() == Some(&'"') {
        chars.next();
        let mut name = String::new();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let name: String = chars.take_while(|c| !c.is_whitespace() && *c != ';').collect();
    (!name.is_empty()).then_some(name)
}

/// Splits SQL into statements, honouring quotes, dollar quotes and comments, and dropping psql meta-commands
/// (`\restrict`, `\connect`) and comment-only text.
pub fn split_statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    let mut at_statement_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        if at_statement_start && c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if at_statement_start && c == b'\\' {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            continue;
        }
        let rest = &sql[i..];
        let end = if rest.starts_with("--") {
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n + 1);
            // A comment is not part of any statement.
            i = end;
            continue;
        } else if let Some(body) = rest.strip_prefix("/*") {
            body.find("*/").map_or(bytes.len(), |n| i + 2 + n + 2)
        } else if c == b'\'' {
            let escaped = i > 0 && (bytes[i - 1] == b'E' || bytes[i - 1] == b'e');
            quoted_end(bytes, i, b'\'', escaped)
        } else if c == b'"' {
            quoted_end(bytes, i, b'"', false)
        } else if c == b'$' {
            match dollar_tag(rest) {
                Some(tag) => rest[tag.len()..].find(tag).map_or(bytes.len(), |n| i + tag.len() + n + tag.len()),
                None => i + 1,
            }
        } else if c == b';' {
            let statement = current.trim().to_string();
            if !statement.is_empty() {
                statements.push(format!("{statement};"));
            }
            current.clear();
            at_statement_start = true;
            i += 1;
            continue;
        } else {
            // Advance one whole character, keeping multi-byte UTF-8 intact.
            i + rest.chars().next().map_or(1, char::len_utf8)
        };
        current.push_str(&sql[i..end]);
        at_statement_start = false;
        i = end;
    }
    let tail = current.trim();
    if !tail.is_empty() {
        statements.push(tail.to_string());
    }
    statements
}

/// End (exclusive) of a quoted string or identifier starting at `start`; doubled quotes stay inside.
fn quoted_end(bytes: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if backslash_escapes && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// `$tag$` or `$$` at the start of `text`.
fn dollar_tag(text: &str) -> Option<&str> {
    let end = text[1..].find('$')? + 2;
    let tag = &text[..end];
    tag[1..tag.len() - 1].chars().all(|c| c.is_alphanumeric() || c == '_').then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMPALL: &str = r#"\restrict aBcD123
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b$c';
CREATE ROLE "We""ird; Role";
COMMENT ON ROLE app IS 'it''s; the app -- really';
ALTER ROLE app SET search_path TO $$a;b$$;
GRANT "We""ird; Role" TO app GRANTED BY postgres;
\unrestrict aBcD123
"#;

    #[test]
    fn pg_dumpall_output_splits_into_statements() {
        let statements = split_statements(DUMPALL);
        assert_eq!(statements.len(), 8, "{statements:#?}");
        assert_eq!(statements[0], "SET default_transaction_read_only = off;");
        assert!(statements[3].ends_with("'SCRAM-SHA-256$4096:a;b$c';"));
        assert_eq!(statements[5], "COMMENT ON ROLE app IS 'it''s; the app -- really';");
        assert_eq!(statements[6], "ALTER ROLE app SET search_path TO $$a;b$$;");
        assert!(statements.iter().all(|s| !s.contains("restrict")));
    }

    #[test]
    fn role_statements_name_their_role() {
        let roles: Vec<Option<String>> = split_statements(DUMPALL).iter().map(|s| role_defined_by(s)).collect();
        assert_eq!(roles[2].as_deref(), Some("app"));
        assert_eq!(roles[3].as_deref(), Some("app"));
        assert_eq!(roles[4].as_deref(), Some("We\"ird; Role"));
        assert_eq!(roles[5].as_deref(), Some("app"));
        assert_eq!(roles[7], None, "GRANT is about membership, not a role definition");
    }

    #[test]
    fn summaries_mask_passwords() {
        let s = summarize("ALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$secret';");
        assert_eq!(s, "ALTER ROLE app WITH LOGIN PASSWORD '***'");
    }
}
