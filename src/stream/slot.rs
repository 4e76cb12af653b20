//! What continuous capture needs on the source server: logical decoding enabled, a publication listing the
//! tables that can be published, and a logical replication slot (pgoutput) that keeps their changes until dr
//! has stored them. Everything here is plain SQL on an ordinary connection (docs/pitr.md says why).

use tokio_postgres::Client;

use super::segment::parse_lsn;
use crate::error::{Error, Result};
use crate::pg::{describe, quote_ident};

/// PostgreSQL 11 added `pg_replication_slot_advance`, which lets dr confirm a position only once it is stored.
const MIN_SERVER_VERSION: i32 = 110_000;

/// Facts about the source server that tie a stream to it.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub database: String,
    pub system_identifier: String,
    pub version_num: i32,
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub confirmed_flush: u64,
    /// `lost` once the server removed WAL the slot still needed (`max_slot_wal_keep_size`): the stream has a
    /// gap from then on.
    pub wal_status: Option<String>,
    /// WAL the server keeps for the slot, in bytes, from its restart point to the current position.
    pub retained_bytes: i64,
}

impl SlotState {
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// Errors of this module name the source; `hint` says what the operator does about it.
pub fn stream_error(source_name: &str, problem: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Stream { source_name: source_name.to_string(), problem: problem.into(), hint: hint.into() }
}

fn sql_error(source_name: &str, doing: &str, e: tokio_postgres::Error) -> Error {
    let hint = match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            "dr's role needs the REPLICATION attribute (on RDS: GRANT rds_replication; on Supabase and Neon the \
             default owner role has it) and must own the tables it publishes (docs/pitr.md, \"Permissions\")"
        }
        _ => "see docs/pitr.md for what continuous capture needs on the server",
    };
    stream_error(source_name, format!("{doing}: {}", describe(&e)), hint)
}

/// Checks that the server can decode logically, and reads the facts that identify it.
pub async fn server_facts(client: &Client, source_name: &str) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, current_database(),
                    (SELECT system_identifier::text FROM pg_control_system())",
            &[],
        )
        .await
        .map_err(|e| sql_error(source_name, "reading the server's settings", e))?;
    let wal_level: String = row.get(0);
    let version_num: i32 = row.get(1);
    if version_num < MIN_SERVER_VERSION {
        return Err(stream_error(
            source_name,
            format!("the server runs PostgreSQL {}, and continuous capture needs 11 or later", version_num / 10_000),
            "upgrade the server, or set continuous = false for this source",
        ));
    }
    if wal_level != "logical" {
        return Err(stream_error(
            source_name,
            format!("the server's wal_level is {wal_level:?}; logical decoding needs \"logical\""),
            "set wal_level = logical and restart the server (RDS: rds.logical_replication = 1 in the parameter \
             group, then reboot; Neon: enable logical replication in the project settings; Supabase: already on)",
        ));
    }
    Ok(ServerFacts { database: row.get(2), system_identifier: row.get(3), version_num })
}

/// The tables a publication can carry, and those it cannot, as quoted `schema.table` names.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub published: Vec<String>,
    /// Ordinary tables without a replica identity: publishing them would make every UPDATE and DELETE on them
    /// fail on the production server, so they are left out and named (docs/pitr.md says what to do).
    pub without_identity: Vec<String>,
}

/// Permanent, ordinary tables (partitions included) outside the system schemas and extensions; unlogged and
/// temporary tables write no WAL to decode.
const TABLES_SQL: &str = "
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
           c.relreplident = 'f'
           OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
           OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                                                  AND i.indisreplident))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence = 'p'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_toast'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1";

pub async fn tables(client: &Client, source_name: &str) -> Result<Tables> {
    let rows = client.query(TABLES_SQL, &[]).await.map_err(|e| sql_error(source_name, "listing the tables", e))?;
    let mut tables = Tables::default();
    for row in rows {
        let name: String = row.get(0);
        if row.get::<_, bool>(1) {
            tables.published.push(name);
        } else {
            tables.without_identity.push(name);
        }
    }
    Ok(tables)
}

