//! Continuous change capture and point-in-time restore (docs/pitr.md).
//!
//! A `[[postgres]]` source with `continuous = true` has a logical replication slot on its server; a capture
//! (`capture.rs`, run by `dr serve` or `dr stream run`) stores every committed change as encrypted segments
//! (`segment.rs`). A base backup taken while the slot exists records its snapshot; `dr restore --to TIME`
//! restores that base and replays (`replay.rs`) the segments' transactions that the base does not hold.
//!
//! The rule that makes base and changes fit, with no gap and no overlap: a transaction is in the base if and
//! only if it is visible in the base's snapshot (`txid_current_snapshot()` read in the dump's own snapshot);
//! the replay applies exactly the others. The slot was created before the snapshot, so every transaction the
//! snapshot does not see commits after the slot's consistent point and is in the stream.

pub mod capture;
pub mod pgoutput;
pub mod replay;
pub mod retention;
pub mod run;
pub mod segment;
pub mod slot;
pub mod verify;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::store::{self, ObjectMeta};
use segment::{GenerationRecord, HeadRecord, STREAMS_PREFIX, SegmentRecord, generation_prefix, head_key};

pub use segment::lsn_text;

/// Records are small JSON; anything near this is not one of ours.
const RECORD_LIMIT: u64 = 1 << 20;

/// The stream generations of a source, oldest first.
pub async fn generations(repo: &Repository, source: &str) -> Result<Vec<GenerationRecord>> {
    let prefix = format!("{STREAMS_PREFIX}{source}/");
    let mut records = Vec::new();
    for object in repo.store().list(&prefix).await? {
        if object.key.ends_with("/generation.json") && object.key[prefix.len()..].matches('/').count() == 1 {
            records.push(read_json::<GenerationRecord>(repo, &object.key).await?);
        }
    }
    records.sort_by(|a, b| a.generation.cmp(&b.generation));
    Ok(records)
}

/// Segment records read at once: a busy stream has thousands, each its own small GET.
const RECORD_READS: usize = 32;

/// The sources that have streams, from a listing of `streams/`.
pub fn sources_in(listed: &[ObjectMeta]) -> Vec<String> {
    let names = listed.iter().filter_map(|o| o.key.strip_prefix(STREAMS_PREFIX)?.split('/').next());
    names.map(str::to_string).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// The committed segments of a generation, in stream order.
pub async fn segments(repo: &Repository, source: &str, generation: &str) -> Result<Vec<SegmentRecord>> {
    let prefix = format!("{}segments/", generation_prefix(source, generation));
    let keys: Vec<String> =
        repo.store().list(&prefix).await?.into_iter().map(|o| o.key).filter(|k| k.ends_with(".json")).collect();
    let mut records: Vec<SegmentRecord> = futures::stream::iter(keys)
        .map(|key| async move { read_json::<SegmentRecord>(repo, &key).await })
        .buffered(RECORD_READS)
        .try_collect()
        .await?;
    records.sort_by_key(|r| r.start_lsn);
    Ok(records)
}

/// How far a generation's stored stream reaches: its newest segment's clock, or its head's when the head is
/// past that segment (an idle stretch since).
pub fn reach(segments: &[SegmentRecord], head: Option<&HeadRecord>) -> Option<DateTime<Utc>> {
    let newest = segments.last();
    let end = newest.map_or(0, |s| s.end_lsn);
    let head = head.filter(|h| h.lsn >= end).map(|h| h.covered_until);
    newest.map(|s| s.covered_until).max(head)
}

/// Each segment that does not start where the previous one (or `start_lsn`) ended, with where that was.
pub fn gaps(start_lsn: u64, segments: &[SegmentRecord]) -> Vec<(&SegmentRecord, u64)> {
    let ends = std::iter::once(start_lsn).chain(segments.iter().map(|s| s.end_lsn));
    segments.iter().zip(ends).filter(|(s, expected)| s.start_lsn != *expected).collect()
}

/// The generation's head record, if an idle capture wrote one.
pub async fn head(repo: &Repository, source: &str, generation: &str) -> Result<Option<HeadRecord>> {
    match read_json::<HeadRecord>(repo, &head_key(source, generation)).await {
        Ok(head) => Ok(Some(head)),
        Err(Error::ObjectMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How far the start of a generation was pruned, if it was.
pub async fn pruned(repo: &Repository, source: &str, generation: &str) -> Result<Option<retention::PrunedRecord>> {
    match read_json(repo, &retention::pruned_key(source, generation)).await {
        Ok(pruned) => Ok(Some(pruned)),
        Err(Error::ObjectMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(repo: &Repository, key: &str) -> Result<T> {
    let bytes = store::get_bytes(repo.store(), key, RECORD_LIMIT).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::ObjectCorrupt { key: key.to_string(), reason: e.to_string() })
}
