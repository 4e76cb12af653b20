//! What a database backup needs from PostgreSQL: an exported snapshot with facts read inside it, and the
//! pg_dump / pg_dumpall command lines.
//!
//! The transaction that exports the snapshot stays open until the dump is done: pg_dump imports the snapshot
//! with `--snapshot`, so the row counts and `now()` recorded here describe exactly the data in the dump.

use std::process::Command;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::connect::{connect, database_error, describe};
use super::conninfo::ConnInfo;
use super::tools::Tool;
use crate::error::{Error, Result};
use crate::repo::manifest::{DatabaseProperties, TableRows};

/// Facts about the database at the exported snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFacts {
    pub consistent_at: DateTime<Utc>,
    pub database: String,
    pub server_version: String,
    pub server_version_num: i32,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
}

impl SnapshotFacts {
    pub fn server_major(&self) -> u32 {
        (self.server_version_num / 10_000) as u32
    }
}

/// An open REPEATABLE READ transaction whose snapshot pg_dump can share.
#[derive(Debug)]
pub struct ExportedSnapshot {
    client: Client,
    source_name: String,
    target: String,
    pub name: String,
    pub facts: SnapshotFacts,
    /// `txid_current_snapshot()` of the exported snapshot, read when the change stream's slot existed before
    /// it was taken: the dump is then a base that the stream carries forward (`crate::stream`).
    pub stream_snapshot: Option<String>,
    /// The schema's digest in the snapshot, read with `stream_snapshot`.
    pub stream_schema: Option<String>,
}

/// Tables whose data pg_dump dumps: ordinary tables outside the system schemas, not belonging to an
/// extension, not temporary. Partitioned parents have no rows of their own; their partitions are listed.
const TABLES_SQL: &str = "
    SELECT n.nspname, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1, 2";

impl ExportedSnapshot {
    /// Connects, opens the transaction, exports its snapshot and reads the instant and server facts. With
    /// `stream_slot` (a slot name and the system identifier of its server), the slot is looked for first, and
    /// when it is there and intact the snapshot's transaction ids are read too (see `stream_snapshot`).
    pub async fn open(
        conninfo: &ConnInfo,
        source_name: &str,
        stream_slot: Option<(&str, &str)>,
    ) -> Result<ExportedSnapshot> {
        let target = conninfo.redacted();
        let client = connect(conninfo).await.map_err(|e| e.into_error(source_name, target.clone()))?;
        // Before the snapshot: only a slot that existed when it was taken holds every change it does not see.
        let slot_intact = match stream_slot {
            Some((slot, system_identifier)) => client
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots
                     WHERE slot_name = $1 AND database = current_database()
                       AND wal_status IS DISTINCT FROM 'lost'
                       AND (SELECT system_identifier::text FROM pg_control_system()) = $2",
                    &[&slot, &system_identifier],
                )
                .await
                .map_err(|e| database_error(source_name, &target, e))?
                .is_some(),
            None => false,
        };
        // Managed services often set these per role; a long dump must not be cut off by them.
        client
            .batch_execute(
                "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET lock_timeout = 0;
                 BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
            )
            .await
            .map_err(|e| database_error(source_name, &target, e))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), now(), current_setting('server_version'),
                        current_setting('server_version_num')::int, current_database(),
                        pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text
                 FROM pg_database d WHERE d.datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| database_error(source_name, &target, e))?;
        let facts = SnapshotFacts {
            consistent_at: row.get(1),
            server_version: row.get(2),
            server_version_num: row.get(3),
            database: row.get(4),
            encoding: row.get(5),
            collate: row.get(6),
            ctype: row.get(7),
        };
        let (stream_snapshot, stream_schema) = if slot_intact {
            let row = client
                .query_one("SELECT txid_current_snapshot()::text", &[])
                .await
                .map_err(|e| database_error(source_name, &target, e))?;
            (Some(row.get(0)), Some(crate::stream::slot::schema_fingerprint(&client, source_name).await?))
        } else {
            (None, None)
        };
        Ok(ExportedSnapshot {
            name: row.get(0),
            client,
            source_name: source_name.to_string(),
            target,
            facts,
            stream_snapshot,
            stream_schema,
        })
    }

    fn error(&self, e: tokio_postgres::Error) -> Error {
        database_error(&self.source_name, &self.target, e)
    }

    /// The on-disk size of the dumped tables (heap and TOAST), at the snapshot: an estimate of the dump's size
    /// for progress display (a dump holds the rows as text, without indexes or dead rows, so it may come out
    /// smaller or larger). `None` when the server will not say.
    pub async fn estimated_dump_size(&self) -> Option<u64> {
        // By oid, never by name: a name cast reads the current catalog, where a table of the snapshot may be gone.
        // pg_table_size of a dropped relation is NULL rather than an error.
        let sql = format!(
            "SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint \
             FROM ({TABLES_SQL}) AS dumped \
             JOIN pg_namespace n ON n.nspname = dumped.nspname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = dumped.relname"
        );
        // Inside a savepoint: an error must not abort the transaction whose snapshot pg_dump is about to import.
        self.client.batch_execute("SAVEPOINT dr_estimate").await.ok()?;
        match self.client.query_one(&sql, &[]).await {
            Ok(row) => {
                let _ = self.client.batch_execute("RELEASE SAVEPOINT dr_estimate").await;
                u64::try_from(row.get::<_, i64>(0)).ok()
            }
            Err(e) => {
                tracing::debug!(source = %self.source_name, "no size estimate: {}", describe(&e));
                let _ = self.client.batch_execute("ROLLBACK TO SAVEPOINT dr_estimate").await;
                None
            }
        }
    }

    /// Exact row count of every dumped table, at the snapshot.
    pub async fn count_rows(&self) -> Result<Vec<TableRows>> {
        let tables = self.client.query(TABLES_SQL, &[]).await.map_err(|e| self.error(e))?;
        let mut counts = Vec::with_capacity(tables.len());
        for row in tables {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let sql = format!("SELECT count(*) FROM {}.{}", quote_ident(&schema), quote_ident(&table));
            let rows: i64 = self.client.query_one(&sql, &[]).await.map_err(|e| self.error(e))?.get(0);
            counts.push(TableRows { schema, table, rows });
        }
        Ok(counts)
    }

    /// Roles of the cluster, without the built-in `pg_*` ones.
    pub async fn roles(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query("SELECT rolname::text FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1", &[])
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Whether the role may read the roles' password hashes (`pg_authid`, a superuser's table): pg_dumpall
    /// dumps them only then, and is run with `--no-role-passwords` otherwise. Asked here, before pg_dumpall
    /// runs, so that nothing depends on the wording of its failure.
    pub async fn can_read_role_passwords(&self) -> Result<bool> {
        let row = self
            .client
            .query_one("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')", &[])
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get(0))
    }

    /// The database's owner, settings and grants, which the archive of a pg_dump without `--create` lacks.
    pub async fn database_properties(&self) -> Result<DatabaseProperties> {
        super::database::read(&self.client).await.map_err(|e| self.error(e))
    }

    /// Ends the transaction (the dump is over; nothing was written, so the outcome does not matter).
    pub async fn release(self) {
        let _ = self.client.batch_execute("COMMIT").await;
    }
}

