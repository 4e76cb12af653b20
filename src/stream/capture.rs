//! Continuous capture of one source: every `interval`, the changes committed since the last poll are read from
//! the slot (`pg_logical_slot_peek_binary_changes`, which does not consume them), stored as one segment, and only
//! then confirmed (`pg_replication_slot_advance`). A capture killed at any point loses nothing: what was not
//! confirmed is read again, and what was stored but not confirmed is confirmed at the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, pin_mut};
use tokio_postgres::Client;

use super::pgoutput::Message;
use super::segment::{
    FORMAT, GenerationRecord, HeadRecord, SegmentRecord, SegmentWriter, SequenceValue, data_key, head_key, lsn_text,
    segment_key,
};
use super::slot::{self, ServerFacts, stream_error};
use super::{generations, head, segments};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::pg::{ConnInfo, connect, database_error};
use crate::pipeline::{self, Compression, EncodeWriter};
use crate::progress::NoProgress;
use crate::repo::Repository;
use crate::repo::snapshot_id::SnapshotId;

/// How often an idle stream records that it is still durable (a head record), so that a point-in-time
/// restore to a quiet moment knows nothing was missed.
const HEAD_INTERVAL: Duration = Duration::from_secs(10);
/// How long a capture (or `dr stream drop`) waits for the capture lock of a capture that is stopping.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Messages handed to the encoding thread at once.
const BATCH_BYTES: usize = 256 << 10;

/// Session settings under which pgoutput's text values read back the same anywhere (the replay sets them too).
pub const TEXT_SETTINGS: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3;
     SET bytea_output = hex; SET TimeZone = 'UTC'; SET standard_conforming_strings = on;";

/// What one poll did.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    /// Commits up to about then are in the stored stream.
    pub covered_until: DateTime<Utc>,
    /// WAL the server keeps for the slot.
    pub slot_retained_bytes: i64,
    /// The segment stored; `None` when nothing was committed since the last poll.
    pub stored: Option<SegmentRecord>,
    /// The schema changed since the last poll: the source needs a new base backup.
    pub schema_changed: bool,
}

/// A running capture: the connection (holding the per-source advisory lock) and where the stream stands.
pub struct Capture {
    repo: Repository,
    recipients: Arc<Recipients>,
    source: String,
    target: String,
    client: Client,
    generation: GenerationRecord,
    /// The end of the newest stored segment: the slot is confirmed up to here.
    end_lsn: u64,
    /// Where the next segment starts: the end of the newest segment (or the generation's start). Segments
    /// chain without gaps; stretches in between with nothing of ours are inside the next segment's range.
    segment_start: u64,
    /// The schema's digest as of the last poll (or the newest segment's, on resume).
    schema: String,
    head_written: Option<Instant>,
    /// The generation was made by this capture: no base backup carries it forward yet.
    pub new_generation: bool,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("source", &self.source).field("generation", &self.generation).finish()
    }
}

impl Capture {
    /// Connects, takes the source's capture lock, and resumes the newest generation if its slot is intact, or
    /// starts a new one.
    pub async fn start(
        repo: Repository,
        recipients: Arc<Recipients>,
        source: &str,
        conninfo: &ConnInfo,
    ) -> Result<Capture> {
        let target = conninfo.redacted();
        let client = connect(conninfo).await.map_err(|e| e.into_error(source, target.clone()))?;
        client
            .batch_execute(&format!(
                "SET application_name = 'dr capture'; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; {TEXT_SETTINGS}"
            ))
            .await
            .map_err(|e| database_error(source, &target, e))?;
        let facts = slot::server_facts(&client, source).await?;
        take_capture_lock(&client, &repo, source, &target).await?;
        let Settled { generation, newest, end_lsn, new_generation } =
            settle_generation(&client, &repo, source, &facts).await?;
        let segment_start = newest.as_ref().map_or(generation.start_lsn, |s| s.end_lsn);
        let schema = match newest.map(|s| s.schema).filter(|s| !s.is_empty()) {
            Some(schema) => schema,
            None => slot::schema_fingerprint(&client, source).await?,
        };
        tracing::info!(
            source, generation = %generation.generation, slot = %generation.slot, from = %lsn_text(end_lsn),
            "change capture started"
        );
        Ok(Capture {
            repo,
            recipients,
            source: source.to_string(),
            target,
            client,
            generation,
            end_lsn,
            segment_start,
            schema,
            head_written: None,
            new_generation,
        })
    }

