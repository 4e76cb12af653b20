//! Point-in-time replay: the transactions of a stream that a base backup does not hold, applied in commit
//! order to the database restored from that base, up to a time.
//!
//! Each transaction is applied as it was committed (`BEGIN; ...; COMMIT`), with `session_replication_role =
//! replica` as PostgreSQL's own subscribers do: triggers and foreign-key actions already had their effects,
//! which are changes of their own in the stream. Every UPDATE and DELETE must find exactly one row and every
//! INSERT must insert one: anything else means the target is not the state this stream continues, and the
//! replay stops with an error rather than diverge silently.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::capture::{TEXT_SETTINGS, full_xid};
use super::pgoutput::{Message, Relation, Value};
use super::segment::{GenerationRecord, SegmentItem, SegmentReader, SegmentRecord, SequenceValue, lsn_text};
use super::slot::stream_error;
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pg::{database_error, quote_ident, quote_literal};
use crate::progress::NoProgress;
use crate::repo::Repository;
use crate::repo::manifest::StreamBase;

/// Statements sent to the server at once (several small transactions share one round trip).
const BATCH_BYTES: usize = 1 << 20;
/// A head or segment records the server's clock when its position was read; a commit whose timestamp is
/// that close to it may still have been on its way to the WAL, so a target time must be this much earlier.
const COVERAGE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// A snapshot's visibility rule, for transaction ids with their epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl XidSnapshot {
    pub fn parse(text: &str) -> Option<XidSnapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        parts.next().is_none().then_some(XidSnapshot { xmin, xmax, in_progress })
    }

    /// Whether a committed transaction's changes are in a dump taken in this snapshot.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }

    pub fn xmin(&self) -> u64 {
        self.xmin
    }
}

/// What a replay will read.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub source: String,
    pub base: XidSnapshot,
    /// The segments from the first one holding a transaction the base does not see.
    pub segments: Vec<SegmentRecord>,
    /// Replay transactions committed at or before this time; `None`: all of them.
    pub to: Option<DateTime<Utc>>,
    /// How far the stream is known to be complete (the newest segment's or head's clock).
    pub covered_until: DateTime<Utc>,
}

