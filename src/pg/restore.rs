//! What a database restore needs from PostgreSQL: is the target empty, create it if missing, apply globals,
//! and the pg_restore command line.

use std::path::Path;
use std::process::Command;

use tokio_postgres::Client;

use super::connect::{ConnectError, connect, database_error, describe};
use super::conninfo::ConnInfo;
use super::database::{self, PropertiesOutcome};
use super::dump::{quote_ident, quote_literal};
use super::globals::{self, GlobalsOutcome};
use super::tools::Tool;
use crate::error::{Error, Result};
use crate::repo::manifest::{DatabaseProperties, PostgresDetails};

/// The state of a restore target database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Missing,
    Empty,
    /// What is in it, e.g. "12 relations, 1 extension".
    NotEmpty(String),
}

/// A database target of one restore, with the source name for messages.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    pub source_name: String,
    pub conninfo: ConnInfo,
}

impl DatabaseTarget {
    pub fn new(source_name: &str, conninfo: ConnInfo) -> DatabaseTarget {
        DatabaseTarget { source_name: source_name.to_string(), conninfo }
    }

    pub fn redacted(&self) -> String {
        self.conninfo.redacted()
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Database {
            source_name: self.source_name.clone(),
            target: self.redacted(),
            message: message.into(),
            source: None,
        }
    }

    /// The driver's failure on this target, kept as the cause.
    fn failed(&self, e: tokio_postgres::Error) -> Error {
        database_error(&self.source_name, &self.redacted(), e)
    }

    /// The database name libpq will use (explicit, else `PGDATABASE`, else the user name).
    pub fn database_name(&self) -> String {
        self.conninfo.resolve(&|key| std::env::var(key).ok()).dbname
    }

    /// Whether the target exists and holds anything a restore would collide with.
    pub async fn inspect(&self) -> Result<TargetState> {
        let client = match connect(&self.conninfo).await {
            Ok(client) => client,
            Err(ConnectError::MissingDatabase { .. }) => return Ok(TargetState::Missing),
            Err(e) => return Err(e.into_error(&self.source_name, self.redacted())),
        };
        let row = client
            .query_one(
                "SELECT
                   (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'),
                   (SELECT count(*) FROM pg_namespace
                     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname !~ '^pg_'),
                   (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
                   (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'),
                   (SELECT count(*) FROM pg_largeobject_metadata)",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let kinds = ["relations", "schemas", "functions", "extensions", "large objects"];
        let found: Vec<String> = kinds
            .iter()
            .enumerate()
            .filter_map(|(i, kind)| {
                let n: i64 = row.get(i);
                (n > 0).then(|| format!("{n} {kind}"))
            })
            .collect();
        Ok(if found.is_empty() { TargetState::Empty } else { TargetState::NotEmpty(found.join(", ")) })
    }

    /// A connection to the same server's maintenance database (for CREATE DATABASE and globals).
    async fn maintenance(&self) -> Result<Client> {
        let mut last = String::new();
        for dbname in ["postgres", "template1"] {
            match connect(&self.conninfo.with("dbname", dbname)).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.error(format!("cannot reach the server's maintenance database: {last}")))
    }

    /// Creates the target database with the source's encoding and locale when this server has that locale,
    /// else with the server's defaults (and a warning).
    pub async fn create(&self, details: Option<&PostgresDetails>) -> Result<()> {
        let client = self.maintenance().await?;
        let name = quote_ident(&self.database_name());
        let mut attempts = Vec::new();
        if let Some(d) = details {
            attempts.push(format!(
                "CREATE DATABASE {name} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                quote_literal(&d.encoding),
                quote_literal(&d.collate),
                quote_literal(&d.ctype)
            ));
            attempts.push(format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING {}", quote_literal(&d.encoding)));
        }
        attempts.push(format!("CREATE DATABASE {name} TEMPLATE template0"));
        let mut failures = Vec::new();
        for (i, sql) in attempts.iter().enumerate() {
            match client.batch_execute(sql).await {
                Ok(()) => {
                    if i > 0 {
                        tracing::warn!(
                            source = %self.source_name,
                            "created {name} with the server's default locale: {}",
                            failures.join("; ")
                        );
                    }
                    return Ok(());
                }
                Err(e) => failures.push(describe(&e)),
            }
        }
        Err(self.error(format!("cannot create the database: {}", failures.join("; "))))
    }

    /// Drops the target database even while sessions are connected to it: one a failed restore created (a
    /// pg_restore killed or failing may still be connected), or a drill's scratch database (which a user check
    /// or a `--keep`ed psql may still hold open).
    pub async fn drop_database_force(&self) -> Result<()> {
        let client = self.maintenance().await?;
        let name = self.database_name();
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        let sql = if version >= 130_000 {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name))
        } else {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|e| self.failed(e))?;
            format!("DROP DATABASE IF EXISTS {}", quote_ident(&name))
        };
        client.batch_execute(&sql).await.map_err(|e| self.failed(e))
    }

    /// Drops roles (ones a failed restore created), last created first; reports every one that would not go.
    pub async fn drop_roles(&self, roles: &[String]) -> Result<()> {
        let client = self.maintenance().await?;
        let mut failures = Vec::new();
        for role in roles.iter().rev() {
            if let Err(e) = client.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role))).await {
                failures.push(format!("{role}: {}", describe(&e)));
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(self.error(format!("dropping roles: {}", failures.join("; ")))) }
    }

