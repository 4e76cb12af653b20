//! Where a drill restores databases: an embedded throw-away cluster (the default), or a server the user names
//! with `scratch_url`, on which the drill creates `dr_drill_*` databases and drops them again in every outcome.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pg::{ConnInfo, DatabaseTarget, ScratchOptions, ScratchPostgres, connect, describe};
use crate::repo::drill_record::ScratchDescription;

/// Prefix of every database a drill creates on a scratch server.
pub const DATABASE_PREFIX: &str = "dr_drill_";
/// PostgreSQL truncates identifiers to 63 bytes.
const MAX_IDENTIFIER: usize = 63;

#[derive(Debug)]
pub enum DrillScratch {
    /// The cluster, and the database names given out so far.
    Embedded(ScratchPostgres, Vec<String>),
    Server(ScratchServer),
}

#[derive(Debug)]
pub struct ScratchServer {
    /// The URL as given, for its maintenance database and credentials.
    conninfo: ConnInfo,
    /// Databases this drill created, dropped at clean-up.
    databases: Vec<String>,
    /// Roles the restored globals created on the server, dropped at clean-up.
    roles: Vec<String>,
    /// A random tag shared by this drill's database names.
    tag: String,
    /// `server_version` as the server reports it.
    version: String,
}

impl DrillScratch {
    /// Starts an embedded cluster of PostgreSQL `major` (the backed-up server's), under `parent_dir`.
    pub async fn embedded(major: Option<u32>, parent_dir: Option<std::path::PathBuf>) -> Result<DrillScratch> {
        let options = ScratchOptions { major, parent_dir, settings: Vec::new() };
        let server = tokio::task::spawn_blocking(move || ScratchPostgres::start(&options))
            .await
            .map_err(|e| Error::io("starting the scratch PostgreSQL", std::io::Error::other(e)))??;
        Ok(DrillScratch::Embedded(server, Vec::new()))
    }