    pub fn generation(&self) -> &GenerationRecord {
        &self.generation
    }

    /// Reads what was committed since the last poll, stores it as a segment, then confirms it.
    pub async fn poll(&mut self) -> Result<Polled> {
        let row = self
            .client
            .query_one(
                "SELECT pg_current_wal_flush_lsn()::text, clock_timestamp(), txid_snapshot_xmax(txid_current_snapshot())",
                &[],
            )
            .await
            .map_err(|e| database_error(&self.source, &self.target, e))?;
        let upto = super::segment::parse_lsn(&row.get::<_, String>(0)).unwrap_or(0);
        let covered_until: DateTime<Utc> = row.get(1);
        let next_xid = row.get::<_, i64>(2) as u64;
        let slot_retained_bytes = self.check_slot().await?;
        let stored = if upto > self.end_lsn { self.store_segment(upto, covered_until, next_xid).await? } else { None };
        if stored.is_some() {
            slot::advance_slot(&self.client, &self.source, &self.generation.slot, upto).await?;
            self.end_lsn = upto;
            self.segment_start = upto;
            self.head_written = None;
        } else if self.head_written.is_none_or(|at| at.elapsed() >= HEAD_INTERVAL) {
            // Nothing of ours in the WAL since the last poll. The slot moves past it only once a head record
            // says the stored stream reaches that far: a capture that resumes must find the slot confirmed no
            // further than what the repository holds.
            let end = upto.max(self.end_lsn);
            self.write_head(end, covered_until).await?;
            if end > self.end_lsn {
                slot::advance_slot(&self.client, &self.source, &self.generation.slot, end).await?;
                self.end_lsn = end;
            }
        }
        let schema = match &stored {
            Some(segment) => segment.schema.clone(),
            None => slot::schema_fingerprint(&self.client, &self.source).await?,
        };
        let schema_changed = schema != self.schema;
        if schema_changed {
            self.schema_changed(schema).await?;
        }
        Ok(Polled { covered_until, slot_retained_bytes, stored, schema_changed })
    }

    /// Logical decoding carries no DDL: the stream goes on, the publication follows the tables, and the
    /// source needs a new base, since no earlier base can be carried past this point.
    async fn schema_changed(&mut self, schema: String) -> Result<()> {
        tracing::warn!(
            source = %self.source,
            "the schema changed (DDL): point-in-time restores past this point need a base backup taken after it; \
             dr serve takes one now, otherwise run dr backup"
        );
        let tables = slot::tables(&self.client, &self.source).await?;
        if !tables.without_identity.is_empty() {
            tracing::warn!(
                source = %self.source, tables = %tables.without_identity.join(", "),
                "tables without a primary key or replica identity are left out of the change stream"
            );
        }
        slot::set_publication_tables(&self.client, &self.source, &self.generation.publication, &tables.published)
            .await?;
        self.schema = schema;
        Ok(())
    }