/// `"name"` with embedded quotes doubled: always safe as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled: an SQL string literal (backslashes are plain characters under
/// standard_conforming_strings, the default since PostgreSQL 9.1).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `pg_dump` of one database, custom format, uncompressed (zstd does it better), in the exported snapshot.
pub fn pg_dump_command(tool: &Tool, conninfo: &ConnInfo, snapshot: &str) -> Command {
    let mut command = tool.command();
    command
        .arg("--format=custom")
        .arg("--compress=0")
        .arg(format!("--snapshot={snapshot}"))
        .arg("--no-password")
        .arg(format!("--dbname={}", conninfo.for_child()))
        .envs(conninfo.child_env());
    command
}

/// `pg_dumpall --globals-only`: roles, memberships, tablespaces.
pub fn pg_dumpall_command(tool: &Tool, conninfo: &ConnInfo, with_passwords: bool) -> Command {
    let mut command = tool.command();
    command
        .arg("--globals-only")
        .arg("--no-password")
        .arg(format!("--dbname={}", conninfo.for_child()))
        .envs(conninfo.child_env());
    if !with_passwords {
        command.arg("--no-role-passwords");
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("UTF8"), "'UTF8'");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("posts"), "\"posts\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn child_commands_never_carry_the_password() {
        let tool = Tool { path: "/usr/bin/pg_dump".into(), major: 15 };
        let conninfo = ConnInfo::parse("postgres://app:hunter2@db:5432/site").unwrap();
        for command in [pg_dump_command(&tool, &conninfo, "00000003-1"), pg_dumpall_command(&tool, &conninfo, true)] {
            let argv: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            assert!(argv.iter().all(|a| !a.contains("hunter2")), "{argv:?}");
            let env: Vec<_> = command.get_envs().collect();
            assert!(env.iter().any(|(k, v)| *k == "PGPASSWORD" && v.is_some_and(|v| v == "hunter2")));
        }
    }
}
