//! Pruning chunked data: the chunks no kept snapshot needs go, packs that hold only such chunks are deleted,
//! and packs whose live share fell below `[retention] repack_below` are repacked (their live frames copied,
//! still compressed, into new packs) so that their dead bytes can go too.
//!
//! Order, so that an interruption anywhere loses nothing (docs/retention.md):
//! 1. plan: read every kept snapshot's tree and mark its chunks (and the tree's own) live; class every pack;
//! 2. repack: write the live chunks of sparse packs into new packs (unindexed until step 3: an interruption
//!    leaves only orphans, swept by a later prune after the grace);
//! 3. write one index object for every surviving pack, superseding every index object read in step 1;
//! 4. delete the superseded index objects, then the dead and repacked packs, then old orphan packs.
//!
//! Nothing live is deleted before the index that says where it now lives is stored. Backups hold a shared
//! lock and prune the exclusive one, so no backup can reuse a chunk of a pack being deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::runtime::Handle;

use super::restore::ChunkedReader;
use crate::chunks::{ChunkId, PackRecord, PackWriter, pack_key, read_pack, write_index};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::files::TreeKind;
use crate::repo::manifest::{Manifest, ObjectRole, StorageFormat};

/// A pack whose live bytes are below this share of its size is repacked (`[retention] repack_below`).
pub const DEFAULT_REPACK_BELOW: f64 = 0.8;
/// Packs smaller than `pack_size / 4` are merged when more than one of them exists, or when a repack writes a
/// new pack anyway.
const SMALL_PACK_SHARE: u64 = 4;

/// What prune does with the repository's packs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackPlan {
    /// Chunks the kept snapshots need.
    pub live_chunks: u64,
    /// Packs left as they are.
    pub packs_kept: u64,
    /// Packs that hold nothing live: deleted.
    pub packs_dead: Vec<String>,
    /// Packs with dead chunks beyond the threshold (or too small): their live chunks are copied, then deleted.
    pub packs_repacked: Vec<String>,
    /// Packs in the store that no index lists, older than the grace (a killed backup's or repack's): deleted.
    pub orphan_packs: Vec<String>,
    /// Packs no index lists, younger than the grace: left for a later prune.
    pub orphans_young: u64,
    /// Bytes of live chunks copied into new packs.
    pub bytes_repacked: u64,
    /// Bytes of the packs deleted.
    pub bytes_freed: u64,
    /// Index objects replaced by the new one.
    pub superseded_indexes: Vec<String>,
}

impl PackPlan {
    pub fn changes_anything(&self) -> bool {
        !self.packs_dead.is_empty() || !self.packs_repacked.is_empty() || !self.orphan_packs.is_empty()
    }
}

/// The plan's inputs: which chunks are live, per pack.
pub(crate) struct PackPlanning {
    pub plan: PackPlan,
    /// Per repacked pack, its record and the live chunks in it.
    live_in_repacked: HashMap<String, (PackRecord, HashSet<ChunkId>)>,
    /// Every surviving pack's record as the index holds it (kept packs only; repacked ones get new records).
    kept_records: Vec<PackRecord>,
}