/// Plans the replay of `generation` on top of `base`: checks that the stored stream has no gap and that it
/// reaches `to`.
pub fn plan(
    source: &str,
    generation: &GenerationRecord,
    segments: Vec<SegmentRecord>,
    head: Option<super::segment::HeadRecord>,
    pruned: Option<super::retention::PrunedRecord>,
    base: &StreamBase,
    to: Option<DateTime<Utc>>,
) -> Result<ReplayPlan> {
    let snapshot = XidSnapshot::parse(&base.snapshot).ok_or_else(|| Error::ObjectCorrupt {
        key: format!("the manifest of source {source}"),
        reason: format!("{:?} is not a snapshot", base.snapshot),
    })?;
    let mut start_lsn = generation.start_lsn;
    let mut segments = segments;
    if let Some(pruned) = pruned {
        if pruned.max_xid >= snapshot.xmin() {
            return Err(stream_error(
                source,
                "changes this base needs were pruned from the stored stream",
                "restore this snapshot by its id (no replay), or a newer base; `dr prune` keeps what the snapshots \
                 it keeps need, so this base was not kept by the last prune",
            ));
        }
        // A prune killed after writing its marker may have left some of the segments it meant to delete.
        segments.retain(|s| s.start_lsn >= pruned.end_lsn);
        start_lsn = pruned.end_lsn;
    }
    if let Some((segment, expected)) = super::gaps(start_lsn, &segments).first() {
        return Err(stream_error(
            source,
            format!(
                "the stored stream has a gap: a segment starts at {} where the previous one ended at {}",
                lsn_text(segment.start_lsn),
                lsn_text(*expected)
            ),
            "`dr verify` names what is missing; restore to a time before the gap, or a snapshot taken after it",
        ));
    }
    let covered_until = super::reach(&segments, head.as_ref()).unwrap_or(generation.created_at);
    if let Some(to) = to {
        if to > covered_until - COVERAGE_MARGIN {
            return Err(stream_error(
                source,
                format!(
                    "the change stream is stored up to {} and {} is later",
                    covered_until.to_rfc3339(),
                    to.to_rfc3339()
                ),
                "restore to a time at or before that (or --to latest for everything stored); `dr stream status` \
                 shows how far the stream reaches",
            ));
        }
    }
    let first = segments.iter().position(|s| s.max_xid >= snapshot.xmin()).unwrap_or(segments.len());
    let mut needed: Vec<SegmentRecord> = segments.into_iter().skip(first).collect();
    if let Some(to) = to {
        needed.retain(|s| s.first_commit <= to);
    }
    let reshaped =
        needed.iter().position(|s| !s.schema.is_empty() && !base.schema.is_empty() && s.schema != base.schema);
    if let Some(at) = reshaped {
        let before = if at == 0 { None } else { Some(needed[at - 1].last_commit) };
        return Err(stream_error(
            source,
            format!(
                "the schema changed (DDL) between {} and {}, after this base was taken: its changes cannot be \
                 replayed onto the base's tables",
                before.map_or_else(|| "the base".to_string(), |t| t.to_rfc3339()),
                needed[at].covered_until.to_rfc3339(),
            ),
            "restore to a time before the change, or to a time after the next base backup (dr serve takes one \
             when it sees the change; `dr snapshots` lists them)",
        ));
    }
    Ok(ReplayPlan { source: source.to_string(), base: snapshot, segments: needed, to, covered_until })
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replayed {
    pub segments: usize,
    pub transactions: u64,
    pub changes: u64,
    /// Transactions of the segments read that the base holds already.
    pub in_base: u64,
    /// The newest commit applied.
    pub last_commit: Option<DateTime<Utc>>,
    pub sequences: usize,
}

/// Applies the plan to `client`'s database.
pub async fn replay(
    repo: &Repository,
    identities: Arc<Identities>,
    client: &Client,
    target: &str,
    plan: &ReplayPlan,
) -> Result<Replayed> {
    let source = plan.source.as_str();
    // Asynchronous commit: a replayed transaction does not wait for its WAL to reach the disk (a flush per
    // commit was most of a replay's time); the end of the replay waits for all of it at once (`wait_for_flush`).
    let settings = format!("SET session_replication_role = replica; SET synchronous_commit = off; {TEXT_SETTINGS}");
    client.batch_execute(&settings).await.map_err(|e| {
        stream_error(
            source,
            format!("preparing the replay on {target}: {}", crate::pg::describe(&e)),
            "the restoring role must be allowed to SET session_replication_role (a superuser, rds_superuser on \
                 RDS, postgres on Supabase)",
        )
    })?;
    let mut applier = Applier::new(client, source, target, plan);
    let mut sequences = None;
    for segment in &plan.segments {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<SegmentItem>(256);
        let read = crate::pipeline::download(
            repo.store(),
            &segment.object,
            identities.clone(),
            segment.expected(),
            Arc::new(NoProgress),
            move |reader| {
                let mut segment_reader = SegmentReader::new(reader);
                while let Some(item) =
                    segment_reader.next_item().map_err(|e| Error::io("reading a change segment", e))?
                {
                    if sender.blocking_send(item).is_err() {
                        // The replay failed: the rest of the object is still read and checked.
                        break;
                    }
                }
                Ok(())
            },
        );
        let apply = async {
            let mut stopped = false;
            while let Some(item) = receiver.recv().await {
                match item {
                    // Past the time, only the segment's sequences are still wanted: they were read after every
                    // transaction up to the time had committed, which no earlier segment's were.
                    SegmentItem::Message(_) if stopped => {}
                    SegmentItem::Message(bytes) => {
                        let message = Message::parse(&bytes)
                            .map_err(|e| Error::ObjectCorrupt { key: segment.object.clone(), reason: e.to_string() })?;
                        if applier.message(message, segment.max_xid).await? == Step::Stop {
                            stopped = true;
                        }
                    }
                    SegmentItem::Sequences(values) => sequences = Some(values),
                }
            }
            applier.flush().await?;
            Ok::<bool, Error>(stopped)
        };
        let (read, stopped) = tokio::join!(read, apply);
        let stopped = stopped?;
        read?;
        applier.done.segments += 1;
        if stopped {
            break;
        }
    }
    if let Some(values) = sequences {
        applier.done.sequences = set_sequences(client, source, target, &values).await?;
    }
    wait_for_flush(client, source, target).await?;
    Ok(applier.done)
}

/// Waits until the WAL of every replayed transaction is on disk: with asynchronous commit, the WAL writer
/// flushes it within a few hundred milliseconds, and a restore that says it is done must be.
async fn wait_for_flush(client: &Client, source: &str, target: &str) -> Result<()> {
    let written: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| database_error(source, target, e))?
        .get(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let flushed: bool = client
            .query_one("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", &[&written])
            .await
            .map_err(|e| database_error(source, target, e))?
            .get(0);
        if flushed {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(stream_error(
                source,
                format!("{target} did not flush the replayed changes to disk within a minute"),
                "check the target server's disk and its log",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Go,
    Stop,
}

/// What each statement of a batch must report.
#[derive(Debug, Clone)]
enum Expect {
    Nothing,
    /// One row of this table.
    OneRow(String),
}

struct Applier<'a> {
    client: &'a Client,
    source: &'a str,
    target: &'a str,
    base: &'a XidSnapshot,
    to: Option<DateTime<Utc>>,
    relations: HashMap<u32, Relation>,
    /// Whether the current transaction is applied (the base does not hold it).
    applying: bool,
    sql: String,
    expects: Vec<Expect>,
    done: Replayed,
}

impl<'a> Applier<'a> {
    fn new(client: &'a Client, source: &'a str, target: &'a str, plan: &'a ReplayPlan) -> Applier<'a> {
        Applier {
            client,
            source,
            target,
            base: &plan.base,
            to: plan.to,
            relations: HashMap::new(),
            applying: false,
            sql: String::new(),
            expects: Vec::new(),
            done: Replayed::default(),
        }
    }

    async fn message(&mut self, message: Message, max_xid: u64) -> Result<Step> {
        match message {
            Message::Begin { commit_time, xid, .. } => {
                if self.to.is_some_and(|to| commit_time > to) {
                    return Ok(Step::Stop);
                }
                self.applying = !self.base.sees(full_xid(xid, max_xid + 1));
                if self.applying {
                    self.statement("BEGIN", Expect::Nothing);
                } else {
                    self.done.in_base += 1;
                }
            }
            Message::Commit { commit_time, .. } if self.applying => {
                self.statement("COMMIT", Expect::Nothing);
                self.done.transactions += 1;
                self.done.last_commit = Some(commit_time);
                self.applying = false;
                if self.sql.len() >= BATCH_BYTES {
                    self.flush().await?;
                }
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.id, relation);
            }
            Message::Other(_) => {}
            change if self.applying => {
                let (sql, expect) = self.change_sql(&change)?;
                self.statement(&sql, expect);
                self.done.changes += 1;
                if self.sql.len() >= BATCH_BYTES {
                    self.flush().await?;
                }
            }
            _ => {}
        }
        Ok(Step::Go)
    }

    fn statement(&mut self, sql: &str, expect: Expect) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.expects.push(expect);
    }

    fn relation(&self, id: u32) -> Result<&Relation> {
        self.relations.get(&id).ok_or_else(|| {
            stream_error(
                self.source,
                format!("a change names relation {id}, which the segment never described"),
                "report this as a bug",
            )
        })
    }

    fn change_sql(&mut self, change: &Message) -> Result<(String, Expect)> {
        let (sql, table) = match change {
            Message::Insert { relation, new } => {
                let relation = self.relation(*relation)?;
                let mut columns = Vec::new();
                let mut values = Vec::new();
                for (column, value) in relation.columns.iter().zip(new) {
                    if *value != Value::Unchanged {
                        columns.push(quote_ident(&column.name));
                        values.push(literal(value));
                    }
                }
                let table = qualified(relation);
                (format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), values.join(", ")), table)
            }
            Message::Update { relation, old, new } => {
                let relation = self.relation(*relation)?;
                let sets: Vec<String> = relation
                    .columns
                    .iter()
                    .zip(new)
                    .filter(|(_, v)| **v != Value::Unchanged)
                    .map(|(c, v)| format!("{} = {}", quote_ident(&c.name), literal(v)))
                    .collect();
                let table = qualified(relation);
                let filter = row_filter(relation, old.as_ref().unwrap_or(new), &table);
                (format!("UPDATE {table} SET {} WHERE {filter}", sets.join(", ")), table)
            }
            Message::Delete { relation, old } => {
                let relation = self.relation(*relation)?;
                let table = qualified(relation);
                let filter = row_filter(relation, old, &table);
                (format!("DELETE FROM {table} WHERE {filter}"), table)
            }
            Message::Truncate { relations, cascade, restart_identity } => {
                let names = relations.iter().map(|id| self.relation(*id).map(qualified)).collect::<Result<Vec<_>>>()?;
                let mut sql = format!("TRUNCATE ONLY {}", names.join(", "));
                if *restart_identity {
                    sql.push_str(" RESTART IDENTITY");
                }
                if *cascade {
                    sql.push_str(" CASCADE");
                }
                return Ok((sql, Expect::Nothing));
            }
            _ => unreachable!("only changes reach change_sql"),
        };
        Ok((sql, Expect::OneRow(table)))
    }

    /// Sends the statements gathered so far and checks each one's row count.
    async fn flush(&mut self) -> Result<()> {
        if self.sql.is_empty() {
            return Ok(());
        }
        let messages = self.client.simple_query(&self.sql).await.map_err(|e| {
            stream_error(
                self.source,
                format!("replaying into {}: {}", self.target, crate::pg::describe(&e)),
                "the target must be the database just restored from the base backup; a schema change after the base \
                 cannot be replayed: restore to a time before it, or from a base taken after it",
            )
        });
        let messages = messages?;
        let counts = messages.iter().filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        for (expect, count) in self.expects.iter().zip(counts) {
            if let Expect::OneRow(table) = expect
                && count != 1
            {
                return Err(stream_error(
                    self.source,
                    format!("replay diverged: a change to {table} affected {count} rows of {}, not 1", self.target),
                    "the target is not the state the stream continues (was it changed after the restore?); \
                     restore again into a new database",
                ));
            }
        }
        self.sql.clear();
        self.expects.clear();
        Ok(())
    }
}