    /// Gives the target database a snapshot's owner, settings and grants (see [`database`]).
    pub async fn apply_properties(&self, properties: &DatabaseProperties) -> Result<PropertiesOutcome> {
        let client = self.maintenance().await?;
        database::apply(&client, &self.database_name(), properties)
            .await
            .map_err(|e| self.error(format!("applying the database's owner, settings and grants: {}", describe(&e))))
    }

    /// The target database's owner (`None` when it does not exist).
    pub async fn owner(&self) -> Result<Option<String>> {
        let client = self.maintenance().await?;
        database::owner_of(&client, &self.database_name()).await.map_err(|e| self.failed(e))
    }

    /// Applies `pg_dumpall --globals-only` output to the target's server.
    pub async fn apply_globals(&self, sql: &str) -> Result<GlobalsOutcome> {
        let client = self.maintenance().await?;
        globals::apply(&client, sql).await.map_err(|e| self.error(format!("applying roles: {}", describe(&e))))
    }
}

/// How pg_restore reads the archive.
#[derive(Debug, Clone, Copy)]
pub enum RestoreInput<'a> {
    /// From stdin, in one transaction: a broken stream rolls everything back.
    Stream,
    /// From stdin, only the entries in a list file (`--use-list`), each on its own as pg_restore -j would.
    Listed { list: &'a Path },
    /// From a staged file, with parallel jobs, and only the entries of a list file if one is given.
    File { path: &'a Path, jobs: usize, list: Option<&'a Path> },
}

/// The pg_restore command for `target`. `clean` drops the archive's objects first (`--force`).
pub fn pg_restore_command(tool: &Tool, target: &DatabaseTarget, input: RestoreInput<'_>, clean: bool) -> Command {
    let mut command = tool.command();
    command
        .arg("--no-password")
        .arg(format!("--dbname={}", target.conninfo.for_child()))
        .envs(target.conninfo.child_env());
    if clean {
        command.arg("--clean").arg("--if-exists");
    }
    match input {
        RestoreInput::Stream => {
            command.arg("--single-transaction").arg("--exit-on-error");
        }
        RestoreInput::Listed { list } => {
            command.arg("--use-list").arg(list);
        }
        RestoreInput::File { path, jobs, list } => {
            if let Some(list) = list {
                command.arg("--use-list").arg(list);
            }
            command.arg(format!("--jobs={jobs}")).arg(path);
        }
    }
    command
}