    /// Polls every `interval` until `stop` resolves, telling `observe` what each poll did; a failed poll ends
    /// the capture with its error.
    pub async fn run(
        mut self,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
        observe: &(dyn Fn(&str, &Polled) + Send + Sync),
    ) -> Result<()> {
        pin_mut!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = ticks.tick() => {}
            }
            let polled = self.poll().await?;
            if let Some(segment) = &polled.stored {
                tracing::info!(
                    source = %self.source, transactions = segment.transactions, changes = segment.changes,
                    up_to = %lsn_text(segment.end_lsn), "change segment stored"
                );
            }
            observe(&self.source, &polled);
        }
    }

    /// The slot must be there, intact, and confirmed exactly to where the stored stream ends; returns the WAL
    /// the server keeps for it.
    async fn check_slot(&mut self) -> Result<i64> {
        let name = &self.generation.slot;
        let state = slot::slot_state(&self.client, &self.source, name).await?;
        let lost = |why: &str| {
            stream_error(
                &self.source,
                format!("replication slot {name} {why}: changes after {} may be missing", lsn_text(self.end_lsn)),
                "restart the capture: it starts a new stream generation, and the next base backup (dr backup) \
                 carries it; points in time between the gap and that backup cannot be restored exactly",
            )
        };
        match state {
            None => Err(lost("is gone")),
            Some(state) if state.is_lost() => Err(lost("was invalidated by the server (max_slot_wal_keep_size)")),
            Some(state) if state.confirmed_flush > self.end_lsn => Err(lost("was advanced by something else")),
            Some(state) if state.confirmed_flush < self.end_lsn => {
                // The last segment was stored but its confirmation did not happen (killed in between).
                slot::advance_slot(&self.client, &self.source, name, self.end_lsn).await?;
                Ok(state.retained_bytes)
            }
            Some(state) => Ok(state.retained_bytes),
        }
    }

    async fn write_head(&mut self, lsn: u64, covered_until: DateTime<Utc>) -> Result<()> {
        let head = HeadRecord { lsn, covered_until };
        let json = serde_json::to_vec_pretty(&head).map_err(|e| Error::io("encoding a head record", e.into()))?;
        self.repo.store().put(&head_key(&self.source, &self.generation.generation), json.into()).await?;
        self.head_written = Some(Instant::now());
        Ok(())
    }

    /// Streams the changes up to `upto` into a new segment object and commits its record; `None` when no
    /// transaction was committed in between (WAL of other databases, or of unpublished tables).
    async fn store_segment(
        &self,
        upto: u64,
        covered_until: DateTime<Utc>,
        next_xid: u64,
    ) -> Result<Option<SegmentRecord>> {
        let generation = &self.generation;
        let rows = self
            .client
            .query_raw(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL,
                     'proto_version', '1', 'publication_names', $3)",
                [
                    &generation.slot as &(dyn tokio_postgres::types::ToSql + Sync),
                    &lsn_text(upto),
                    &generation.publication,
                ],
            )
            .await
            .map_err(|e| database_error(&self.source, &self.target, e))?;
        pin_mut!(rows);
        let key = data_key(&self.source, &generation.generation, self.segment_start, upto);
        let mut tally = Tally::default();
        let mut writer: Option<SegmentUpload> = None;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| database_error(&self.source, &self.target, e))?;
            let data: Vec<u8> = row.get(0);
            tally.see(&data, next_xid).map_err(|e| stream_error(&self.source, e, "report this as a bug"))?;
            batch_bytes += data.len();
            batch.push(data);
            if batch_bytes >= BATCH_BYTES {
                let upload = match &mut writer {
                    Some(upload) => upload,
                    None => writer.insert(SegmentUpload::begin(&self.repo, &key, &self.recipients).await?),
                };
                upload.send(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        if tally.transactions == 0 {
            return Ok(None);
        }
        // After the changes: a schema change committed before `upto` is seen, and the segment is refused to
        // bases of the old schema.
        let schema = slot::schema_fingerprint(&self.client, &self.source).await?;
        let sequences = read_sequences(&self.client, &self.source, &self.target).await?;
        let mut upload = match writer {
            Some(upload) => upload,
            None => SegmentUpload::begin(&self.repo, &key, &self.recipients).await?,
        };
        upload.send(batch).await?;
        let sealed = upload.finish(sequences).await?;
        let record = SegmentRecord {
            format: FORMAT,
            source: self.source.clone(),
            generation: generation.generation.clone(),
            start_lsn: self.segment_start,
            end_lsn: upto,
            covered_until,
            first_commit: tally.first_commit.unwrap_or(covered_until),
            last_commit: tally.last_commit.unwrap_or(covered_until),
            transactions: tally.transactions,
            changes: tally.changes,
            max_xid: tally.max_xid,
            schema,
            object: key,
            stored_size: sealed.stored_size,
            sha256: sealed.sha256,
            plain_size: sealed.plain_size,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::io("encoding a segment record", e.into()))?;
        self.repo
            .store()
            .put(&segment_key(&self.source, &generation.generation, self.segment_start), json.into())
            .await?;
        Ok(Some(record))
    }
}

/// What a segment holds, counted as its messages pass.
#[derive(Debug, Default)]
struct Tally {
    transactions: u64,
    changes: u64,
    first_commit: Option<DateTime<Utc>>,
    last_commit: Option<DateTime<Utc>>,
    max_xid: u64,
}

