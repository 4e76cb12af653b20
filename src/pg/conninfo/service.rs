//! libpq's connection service file (`pg_service.conf`), read the way libpq reads it, so that `service=NAME`
//! takes dr's own connection to the same server as pg_dump's.
//!
//! libpq's rules: the service name comes from `service=` or `PGSERVICE`. The per-user file is `PGSERVICEFILE`,
//! else `~/.pg_service.conf`; then the system-wide `pg_service.conf` in `PGSYSCONFDIR`, else in libpq's
//! compiled-in directory (`pg_config --sysconfdir`: `/etc/postgresql-common` on Debian and Ubuntu). A file
//! that does not exist is skipped; the first file with a `[NAME]` section is used, and only that section. Lines
//! are `keyword=value` (no spaces around `=`, the value as written up to the end of the line), `#` comments,
//! blank lines; an unknown keyword or a nested `service=` is an error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{ConnInfo, ConnInfoError, KEYWORDS, home_dir};

/// A section's `keyword=value` lines, in file order.
type Params = Vec<(String, String)>;

/// One service's section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Service {
    pub name: String,
    pub file: PathBuf,
    params: Params,
}

impl Service {
    /// The section's value for a keyword (the first one wins, as in libpq).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The service `conninfo` names (or `PGSERVICE`), if any, with its section; an error when it is named but not
/// defined, or a file cannot be read or parsed.
pub(super) fn lookup(
    conninfo: &ConnInfo,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Service>, ConnInfoError> {
    let non_empty = |v: &str| !v.is_empty();
    let Some(name) = conninfo
        .get("service")
        .filter(|v| non_empty(v))
        .map(str::to_string)
        .or_else(|| env("PGSERVICE").filter(|v| non_empty(v)))
    else {
        return Ok(None);
    };
    let user_file = env("PGSERVICEFILE")
        .filter(|v| non_empty(v))
        .map(PathBuf::from)
        .or_else(|| home_dir(env).map(|h| h.join(".pg_service.conf")));
    let system_dir = env("PGSYSCONFDIR").filter(|v| non_empty(v)).map(PathBuf::from).unwrap_or_else(default_sysconfdir);
    let system_file = system_dir.join("pg_service.conf");
    let mut searched = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        searched.push(file.display().to_string());
        if !file.exists() {
            continue;
        }
        if let Some(params) = read_section(&file, &name)? {
            return Ok(Some(Service { name, file, params }));
        }
    }
    Err(ConnInfoError::Service(format!(
        "service {name:?} is not defined in {}: add a [{name}] section to one of them, or point PGSERVICEFILE (a \
         file) or PGSYSCONFDIR (the directory of pg_service.conf) at the one that defines it",
        searched.join(" or ")
    )))
}

/// The `[name]` section of one service file, or `None` when the file has none.
fn read_section(file: &Path, name: &str) -> Result<Option<Params>, ConnInfoError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConnInfoError::Service(format!("cannot read service file {}: {e}", file.display())))?;
    parse_section(&text, name).map_err(|(line, problem)| {
        ConnInfoError::Service(format!("service file {}, line {line}: {problem}", file.display()))
    })
}

fn parse_section(text: &str, name: &str) -> Result<Option<Params>, (usize, String)> {
    let mut section: Option<Params> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if section.is_some() {
                break;
            }
            // libpq compares the name and the `]` after it; anything after the bracket is ignored.
            if rest.strip_prefix(name).is_some_and(|after| after.starts_with(']')) {
                section = Some(Vec::new());
            }
            continue;
        }
        let Some(params) = section.as_mut() else {
            continue;
        };
        let line_number = number + 1;
        let Some((key, value)) = line.split_once('=') else {
            // The line itself is not quoted: it may be a stray password.
            return Err((line_number, "expected keyword=value".to_string()));
        };
        if key == "service" {
            return Err((line_number, "a service cannot name another service (nested service=)".to_string()));
        }
        if !KEYWORDS.contains(&key) {
            return Err((line_number, format!("unknown connection parameter {key:?}")));
        }
        if !params.iter().any(|(k, _)| k == key) {
            params.push((key.to_string(), value.to_string()));
        }
    }
    Ok(section)
}

/// libpq's compiled-in system configuration directory, as `pg_config --sysconfdir` reports it (asked once),
/// else Debian's `/etc/postgresql-common`.
fn default_sysconfdir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        crate::pg::tools::candidates("pg_config")
            .first()
            .and_then(|tool| tool.command().arg("--sysconfdir").output().ok())
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .filter(|dir| dir.starts_with('/'))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/postgresql-common"))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# services\n\
                        [other]\n\
                        host=elsewhere\n\
                        \n\
                        [prod] trailing text is ignored\n\
                        \x20 host=db.example.com\n\
                        port=6543\n\
                        port=1111\n\
                        application_name=with spaces = and equals  \n\
                        [prod2]\n\
                        host=never\n";

    #[test]
    fn a_section_is_read_up_to_the_next_one() {
        let params = parse_section(FILE, "prod").unwrap().unwrap();
        assert_eq!(
            params,
            [("host", "db.example.com"), ("port", "6543"), ("application_name", "with spaces = and equals")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(parse_section(FILE, "missing").unwrap(), None);
        // `[prod]` is not `[prod2]`, nor the other way round.
        assert_eq!(parse_section(FILE, "prod2").unwrap().unwrap(), [("host".to_string(), "never".to_string())]);
        assert_eq!(parse_section(FILE, "pro").unwrap(), None);
    }

    #[test]
    fn bad_lines_in_the_section_are_errors_and_elsewhere_not() {
        let text = "[a]\nhots=x\n[b]\nhost = x\n[c]\nservice=a\n[d]\nhunter2 words\n[e]\nhost=fine\n";
        assert_eq!(parse_section(text, "a").unwrap_err(), (2, "unknown connection parameter \"hots\"".to_string()));
        // libpq does not trim around `=`: "host " is no keyword.
        assert!(parse_section(text, "b").unwrap_err().1.contains("\"host \""));
        assert!(parse_section(text, "c").unwrap_err().1.contains("nested"));
        let (line, problem) = parse_section(text, "d").unwrap_err();
        assert_eq!(line, 8);
        assert_eq!(problem, "expected keyword=value", "the line may be a password: it is not quoted");
        assert!(parse_section(text, "e").unwrap().is_some());
    }
}