    /// Uses the server at `url`, after making sure it is not where a configured source lives and that it
    /// answers.
    pub async fn server(url: &str, config: &Config) -> Result<DrillScratch> {
        let conninfo = ConnInfo::parse(url).map_err(|e| Error::Usage(format!("scratch URL: {e}")))?;
        for source in &config.postgres {
            let Ok(production) = ConnInfo::parse(&source.url) else { continue };
            if same_server(&conninfo, &production) {
                return Err(Error::ScratchIsProduction {
                    source_name: source.name.clone(),
                    scratch: conninfo.redacted(),
                });
            }
        }
        let client = connect(&conninfo).await.map_err(|e| scratch_error(&conninfo, e.to_string()))?;
        let row = client
            .query_one(
                "SELECT rolsuper OR rolcreatedb, current_setting('server_version') FROM pg_roles \
                 WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| scratch_error(&conninfo, describe(&e)))?;
        if !row.get::<_, bool>(0) {
            return Err(scratch_error(&conninfo, "the role may not create databases (it needs CREATEDB, and CREATEROLE or superuser for the snapshot's roles)".into()));
        }
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let version = format!("PostgreSQL {}", row.get::<_, String>(1));
        Ok(DrillScratch::Server(ScratchServer { conninfo, databases: Vec::new(), roles: Vec::new(), tag, version }))
    }

    /// Where the restore of database source `source` (database `original` at backup) goes.
    pub fn target(&mut self, source: &str, original: &str) -> ConnInfo {
        match self {
            // The cluster is the drill's own: the original name reads naturally with `--keep`, unless two
            // sources (from two servers) share it.
            DrillScratch::Embedded(server, used) => {
                let mut name = original.to_string();
                if used.contains(&name) || name == "template0" || name == "template1" {
                    name = format!("{DATABASE_PREFIX}{source}");
                    name.truncate(MAX_IDENTIFIER);
                }
                used.push(name.clone());
                server.conninfo(&name)
            }
            DrillScratch::Server(server) => {
                let mut name = format!("{DATABASE_PREFIX}{}_{source}", server.tag);
                name.truncate(MAX_IDENTIFIER);
                server.databases.push(name.clone());
                server.conninfo.with("dbname", &name)
            }
        }
    }

    /// Remembers roles the restore created, so that clean-up drops them from a shared scratch server.
    pub fn created_roles(&mut self, roles: &[String]) {
        if let DrillScratch::Server(server) = self {
            server.roles.extend(roles.iter().cloned());
        }
    }

    pub fn describe(&self) -> ScratchDescription {
        match self {
            DrillScratch::Embedded(server, _) => ScratchDescription {
                kind: "embedded".into(),
                location: server.socket_dir().display().to_string(),
                server_version: Some(format!("PostgreSQL {}", server.major())),
                start_seconds: 0.0,
            },
            DrillScratch::Server(server) => ScratchDescription {
                kind: "server".into(),
                location: server.conninfo.redacted(),
                server_version: Some(server.version.clone()),
                start_seconds: 0.0,
            },
        }
    }

    /// Stops the embedded cluster or drops what the drill created on the server. Every step is attempted;
    /// the first failure is returned.
    pub async fn clean_up(self) -> Result<()> {
        match self {
            DrillScratch::Embedded(server, _) => tokio::task::spawn_blocking(move || server.stop())
                .await
                .map_err(|e| Error::io("stopping the scratch PostgreSQL", std::io::Error::other(e)))?,
            DrillScratch::Server(server) => server.drop_everything().await,
        }
    }

    /// Leaves everything in place for `--keep`; returns how to connect, one line per database.
    pub fn keep(self, databases: &[(String, ConnInfo)]) -> Vec<String> {
        let mut lines: Vec<String> =
            databases.iter().map(|(source, conninfo)| format!("{source}: psql \"{}\"", conninfo.for_child())).collect();
        if let DrillScratch::Embedded(server, _) = self {
            let dir = server.keep();
            lines.push(format!(
                "the scratch cluster keeps running from {}; stop it with: pg_ctl -D {}/data stop, then remove the directory",
                dir.display(),
                dir.display()
            ));
        }
        lines
    }
}

impl ScratchServer {
    async fn drop_everything(self) -> Result<()> {
        let mut failures = Vec::new();
        for name in &self.databases {
            let target = DatabaseTarget::new("drill", self.conninfo.with("dbname", name));
            if let Err(e) = target.drop_database_force().await {
                failures.push(e.to_string());
            }
        }
        if !self.roles.is_empty() {
            let target = DatabaseTarget::new("drill", self.conninfo.clone());
            if let Err(e) = target.drop_roles(&self.roles).await {
                failures.push(e.to_string());
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::Database {
                source_name: "drill".into(),
                target: self.conninfo.redacted(),
                message: format!("cleaning up the scratch server: {}", failures.join("; ")),
                source: None,
            }),
        }
    }
}

fn scratch_error(conninfo: &ConnInfo, message: String) -> Error {
    Error::Database { source_name: "drill scratch".into(), target: conninfo.redacted(), message, source: None }
}

/// Whether two connection strings reach the same server: same port, and the same host, where every local way
/// in (a unix socket directory, `localhost`, a loopback address) counts as the same host. Deliberately
/// cautious: two local clusters on one port cannot exist, and a false alarm costs a flag, not data.
fn same_server(a: &ConnInfo, b: &ConnInfo) -> bool {
    let env = |key: &str| std::env::var(key).ok();
    let endpoints = |conninfo: &ConnInfo| -> Vec<(String, String)> {
        let resolved = conninfo.resolve(&env);
        let hosts: Vec<&str> = resolved.host.split(',').collect();
        let ports: Vec<&str> = resolved.port.split(',').collect();
        hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).map_or("5432", |p| p.trim());
                (normalize_host(host), if port.is_empty() { "5432".into() } else { port.to_string() })
            })
            .collect()
    };
    let theirs = endpoints(b);
    endpoints(a).iter().any(|endpoint| theirs.contains(endpoint))
}

fn normalize_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let local = host.is_empty()
        || host.starts_with('/')
        || host.starts_with('@')
        || host == "localhost"
        || host == "::1"
        || host.starts_with("127.");
    if local { "local".into() } else { host.trim_end_matches('.').to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        same_server(&ConnInfo::parse(a).unwrap(), &ConnInfo::parse(b).unwrap())
    }

    #[test]
    fn local_spellings_of_one_server_are_recognized() {
        assert!(same("postgres://u@localhost:5432/x", "host=/var/run/postgresql port=5432 dbname=y"));
        assert!(same("postgres://u@127.0.0.1/x", "postgres://v@[::1]:5432/z"));
        assert!(same("host=db.example.com port=6432", "postgres://db.example.com:6432/app"));
        assert!(!same("postgres://u@localhost:5433/x", "postgres://u@localhost:5432/x"));
        assert!(!same("postgres://scratch.internal/x", "postgres://db.example.com/x"));
    }
}