impl Tally {
    fn see(&mut self, data: &[u8], next_xid: u64) -> std::result::Result<(), String> {
        match data.first() {
            Some(b'B') => {
                let Message::Begin { commit_time, xid, .. } = Message::parse(data).map_err(|e| e.to_string())? else {
                    unreachable!("a B message parses as a Begin")
                };
                self.first_commit.get_or_insert(commit_time);
                self.last_commit = Some(commit_time);
                self.max_xid = self.max_xid.max(full_xid(xid, next_xid));
            }
            Some(b'C') => self.transactions += 1,
            Some(b'I' | b'U' | b'D' | b'T') => self.changes += 1,
            _ => {}
        }
        Ok(())
    }
}

/// A 32-bit transaction id with its epoch, given the next id to be assigned (which is newer than any
/// transaction decoded before it was read).
pub fn full_xid(xid: u32, next_xid: u64) -> u64 {
    let behind = (next_xid as u32).wrapping_sub(xid) as u64;
    next_xid.saturating_sub(behind)
}

/// One segment object being written: messages go to an encoding thread through a bounded channel.
struct SegmentUpload {
    sender: tokio::sync::mpsc::Sender<Vec<Vec<u8>>>,
    sequences: tokio::sync::oneshot::Sender<Vec<SequenceValue>>,
    encoder: tokio::task::JoinHandle<Result<pipeline::Sealed>>,
    upload: pipeline::UploadHandle,
    key: String,
}

impl SegmentUpload {
    async fn begin(repo: &Repository, key: &str, recipients: &Recipients) -> Result<SegmentUpload> {
        // Segments are small and many: one zstd thread each.
        let compression = Compression { level: 3, threads: 1 };
        let (writer, upload) =
            pipeline::begin_upload(repo.store(), key, recipients, compression, Arc::new(NoProgress)).await?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(4);
        let (sequences, sequences_receiver) = tokio::sync::oneshot::channel::<Vec<SequenceValue>>();
        let location = repo.location().to_string();
        let key_owned = key.to_string();
        let encoder = tokio::task::spawn_blocking(move || {
            let write_error = |e: std::io::Error| crate::store::store_error(&location, "write", &key_owned, e);
            let mut segment = SegmentWriter::new(writer).map_err(write_error)?;
            while let Some(batch) = receiver.blocking_recv() {
                for message in batch {
                    segment.message(&message).map_err(write_error)?;
                }
            }
            let Ok(sequences) = sequences_receiver.blocking_recv() else {
                return Err(Error::io("writing a change segment", std::io::Error::other("abandoned")));
            };
            let writer: EncodeWriter = segment.finish(&sequences).map_err(write_error)?;
            writer.finish().map_err(write_error)
        });
        Ok(SegmentUpload { sender, sequences, encoder, upload, key: key.to_string() })
    }

    async fn send(&mut self, batch: Vec<Vec<u8>>) -> Result<()> {
        if self.sender.send(batch).await.is_err() {
            // The encoder stopped: its own error says why.
            return Err(Error::io(format!("writing {}", self.key), std::io::Error::other("the encoder stopped")));
        }
        Ok(())
    }

    async fn finish(self, sequences: Vec<SequenceValue>) -> Result<pipeline::Sealed> {
        drop(self.sender);
        let _ = self.sequences.send(sequences);
        let produced = self
            .encoder
            .await
            .map_err(|e| Error::io(format!("encoding {}", self.key), std::io::Error::other(e)))
            .and_then(|r| r);
        pipeline::settle(produced, vec![self.upload]).await
    }
}

/// Every sequence's current value: logical decoding does not carry them, so each segment records them after
/// its poll (higher than any value its transactions used, which is all a restore needs).
async fn read_sequences(client: &Client, source: &str, target: &str) -> Result<Vec<SequenceValue>> {
    let rows = client
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
             WHERE last_value IS NOT NULL ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| database_error(source, target, e))?;
    Ok(rows.iter().map(|r| SequenceValue { schema: r.get(0), name: r.get(1), last_value: r.get(2) }).collect())
}

/// One capture per source and repository at a time: a session advisory lock, held by the capture's
/// connection, released by the server when that connection ends however the capture ended.
/// `dr stream drop` takes it too, so that it never drops a slot from under a running capture.
pub async fn take_capture_lock(client: &Client, repo: &Repository, source: &str, target: &str) -> Result<()> {
    let name = format!("dr capture {} {source}", repo.id());
    // A capture that has just stopped (or been killed) may still hold it for a moment: its server process ends
    // a little after its connection closes.
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&name])
            .await
            .map_err(|e| database_error(source, target, e))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(stream_error(
        source,
        "a dr capture of this source into this repository is running (dr serve or dr stream run)",
        "run one capture per source, and stop it before `dr stream drop`",
    ))
}