/// The WHERE clause that finds the row a change's old values name: its key columns, or, under replica
/// identity FULL, the first row equal in every column sent (compared as text, which every type has).
fn row_filter(relation: &Relation, old: &[Value], table: &str) -> String {
    let keyed = relation.replica_identity != b'f' && relation.columns.iter().any(|c| c.key);
    let conditions: Vec<String> = relation
        .columns
        .iter()
        .zip(old)
        .filter(|(c, v)| (!keyed || c.key) && **v != Value::Unchanged)
        .map(|(c, v)| match v {
            Value::Null => format!("{} IS NULL", quote_ident(&c.name)),
            _ if keyed => format!("{} = {}", quote_ident(&c.name), literal(v)),
            _ => format!("{}::text = {}", quote_ident(&c.name), literal(v)),
        })
        .collect();
    let conditions = if conditions.is_empty() { "true".to_string() } else { conditions.join(" AND ") };
    if keyed { conditions } else { format!("ctid = (SELECT ctid FROM {table} WHERE {conditions} LIMIT 1)") }
}

fn qualified(relation: &Relation) -> String {
    format!("{}.{}", quote_ident(&relation.schema), quote_ident(&relation.name))
}

/// A value as an SQL literal of unknown type: the server converts it to the column's type, as it would the
/// text it came from (standard_conforming_strings is on, so only quotes need doubling).
fn literal(value: &Value) -> String {
    match value {
        Value::Text(text) => quote_literal(text),
        Value::Null | Value::Unchanged => "NULL".to_string(),
    }
}