/// Step 1: marks what the kept snapshots need and classes every pack.
pub(crate) async fn plan(
    reader: &ChunkedReader,
    kept: &[&Manifest],
    repack_below: f64,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<PackPlanning> {
    let mut live: HashSet<ChunkId> = HashSet::new();
    for manifest in kept {
        for source in manifest.sources.iter().filter(|s| s.format == Some(StorageFormat::Chunked)) {
            let Some(object) = source.object(ObjectRole::Tree) else { continue };
            let tree = reader.tree_object(object).await?;
            live.extend(tree.chunks.iter().copied());
            let entries = reader.tree_entries(&tree, &object.key);
            let found = tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                for entry in entries {
                    let entry = entry?;
                    if matches!(entry.kind, TreeKind::File) {
                        found.extend(entry.chunks);
                    }
                }
                Ok::<_, Error>(found)
            })
            .await
            .map_err(|e| Error::io("reading a tree", std::io::Error::other(e)))??;
            live.extend(found);
        }
    }

    let mut planning =
        PackPlanning { plan: PackPlan::default(), live_in_repacked: HashMap::new(), kept_records: Vec::new() };
    let plan = &mut planning.plan;
    plan.live_chunks = live.len() as u64;
    plan.superseded_indexes = reader.index.index_names().to_vec();
    let pack_size = reader.keys.chunking.pack_size;
    let records = reader.index.records();
    let is_small = |record: &PackRecord| record.frames_len() < pack_size / SMALL_PACK_SHARE;
    let mostly_dead = |record: &PackRecord, live_bytes: u64| {
        live_bytes > 0 && (live_bytes as f64) < repack_below * record.frames_len().max(1) as f64
    };
    let live_bytes = |record: &PackRecord| -> u64 {
        record.chunks.iter().filter(|c| live.contains(&c.0)).map(|c| u64::from(c.2)).sum()
    };
    let live_in = |record: &PackRecord| -> (HashSet<ChunkId>, u64) {
        let live_here = record.chunks.iter().map(|c| c.0).filter(|id| live.contains(id)).collect();
        (live_here, live_bytes(record))
    };
    // Small packs merge when there are several, or when a repack writes a new pack anyway: otherwise the pack
    // a repack writes would be one more small pack, merged by the next prune (which would then never be idle).
    // The live bytes alone tell a mostly dead pack, without the set of its live chunks the loop below keeps.
    let small_packs = records.iter().filter(|r| is_small(r)).count();
    let repacking = records.iter().any(|r| mostly_dead(r, live_bytes(r)));
    let merge_small = small_packs > 1 || (small_packs == 1 && repacking);
    for record in &records {
        let (live_here, live_bytes) = live_in(record);
        if live_here.is_empty() {
            plan.packs_dead.push(record.name.clone());
            plan.bytes_freed += record.stored_size;
        } else if mostly_dead(record, live_bytes) || (merge_small && is_small(record)) {
            plan.packs_repacked.push(record.name.clone());
            plan.bytes_repacked += live_bytes;
            plan.bytes_freed += record.stored_size;
            planning.live_in_repacked.insert(record.name.clone(), (record.clone(), live_here));
        } else {
            plan.packs_kept += 1;
            planning.kept_records.push(record.clone());
        }
    }
    // Packs the index does not know: a killed backup's or repack's, harmless until old.
    let indexed: HashSet<String> = records.iter().map(|r| pack_key(&r.name)).collect();
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or_default();
    for meta in reader.repo.store().list(crate::chunks::PACKS_PREFIX).await? {
        if indexed.contains(&meta.key) {
            continue;
        }
        if meta.modified.is_some_and(|m| m < cutoff) {
            plan.bytes_freed += meta.size;
            plan.orphan_packs.push(meta.key);
        } else {
            plan.orphans_young += 1;
        }
    }
    Ok(planning)
}

/// What the pack steps did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PackOutcome {
    pub packs_written: u64,
    pub packs_deleted: u64,
    pub indexes_deleted: u64,
    pub bytes_freed: u64,
}

/// Steps 2 to 4 (see the module documentation).
pub(crate) async fn execute(
    reader: &ChunkedReader,
    planning: PackPlanning,
    recipients: Arc<Recipients>,
    written_by: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<PackOutcome> {
    let PackPlanning { plan, live_in_repacked, kept_records } = planning;
    let mut outcome = PackOutcome::default();
    if !plan.changes_anything() {
        return Ok(outcome);
    }
    let store = reader.repo.shared_store();

    // 2. Repack: live frames copied verbatim into new packs.
    let mut writer =
        PackWriter::new(store.clone(), recipients.clone(), reader.keys.chunking.pack_size, Handle::current());
    let mut new_records = Vec::new();
    for name in &plan.packs_repacked {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let Some((record, live)) = live_in_repacked.get(name) else { continue };
        let contents =
            read_pack(store.as_ref(), name, Some((record.stored_size, &record.sha256)), reader.identities.clone())
                .await?;
        let live = live.clone();
        let key = reader.keys.key.clone();
        let (back, records) = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for entry in contents.entries().iter().filter(|e| live.contains(&e.id)) {
                // Checked before it is copied: a repack must not spread damage into a new pack.
                contents.chunk_at(entry, &key)?;
                writer.add(entry.id, contents.frame(entry)?, entry.plain_len)?;
            }
            records.extend(writer.take_closed()?);
            Ok::<_, Error>((writer, records))
        })
        .await
        .map_err(|e| Error::io("repacking", std::io::Error::other(e)))??;
        writer = back;
        new_records.extend(records);
    }
    new_records.extend(
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| Error::io("repacking", std::io::Error::other(e)))??,
    );
    outcome.packs_written = new_records.len() as u64;

    // 3. One index for everything that survives, replacing every index read.
    let mut surviving = kept_records;
    surviving.extend(new_records);
    write_index(store.as_ref(), &recipients, &reader.keys.key, written_by, &plan.superseded_indexes, &surviving)
        .await?;

    // 4. Only now: the old index objects, then the packs nothing points to any more.
    for name in &plan.superseded_indexes {
        store.delete(&crate::chunks::index_key(name)).await?;
        outcome.indexes_deleted += 1;
    }
    for key in
        plan.packs_dead.iter().chain(&plan.packs_repacked).map(|n| pack_key(n)).chain(plan.orphan_packs.iter().cloned())
    {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        store.delete(&key).await?;
        outcome.packs_deleted += 1;
    }
    outcome.bytes_freed = plan.bytes_freed;
    Ok(outcome)
}
