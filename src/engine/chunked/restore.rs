//! Restoring a chunked files source: read its tree out of the packs, create every entry in a staging
//! directory, fetch each pack that holds wanted chunks once (several at a time), write every chunk where its
//! files need it, then give the tree its metadata and move it into place.
//!
//! Every chunk is checked before a byte of it lands: age authenticates the pack, zstd checks the frame, and the
//! chunk's id is recomputed from its plaintext with the repository's dedup key. A chunk that the index does
//! not know, a pack that is missing or damaged, fails the restore before the tree is moved into place; the
//! target is then left as it was.

use std::io::{self, BufReader};
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use tokio::runtime::Handle;

use super::TreeObject;
use super::tree_stream::ChunkStream;
use crate::chunks::{ChunkIndex, ChunkKeys, PackStream, pack_key};
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::files::{FileSlot, Selection, TreeExtraction, TreeKind, TreeReader};
use crate::pipeline;
use crate::progress::{NoProgress, ProgressTask};
use crate::repo::Repository;
use crate::repo::manifest::ObjectEntry;
use crate::run_dir::RunDir;

/// Packs fetched and decrypted at once: each is held whole (up to the pack size) while its chunks are written.
pub const PACKS_IN_FLIGHT: usize = 3;

/// What a chunked restore put back.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TreeRestoreSummary {
    pub entries: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub packs_read: u64,
    pub warnings: Vec<String>,
}

/// One chunk wanted, and one place it goes: 16 bytes per chunk of every restored file, the restore's memory
/// beside the index's (the chunk's id, pack and offset are the index's, found again by its position).
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// The chunk's [`ChunkIndex::position`].
    chunk: u32,
    slot: FileSlot,
    file_offset: u64,
}

pub(crate) struct ChunkedReader {
    pub repo: Repository,
    pub identities: Arc<Identities>,
    pub keys: Arc<ChunkKeys>,
    pub index: Arc<ChunkIndex>,
}

impl ChunkedReader {
    /// Reads a snapshot's tree object: which chunks hold the tree.
    pub async fn tree_object(&self, object: &ObjectEntry) -> Result<TreeObject> {
        let key = object.key.clone();
        pipeline::download(
            self.repo.store(),
            &object.key,
            self.identities.clone(),
            object.expected(),
            Arc::new(NoProgress),
            move |decoder| {
                serde_json::from_reader(decoder)
                    .map_err(|e| Error::ObjectCorrupt { key, reason: format!("not a tree object: {e}") })
            },
        )
        .await
    }

    /// The tree's entries, streamed out of its chunks (on a blocking thread: it waits for packs).
    pub fn tree_entries(&self, tree: &TreeObject, what: &str) -> TreeReader<BufReader<ChunkStream>> {
        let stream = ChunkStream::new(
            self.repo.shared_store(),
            self.identities.clone(),
            self.keys.clone(),
            self.index.clone(),
            tree.chunks.clone(),
            what.to_string(),
            Handle::current(),
        );
        TreeReader::new(BufReader::new(stream), what)
    }