/// Sets each sequence that exists in the target to the value the last segment read recorded.
async fn set_sequences(client: &Client, source: &str, target: &str, values: &[SequenceValue]) -> Result<usize> {
    let mut sql = String::new();
    for value in values {
        let name = format!("{}.{}", quote_ident(&value.schema), quote_ident(&value.name));
        let _ = writeln!(
            sql,
            "SELECT setval(to_regclass({0}), {1}, true) WHERE to_regclass({0}) IS NOT NULL;",
            quote_literal(&name),
            value.last_value
        );
    }
    if sql.is_empty() {
        return Ok(0);
    }
    client.simple_query(&sql).await.map_err(|e| database_error(source, target, e))?;
    Ok(values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::pgoutput::Column;

    #[test]
    fn a_snapshot_sees_what_committed_before_it() {
        let snapshot = XidSnapshot::parse("100:105:101,103").unwrap();
        assert!(snapshot.sees(99));
        assert!(snapshot.sees(100) && snapshot.sees(102) && snapshot.sees(104));
        assert!(!snapshot.sees(101) && !snapshot.sees(103));
        assert!(!snapshot.sees(105) && !snapshot.sees(200));
        assert_eq!(XidSnapshot::parse("7:7:").unwrap(), XidSnapshot { xmin: 7, xmax: 7, in_progress: vec![] });
        assert!(XidSnapshot::parse("7:x:").is_none());
    }

    fn posts(identity: u8) -> Relation {
        let column = |name: &str, key| Column { name: name.into(), key, type_oid: 23 };
        Relation {
            id: 1,
            schema: "public".into(),
            name: "po\"sts".into(),
            replica_identity: identity,
            columns: vec![column("id", identity != b'f'), column("body", false)],
        }
    }

    #[test]
    fn rows_are_found_by_key_or_by_every_value() {
        let old = vec![Value::Text("7".into()), Value::Text("it's".into())];
        assert_eq!(row_filter(&posts(b'd'), &old, "t"), "\"id\" = '7'");
        assert_eq!(
            row_filter(&posts(b'f'), &[Value::Text("7".into()), Value::Null], "t"),
            "ctid = (SELECT ctid FROM t WHERE \"id\"::text = '7' AND \"body\" IS NULL LIMIT 1)"
        );
        assert_eq!(qualified(&posts(b'd')), "\"public\".\"po\"\"sts\"");
        assert_eq!(literal(&old[1]), "'it''s'");
    }
}