/// The generation a capture continues, and where its stored stream stands.
struct Settled {
    generation: GenerationRecord,
    /// Its newest segment: the next one starts where it ends, and its schema digest is the last one seen.
    newest: Option<SegmentRecord>,
    /// Where the stored stream ends (a head record may reach past the newest segment).
    end_lsn: u64,
    new_generation: bool,
}

/// Resumes the newest generation if it belongs to this server and its slot is intact; else starts a new one.
async fn settle_generation(client: &Client, repo: &Repository, source: &str, facts: &ServerFacts) -> Result<Settled> {
    if let Some(newest) = generations(repo, source).await?.pop() {
        let same_server = newest.system_identifier == facts.system_identifier && newest.database == facts.database;
        let state = slot::slot_state(client, source, &newest.slot).await?;
        match state {
            Some(state) if same_server && !state.is_lost() => {
                let newest_segment = segments(repo, source, &newest.generation).await?.pop();
                let stored = newest_segment.as_ref().map_or(newest.start_lsn, |s| s.end_lsn);
                let end_lsn = stored.max(head(repo, source, &newest.generation).await?.map_or(0, |h| h.lsn));
                if state.confirmed_flush <= end_lsn {
                    return Ok(Settled { generation: newest, newest: newest_segment, end_lsn, new_generation: false });
                }
                tracing::warn!(source, slot = %newest.slot, "the slot was advanced past the stored stream: starting a new generation");
            }
            Some(_) if same_server => {
                tracing::warn!(source, slot = %newest.slot, "the slot was invalidated (WAL removed): starting a new generation");
            }
            None if same_server => {
                tracing::warn!(source, slot = %newest.slot, "the slot is gone (dropped): starting a new generation");
            }
            _ => {
                tracing::warn!(source, slot = %newest.slot, "the stream's slot is on another server: starting a new generation")
            }
        }
        if same_server {
            slot::drop_stream_objects(client, source, &newest.slot, &newest.publication).await?;
        }
    }
    let generation = new_generation(client, repo, source, facts).await?;
    let end_lsn = generation.start_lsn;
    Ok(Settled { generation, newest: None, end_lsn, new_generation: true })
}

async fn new_generation(
    client: &Client,
    repo: &Repository,
    source: &str,
    facts: &ServerFacts,
) -> Result<GenerationRecord> {
    let id = SnapshotId::new(Utc::now());
    let name = format!("dr_{}_{}", &repo.id()[..8], id.as_str().to_lowercase().replace('-', "_"));
    let tables = slot::tables(client, source).await?;
    if !tables.without_identity.is_empty() {
        tracing::warn!(
            source, tables = %tables.without_identity.join(", "),
            "tables without a primary key or replica identity are left out of the change stream: their changes \
             are only in base backups (docs/pitr.md: ALTER TABLE ... REPLICA IDENTITY FULL)"
        );
    }
    slot::create_publication(client, source, &name, &tables.published).await?;
    let start_lsn = match slot::create_slot(client, source, &name).await {
        Ok(lsn) => lsn,
        Err(e) => {
            let _ = slot::drop_stream_objects(client, source, &name, &name).await;
            return Err(e);
        }
    };
    let record = GenerationRecord {
        format: FORMAT,
        source: source.to_string(),
        generation: id.to_string(),
        slot: name.clone(),
        publication: name,
        database: facts.database.clone(),
        system_identifier: facts.system_identifier.clone(),
        created_at: Utc::now(),
        start_lsn,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::io("encoding a generation record", e.into()))?;
    repo.store().put(&record.key(), json.into()).await?;
    tracing::info!(
        source, generation = %record.generation, slot = %record.slot,
        "new change stream generation: a base backup (dr backup) must be taken before its changes can be restored"
    );
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_get_the_epoch_of_the_next_id() {
        assert_eq!(full_xid(725, 727), 725);
        assert_eq!(full_xid(u32::MAX - 1, (1 << 32) + 5), u32::MAX as u64 - 1);
        assert_eq!(full_xid(3, (1 << 32) + 5), (1 << 32) + 3);
    }
}