    /// Restores the tree of `object` into `target`, or only `path` below the source root when given.
    #[allow(clippy::too_many_arguments)]
    pub async fn restore(
        &self,
        source_name: &str,
        object: &ObjectEntry,
        target: &Path,
        external_symlinks: bool,
        path: Option<&str>,
        replace: bool,
        run: Option<&RunDir>,
        task: Arc<dyn ProgressTask>,
    ) -> Result<TreeRestoreSummary> {
        let tree = self.tree_object(object).await?;
        let mut extraction = TreeExtraction::prepare(source_name, target, external_symlinks)?;
        if let Some(run) = run {
            run.note_staging(extraction.staging_dir())?;
        }

        // Pass 1: every entry created, every wanted chunk placed in its pack's list. With a path, a first look
        // at the tree finds the hard links whose data lies outside it (files::Selection).
        let filter = path.unwrap_or_default().as_bytes().to_vec();
        let first_look = (!filter.is_empty()).then(|| self.tree_entries(&tree, &object.key));
        let entries = self.tree_entries(&tree, &object.key);
        let index = self.index.clone();
        let tree_key = object.key.clone();
        let (source, shown_path) = (source_name.to_string(), path.map(str::to_string));
        let expected_chunks = tree.files;
        let (extraction_back, needs, mut summary) = tokio::task::spawn_blocking(move || {
            let mut selection = Selection::new(&filter, first_look.into_iter().flatten())?;
            // One list for all packs, sized from the tree's file count (a small file is one chunk): per-pack
            // lists grown by doubling had cost up to twice the memory at 200,000 files.
            let mut needs: Vec<Wanted> = Vec::with_capacity(usize::try_from(expected_chunks).unwrap_or(0));
            let mut summary = TreeRestoreSummary::default();
            for entry in entries {
                let Some(entry) = selection.select(entry?) else { continue };
                let slot = extraction.create(&entry)?;
                summary.entries += 1;
                match entry.kind {
                    TreeKind::Dir if !entry.path.is_empty() => summary.directories += 1,
                    TreeKind::Symlink { .. } => summary.symlinks += 1,
                    _ => {}
                }
                if let (Some(slot), TreeKind::File) = (slot, &entry.kind) {
                    summary.files += 1;
                    let mut file_offset = 0u64;
                    for id in &entry.chunks {
                        let chunk = index.position(id).ok_or_else(|| Error::ObjectCorrupt {
                            key: tree_key.clone(),
                            reason: format!(
                                "file {} needs chunk {id}, which no pack index lists",
                                String::from_utf8_lossy(&entry.path)
                            ),
                        })?;
                        needs.push(Wanted { chunk, slot, file_offset });
                        file_offset += u64::from(index.at(chunk).1.plain_len);
                    }
                    if file_offset != entry.size {
                        return Err(Error::ObjectCorrupt {
                            key: tree_key.clone(),
                            reason: format!(
                                "file {} is {} bytes, its chunks hold {file_offset}",
                                String::from_utf8_lossy(&entry.path),
                                entry.size
                            ),
                        });
                    }
                    summary.bytes += entry.size;
                }
            }
            if let Some(path) = shown_path
                && selection.matched() == 0
            {
                return Err(Error::Usage(format!(
                    "--path {path}: the snapshot's source {source:?} has no such file or directory"
                )));
            }
            Ok::<_, Error>((extraction, needs, summary))
        })
        .await
        .map_err(|e| Error::io("restoring files", io::Error::other(e)))??;
        let extraction = Arc::new(extraction_back);

        // Pass 2: each pack once, a few at a time; its chunks written wherever they go.
        let mut needs = needs;
        let place = |w: &Wanted| {
            let (_, location) = self.index.at(w.chunk);
            (location.pack_number, location.offset, w.file_offset)
        };
        needs.sort_unstable_by_key(place);
        let mut runs: Vec<(u32, std::ops::Range<usize>)> = Vec::new();
        for (i, w) in needs.iter().enumerate() {
            let pack = place(w).0;
            match runs.last_mut() {
                Some((last, range)) if *last == pack => range.end = i + 1,
                _ => runs.push((pack, i..i + 1)),
            }
        }
        let needs = Arc::new(needs);
        summary.packs_read = runs.len() as u64;
        futures::stream::iter(runs.into_iter().map(Ok::<_, Error>))
            .map_ok(|(pack, range)| {
                let (extraction, task, needs) = (extraction.clone(), task.clone(), needs.clone());
                async move { self.fill_from_pack(pack, needs, range, extraction, task).await }
            })
            .try_buffer_unordered(PACKS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;

        let mut extraction = Arc::try_unwrap(extraction)
            .map_err(|_| Error::io("restoring files", io::Error::other("a pack reader still holds the extraction")))?;
        // Pass 3: the metadata, from the tree read once more (rather than every entry held since pass 1), through
        // the same selection so that the entries are the ones created, in the same order.
        let filter = path.unwrap_or_default().as_bytes().to_vec();
        let first_look = (!filter.is_empty()).then(|| self.tree_entries(&tree, &object.key));
        let entries = self.tree_entries(&tree, &object.key);
        let (extraction, warnings) = tokio::task::spawn_blocking(move || {
            let mut selection = Selection::new(&filter, first_look.into_iter().flatten())?;
            let mut failed = None;
            let selected = entries.filter_map(|entry| match entry {
                Ok(entry) => selection.select(entry),
                Err(e) => {
                    failed.get_or_insert(e);
                    None
                }
            });
            let warnings = extraction.finish_metadata(selected)?;
            if let Some(e) = failed {
                return Err(e);
            }
            Ok::<_, Error>((extraction, warnings))
        })
        .await
        .map_err(|e| Error::io("restoring files", io::Error::other(e)))??;
        summary.warnings = warnings;
        summary.warnings.extend(extraction.commit(replace)?);
        Ok(summary)
    }

    /// Streams one pack and writes each wanted chunk, in pack order, at its places (a chunk several files
    /// share is read once).
    async fn fill_from_pack(
        &self,
        pack: u32,
        needs: Arc<Vec<Wanted>>,
        range: std::ops::Range<usize>,
        extraction: Arc<TreeExtraction>,
        task: Arc<dyn ProgressTask>,
    ) -> Result<()> {
        let info = self.index.pack(pack);
        let (key, stored_size) = (pack_key(&info.name()), info.stored_size);
        let reader = self.repo.store().get(&key).await?;
        let stored: Box<dyn std::io::Read + Send> = Box::new(tokio_util::io::SyncIoBridge::new(reader));
        let location = self.repo.location().to_string();
        let (keys, identities, index) = (self.keys.clone(), self.identities.clone(), self.index.clone());
        tokio::task::spawn_blocking(move || {
            let mut stream = PackStream::open(stored, &location, &key, &identities)?;
            let mut current: Option<(u32, Vec<u8>)> = None;
            for w in &needs[range] {
                let (id, at) = index.at(w.chunk);
                if current.as_ref().is_none_or(|(chunk, _)| *chunk != w.chunk) {
                    let data = stream.chunk_at(at.offset, at.stored_len, at.plain_len, &id, &keys.key)?;
                    current = Some((w.chunk, data));
                }
                let Some((_, data)) = &current else { continue };
                extraction.write_at(w.slot, w.file_offset, data)?;
                task.advance(data.len() as u64);
            }
            stream.finish(stored_size)
        })
        .await
        .map_err(|e| Error::io("restoring files", io::Error::other(e)))?
    }
}
