//! Finding PostgreSQL's programs, by major version.
//!
//! pg_dump refuses servers newer than itself, and an embedded scratch server should match the backed-up
//! server's major version. Candidates, in order: `$DR_PG_BINDIR`, Debian's `/usr/lib/postgresql/N/bin`,
//! RHEL's `/usr/pgsql-N/bin`, then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// A program and the PostgreSQL major version it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub path: PathBuf,
    pub major: u32,
}

impl Tool {
    pub fn command(&self) -> Command {
        Command::new(&self.path)
    }

    /// The directory holding this program, where its siblings (pg_ctl next to postgres) live.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// `pg_dump (PostgreSQL) 15.18`, as the program itself reports it.
    pub fn version_line(&self) -> String {
        self.command()
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| format!("{} (PostgreSQL {})", self.path.display(), self.major))
    }
}

/// Which version of a program is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Exactly this major version (a scratch server for a given dump).
    Exact(u32),
    /// This major version if present, else the newest newer one (pg_dump for a server, pg_restore for a dump).
    AtLeast(u32),
    /// The newest available.
    Newest,
}

/// Finds `program` in the candidate directories.
pub fn find(program: &str, want: Want) -> Result<Tool> {
    let candidates = candidates(program);
    let chosen = match want {
        Want::Exact(major) => candidates.iter().find(|t| t.major == major),
        Want::AtLeast(major) => candidates
            .iter()
            .find(|t| t.major == major)
            .or_else(|| candidates.iter().filter(|t| t.major > major).max_by_key(|t| t.major)),
        Want::Newest => candidates.iter().max_by_key(|t| t.major),
    };
    chosen.cloned().ok_or_else(|| Error::ToolNotFound {
        tool: program.to_string(),
        wanted: match want {
            Want::Exact(m) => Some(m.to_string()),
            Want::AtLeast(m) => Some(format!("{m} or newer")),
            Want::Newest => None,
        },
    })
}

/// Every copy of `program` found, in preference order, each with its major version.
pub fn candidates(program: &str) -> Vec<Tool> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("DR_PG_BINDIR") {
        dirs.push(PathBuf::from(dir));
    }
    for pattern_root in ["/usr/lib/postgresql", "/usr"] {
        let Ok(entries) = std::fs::read_dir(pattern_root) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                pattern_root == "/usr/lib/postgresql" || name.starts_with("pgsql-")
            })
            .map(|p| p.join("bin"))
            .collect();
        found.sort();
        found.reverse();
        dirs.extend(found);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut tools: Vec<Tool> = Vec::new();
    for dir in dirs {
        let path = dir.join(program);
        if !is_executable(&path) || tools.iter().any(|t| same_file(&t.path, &path)) {
            continue;
        }
        // Debian's /usr/bin/pg_dump is a Perl wrapper that dispatches to the versioned directories already
        // listed; asking it for its version costs 40-120 ms per lookup and adds no candidate.
        if !tools.is_empty() && is_pg_wrapper(&path) {
            continue;
        }
        if let Some(major) = major_from_dir(&dir).or_else(|| major_from_version_output(&path)) {
            tools.push(Tool { path, major });
        }
    }
    tools
}

fn is_pg_wrapper(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.file_name().is_some_and(|n| n == "pg_wrapper"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `/usr/lib/postgresql/15/bin` → 15, `/usr/pgsql-16/bin` → 16.
fn major_from_dir(dir: &Path) -> Option<u32> {
    let parent = dir.parent()?.file_name()?.to_str()?;
    parent.strip_prefix("pgsql-").unwrap_or(parent).parse().ok()
}

fn major_from_version_output(path: &Path) -> Option<u32> {
    let output = Command::new(path).arg("--version").output().ok()?;
    parse_major(&String::from_utf8_lossy(&output.stdout))
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15.
pub fn parse_major(version_line: &str) -> Option<u32> {
    let after = version_line.split(')').nth(1)?.trim_start();
    let number: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_directories_give_the_major() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(major_from_dir(Path::new("/usr/lib/postgresql/16/bin")), Some(16));
        assert_eq!(major_from_dir(Path::new("/usr/pgsql-13/bin")), Some(13));
        assert_eq!(major_from_dir(Path::new("/usr/bin")), None);
    }

    #[test]
    fn a_missing_version_is_named_in_the_error() {
        let err = find("pg_dump", Want::Exact(4)).unwrap_err();
        assert!(err.to_string().contains("PostgreSQL 4"), "{err}");
        assert!(err.hint().unwrap().contains("postgresql-client-4"));
    }
}