/// A digest of the shape of every table a stream could carry (names, columns, types, replica identity):
/// replaying changes is exact only onto the shape they were captured from. Read in a snapshot, it describes that
/// snapshot's schema.
const SCHEMA_SQL: &str = "
    SELECT md5(coalesce(string_agg(
               quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ':' || c.relreplident::text || ':' ||
               a.attnum || ':' || quote_ident(a.attname) || ':' || format_type(a.atttypid, a.atttypmod),
               ',' ORDER BY n.nspname, c.relname, a.attnum), ''))
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind = 'r' AND c.relpersistence = 'p'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'";

pub async fn schema_fingerprint(client: &Client, source_name: &str) -> Result<String> {
    let row = client.query_one(SCHEMA_SQL, &[]).await.map_err(|e| sql_error(source_name, "reading the schema", e))?;
    Ok(row.get(0))
}

/// Makes the publication carry exactly `tables` (after a schema change: new tables, dropped ones).
pub async fn set_publication_tables(client: &Client, source_name: &str, name: &str, tables: &[String]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let sql = format!("ALTER PUBLICATION {} SET TABLE {}", quote_ident(name), tables.join(", "));
    client.batch_execute(&sql).await.map_err(|e| sql_error(source_name, &format!("updating publication {name}"), e))
}

/// Creates the publication of `tables` (a publication listing tables works on Neon, where `FOR ALL TABLES` is
/// refused, and never publishes a table created later without a replica identity).
pub async fn create_publication(client: &Client, source_name: &str, name: &str, tables: &[String]) -> Result<()> {
    let mut sql = format!("CREATE PUBLICATION {}", quote_ident(name));
    if !tables.is_empty() {
        sql.push_str(" FOR TABLE ");
        sql.push_str(&tables.join(", "));
    }
    client.batch_execute(&sql).await.map_err(|e| sql_error(source_name, &format!("creating publication {name}"), e))
}

/// Creates the slot; returns its consistent point. It waits for transactions running now to end.
pub async fn create_slot(client: &Client, source_name: &str, slot: &str) -> Result<u64> {
    let row = client
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .map_err(|e| sql_error(source_name, &format!("creating replication slot {slot}"), e))?;
    lsn_column(source_name, &row.get::<_, String>(0))
}

pub async fn slot_state(client: &Client, source_name: &str, slot: &str) -> Result<Option<SlotState>> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status::text,
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
             FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(source_name, &format!("reading replication slot {slot}"), e))?;
    let Some(row) = row else { return Ok(None) };
    let confirmed: Option<String> = row.get(0);
    Ok(Some(SlotState {
        confirmed_flush: confirmed.as_deref().map(|lsn| lsn_column(source_name, lsn)).transpose()?.unwrap_or(0),
        wal_status: row.get(1),
        retained_bytes: row.get(2),
    }))
}

/// Confirms everything before `lsn`: the server may now remove the WAL and catalog rows kept for it.
pub async fn advance_slot(client: &Client, source_name: &str, slot: &str, lsn: u64) -> Result<()> {
    client
        .query_one("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)::text", &[&slot, &super::lsn_text(lsn)])
        .await
        .map_err(|e| sql_error(source_name, &format!("confirming replication slot {slot}"), e))?;
    Ok(())
}

/// Drops the slot and the publication, each if it exists. A slot in use (a capture still running) is an error.
pub async fn drop_stream_objects(client: &Client, source_name: &str, slot: &str, publication: &str) -> Result<()> {
    client
        .query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(source_name, &format!("dropping replication slot {slot}"), e))?;
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(publication)))
        .await
        .map_err(|e| sql_error(source_name, &format!("dropping publication {publication}"), e))
}

fn lsn_column(source_name: &str, text: &str) -> Result<u64> {
    parse_lsn(text).ok_or_else(|| {
        stream_error(source_name, format!("the server returned {text:?} for an LSN"), "report this as a bug")
    })
}
