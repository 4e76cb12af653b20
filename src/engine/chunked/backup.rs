//! The backup of one chunked files source: walk the tree, reuse what the cache vouches for, cut the rest into
//! chunks, pack the chunks the repository lacks, and store the tree.
//!
//! ```text
//!  walker (this thread) ──files──▶ chunkers (one per CPU) ──new chunks──▶ packer ──▶ store (packs, index)
//!        ◀──────chunk lists───────┘                                        ▲
//!  walker ──tree lines──▶ tree chunker ──new chunks─────────────────────────┘
//! ```
//!
//! The walker hands out files and writes the tree (and the next cache) in walk order, whatever order the
//! chunkers finish in. Every queue is bounded, so memory is a few chunks per thread whatever the tree's size.
//! The index of the packs written is stored every [`INDEX_EVERY`] packs and at the end, before the snapshot's
//! manifest: the packs of a backup that is killed are then reused by the next one instead of uploaded again.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::TreeObject;
use super::origin::{Contents, Origin};
use super::tree_stream::{TreeBytes, tree_bytes};
use crate::chunks::{
    ChunkId, ChunkIndex, ChunkKeys, Chunker, ChunkerError, FrameCompressor, PackRecord, PackWriter, for_each_chunk,
    write_index,
};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::files::{
    CacheHeader, CacheReader, CacheWriter, Change, FileStat, Incomplete, IncompleteFile, ObjectInfo, TreeEntry,
    TreeKind, TreeWriter, WalkItem,
};
use crate::progress::ProgressTask;
use crate::store::Store;

/// Packs between two index objects: a killed backup loses at most this many packs' worth of dedup.
pub const INDEX_EVERY: usize = 64;
/// Files handed to the chunkers and not yet back, per chunker: enough to keep them busy between two results.
const IN_FLIGHT_PER_WORKER: usize = 256;
/// Files go to the chunkers in batches of up to this many (or [`Origin::files_per_job`]), or [`BATCH_BYTES`]: one queue message per file
/// made thread hand-offs an eighth of a backup of small files (measured, 40,000 files of 1-16 KiB).
const BATCH_FILES: usize = 64;
const BATCH_BYTES: u64 = 1 << 20;
/// New chunks go to the packer in batches of at least this many bytes (or what a job of files made): one queue
/// message per chunk was a thread hand-off per small file.
const FRAME_BATCH_BYTES: usize = 256 << 10;
/// Batches queued for the packer: each is about [`FRAME_BATCH_BYTES`], plus at most one chunk (`max_size`).
const FRAME_BATCHES_QUEUED: usize = 4;

/// What one chunked backup run shares between its sources: what the repository holds, and what this run added.
#[derive(Clone)]
pub(crate) struct ChunkedRun {
    pub store: Arc<dyn Store>,
    pub recipients: Arc<Recipients>,
    pub level: i32,
    pub keys: Arc<ChunkKeys>,
    pub index: Arc<ChunkIndex>,
    /// Chunks packed by this run (any source): the index does not know them until the run's index objects are
    /// loaded by the next run.
    pub added: Arc<Mutex<HashSet<ChunkId>>>,
    pub written_by: String,
    /// Packs close at this size: `[chunking] pack_size`, else the repository's.
    pub pack_size: u64,
    pub cache_dir: PathBuf,
    pub repository_id: String,
    pub cancel: CancellationToken,
}

/// What one source's backup produced.
pub(crate) struct ChunkedSummary {
    pub tree: TreeObject,
    /// The tree's JSON lines' chunks are in `tree.chunks`; these are the counts for the manifest.
    pub directories: u64,
    pub symlinks: u64,
    pub skipped: Vec<String>,
    pub incomplete: Vec<IncompleteFile>,
    /// Objects replaced between the listing and their GET (read as they are now), as `key: what happened`.
    pub replaced: Vec<String>,
    /// What the origin says of entries it kept (a bucket's keys that no directory can hold).
    pub warnings: Vec<String>,
    pub external_symlinks: Vec<String>,
    /// Files whose chunks came from the cache, unread.
    pub unchanged_files: u64,
    /// Chunks and compressed bytes this source added to the repository.
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub packs: usize,
    /// The next cache, committed by the caller once the snapshot is: a failed backup keeps the old one.
    pub cache: Option<CacheWriter>,
    /// Files that vanished before they could be read (their later hard links go too).
    vanished: HashSet<Vec<u8>>,
}

/// One chunk on its way to the packer.
struct Frame {
    id: ChunkId,
    data: Vec<u8>,
    plain_len: u32,
}

/// New chunks on their way to the packer, sent in batches.
struct FrameBatch<'a> {
    frames: Vec<Frame>,
    bytes: usize,
    packer: &'a SyncSender<Vec<Frame>>,
}

impl FrameBatch<'_> {
    fn new(packer: &SyncSender<Vec<Frame>>) -> FrameBatch<'_> {
        FrameBatch { frames: Vec::new(), bytes: 0, packer }
    }

    fn push(&mut self, frame: Frame) -> Result<()> {
        self.bytes += frame.data.len();
        self.frames.push(frame);
        if self.bytes >= FRAME_BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Hands what is batched to the packer: at the end of every job, so every chunk a finished file names is
    /// on its way to a pack.
    fn send(&mut self) -> Result<()> {
        if !self.frames.is_empty() {
            self.bytes = 0;
            self.packer.send(std::mem::take(&mut self.frames)).map_err(|_| stopped_error())?;
        }
        Ok(())
    }
}

/// Files for a chunker, each with its place in the walk, its path and (an object's) listed ETag.
struct Job {
    files: Vec<(u64, Vec<u8>, Option<String>)>,
}

/// What a chunker made of a file.
enum Chunked {
    Done {
        chunks: Vec<ChunkId>,
        read: u64,
        size: u64,
        change: Option<Change>,
        read_at: SystemTime,
        /// Boxed: most files have none, and the results travel in queues.
        object: Option<Box<ObjectInfo>>,
        replaced: bool,
    },
    /// It was gone when the chunker opened it.
    Vanished,
}

/// An entry waiting for its turn in the tree.
struct Slot {
    entry: TreeEntry,
    stat: Option<FileStat>,
    state: SlotState,
}

enum SlotState {
    Ready { cache: Option<(Vec<ChunkId>, SystemTime)> },
    Waiting,
    Vanished,
}

impl ChunkedRun {
    /// Backs up one source (on a blocking thread: it reads files and compresses).
    pub fn source(&self, name: &str, origin: &dyn Origin, task: Arc<dyn ProgressTask>) -> Result<ChunkedSummary> {
        let runtime = Handle::current();
        let (frames, frames_in) = sync_channel::<Vec<Frame>>(FRAME_BATCHES_QUEUED);
        // Set when the walk failed: the packer then drops its open pack instead of storing it.
        let failed = CancellationToken::new();
        let packer = {
            let writer = PackWriter::new(self.store.clone(), self.recipients.clone(), self.pack_size, runtime.clone());
            let (run, failed) = (self.clone(), failed.clone());
            std::thread::spawn(move || run.pack_all(frames_in, writer, &runtime, &failed))
        };
        let walked = std::thread::scope(|scope| {
            let (tree_out, tree_in) = tree_bytes();
            let tree_chunker = {
                let frames = frames.clone();
                scope.spawn(move || self.chunk_tree(tree_in, &frames))
            };
            let walked = self.walk(name, origin, &frames, tree_out, scope, &task);
            let tree = tree_chunker
                .join()
                .unwrap_or_else(|_| Err(Error::io("chunking the tree", io::Error::other("the tree chunker panicked"))));
            walked.and_then(|walked| tree.map(|tree| (walked, tree)))
        });
        if walked.is_err() {
            failed.cancel();
        }
        drop(frames);
        let packed =
            packer.join().unwrap_or_else(|_| Err(Error::io("packing chunks", io::Error::other("the packer panicked"))));
        // The packer's own failure (the store's) is the cause; the walker then only saw a closed queue.
        let packs = packed?;
        let (mut summary, (tree_chunks, tree_plain_size)) = walked?;
        summary.tree.chunks = tree_chunks;
        summary.tree.plain_size = tree_plain_size;
        summary.packs = packs.packs;
        summary.new_chunks = packs.chunks;
        summary.new_bytes = packs.stored_bytes;
        Ok(summary)
    }

    /// Walks the tree and writes it, dispatching changed files to chunker threads.
    fn walk<'s>(
        &'s self,
        name: &'s str,
        origin: &'s dyn Origin,
        frames: &SyncSender<Vec<Frame>>,
        tree_out: TreeBytes,
        scope: &'s std::thread::Scope<'s, '_>,
        task: &Arc<dyn ProgressTask>,
    ) -> Result<ChunkedSummary> {
        let workers = origin.readers();
        let files_per_job = origin.files_per_job().unwrap_or(BATCH_FILES);
        let (jobs, jobs_in) = sync_channel::<Job>(workers * IN_FLIGHT_PER_WORKER);
        let jobs_in = Arc::new(Mutex::new(jobs_in));
        let (results_out, results) = std::sync::mpsc::channel::<Vec<(u64, Result<Chunked>)>>();
        for _ in 0..workers {
            let (jobs_in, results_out, frames) = (jobs_in.clone(), results_out.clone(), frames.clone());
            scope.spawn(move || self.chunk_files(origin, &jobs_in, &results_out, &frames));
        }
        drop(results_out);

        let header = self.cache_header(name, &origin.root());
        let cache_path = crate::files::cache_file_path(&self.cache_dir, &self.repository_id, name);
        let mut cache = CacheReader::open(&cache_path, &header);
        let mut next_cache = match CacheWriter::create(&cache_path, &header) {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::warn!(
                    source = name,
                    "cannot write the file cache {}: {e}; the next backup reads every file",
                    cache_path.display()
                );
                None
            }
        };
        let mut tree = TreeWriter::new(tree_out);
        let mut summary = ChunkedSummary::empty();
        let mut queue: VecDeque<Slot> = VecDeque::new();
        let mut first_seq = 0u64;
        let mut in_flight = 0usize;
        let max_in_flight = workers * IN_FLIGHT_PER_WORKER;
        let backup_error = |text: String, e: io::Error| crate::files::backup_error(name, text, e);

        let tree_error = |e: io::Error| backup_error(format!("writing the tree: {e}"), e);
        // Takes one batch of results back; returns how many files it held.
        let take_results =
            |queue: &mut VecDeque<Slot>, first_seq: u64, summary: &mut ChunkedSummary| -> Result<usize> {
                let batch = results.recv().map_err(|_| stopped_error())?;
                let n = batch.len();
                for (seq, result) in batch {
                    settle(queue, first_seq, seq, result?, name, summary);
                }
                Ok(n)
            };
        let mut batch: Vec<(u64, Vec<u8>, Option<String>)> = Vec::new();
        let mut batch_bytes = 0u64;
        for item in origin.entries() {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            // Keep the chunkers fed, but take results back before the window fills (after handing out what
            // waits in the batch: its results are among those waited for).
            if in_flight >= max_in_flight && !batch.is_empty() {
                batch_bytes = 0;
                jobs.send(Job { files: std::mem::take(&mut batch) }).map_err(|_| stopped_error())?;
            }
            while in_flight >= max_in_flight {
                in_flight -= take_results(&mut queue, first_seq, &mut summary)?;
                self.write_ready(&mut queue, &mut first_seq, &mut tree, next_cache.as_mut(), &mut summary, task)
                    .map_err(tree_error)?;
            }
            let seq = first_seq + queue.len() as u64;
            match item? {
                WalkItem::Skipped(reason) => summary.skipped.push(reason),
                WalkItem::Entry(mut entry, stat) => {
                    let state = match (&entry.kind, &stat) {
                        (TreeKind::File, Some(stat)) => {
                            let etag = entry.object.as_ref().map(|o| o.etag.clone());
                            let cached = cache.as_mut().and_then(|c| c.lookup(&entry.path, stat, etag.as_deref()));
                            match cached.filter(|cached| cached.chunks.iter().all(|id| self.is_stored(id))) {
                                Some(cached) => {
                                    summary.unchanged_files += 1;
                                    if cached.object.is_some() {
                                        entry.object = cached.object;
                                    }
                                    SlotState::Ready { cache: Some((cached.chunks, SystemTime::now())) }
                                }
                                None => {
                                    batch.push((seq, entry.path.clone(), etag));
                                    batch_bytes += stat.size;
                                    if batch.len() >= files_per_job || batch_bytes >= BATCH_BYTES {
                                        batch_bytes = 0;
                                        let files = std::mem::take(&mut batch);
                                        jobs.send(Job { files }).map_err(|_| stopped_error())?;
                                    }
                                    in_flight += 1;
                                    SlotState::Waiting
                                }
                            }
                        }
                        (TreeKind::Symlink { target }, _) => {
                            let relative = Path::new(OsStr::from_bytes(&entry.path));
                            let target = Path::new(OsStr::from_bytes(target));
                            let parent = crate::files::parent_of(relative);
                            if let Some(root) = origin.directory()
                                && !crate::files::resolves_inside(root, parent, target)
                            {
                                summary.external_symlinks.push(format!(
                                    "{} -> {}",
                                    relative.display(),
                                    target.display()
                                ));
                            }
                            SlotState::Ready { cache: None }
                        }
                        _ => SlotState::Ready { cache: None },
                    };
                    queue.push_back(Slot { entry, stat, state });
                }
            }
            self.write_ready(&mut queue, &mut first_seq, &mut tree, next_cache.as_mut(), &mut summary, task)
                .map_err(tree_error)?;
        }
        if !batch.is_empty() {
            jobs.send(Job { files: batch }).map_err(|_| stopped_error())?;
        }
        drop(jobs);
        while in_flight > 0 {
            in_flight -= take_results(&mut queue, first_seq, &mut summary)?;
            self.write_ready(&mut queue, &mut first_seq, &mut tree, next_cache.as_mut(), &mut summary, task)
                .map_err(tree_error)?;
        }
        debug_assert!(queue.is_empty(), "every slot is written once its file is back");
        tree.finish().map_err(tree_error)?;
        summary.cache = next_cache;
        Ok(summary)
    }

    /// Writes the entries at the head of the queue whose chunks are known, in walk order.
    fn write_ready(
        &self,
        queue: &mut VecDeque<Slot>,
        first_seq: &mut u64,
        tree: &mut TreeWriter<TreeBytes>,
        cache: Option<&mut CacheWriter>,
        summary: &mut ChunkedSummary,
        task: &Arc<dyn ProgressTask>,
    ) -> io::Result<()> {
        let mut cache = cache;
        while queue.front().is_some_and(|slot| !matches!(slot.state, SlotState::Waiting)) {
            let Some(mut slot) = queue.pop_front() else { break };
            *first_seq += 1;
            match slot.state {
                SlotState::Vanished => {
                    summary.skipped.push(format!("{}: vanished during the backup", display(&slot.entry.path)));
                    summary.vanished.insert(slot.entry.path);
                    continue;
                }
                SlotState::Ready { cache: Some((chunks, read_at)) } => {
                    // From the cache: unread, or from a chunker (then `chunks` is what it read).
                    if slot.entry.incomplete.is_none()
                        && let (Some(cache), Some(stat)) = (cache.as_deref_mut(), &slot.stat)
                    {
                        cache.add(&slot.entry.path, stat, &chunks, slot.entry.object.as_ref(), read_at)?;
                    }
                    slot.entry.chunks = chunks;
                }
                SlotState::Ready { cache: None } | SlotState::Waiting => {}
            }
            // A hard link's data is its first path's: when that vanished, the link has nothing to point to, and a
            // restore would refuse it. It is left out and said, like the first path.
            if let TreeKind::HardLink { link } = &slot.entry.kind
                && summary.vanished.contains(link)
            {
                summary.skipped.push(format!(
                    "{}: its data vanished with {} during the backup (a hard link)",
                    display(&slot.entry.path),
                    display(link)
                ));
                continue;
            }
            summary.count(&slot.entry);
            if matches!(slot.entry.kind, TreeKind::File) {
                task.advance(slot.entry.size);
            }
            tree.write(&slot.entry)?;
        }
        Ok(())
    }

    /// A chunker thread: files in, chunk lists out; new chunks go to the packer.
    fn chunk_files(
        &self,
        origin: &dyn Origin,
        jobs: &Mutex<Receiver<Job>>,
        results: &std::sync::mpsc::Sender<Vec<(u64, Result<Chunked>)>>,
        frames: &SyncSender<Vec<Frame>>,
    ) {
        // Per thread, reused file after file: the chunker's window and zstd's context.
        let mut chunker = Chunker::new(self.keys.chunking.file_sizes(), self.keys.key.gear_seed());
        let mut compressor = match FrameCompressor::new(self.level) {
            Ok(compressor) => compressor,
            Err(e) => {
                let _ = results.send(vec![(u64::MAX, Err(Error::io("starting zstd", e)))]);
                return;
            }
        };
        loop {
            let job = match jobs.lock().map(|jobs| jobs.recv()) {
                Ok(Ok(job)) => job,
                _ => return,
            };
            let mut done = Vec::with_capacity(job.files.len());
            let mut batch = FrameBatch::new(frames);
            for (seq, path, etag) in job.files {
                let result = if self.cancel.is_cancelled() {
                    Err(Error::Cancelled)
                } else {
                    self.chunk_file(origin, &path, etag.as_deref(), &mut batch, &mut chunker, &mut compressor)
                };
                let failed = result.is_err();
                done.push((seq, result));
                if failed {
                    break;
                }
            }
            // The job's files are reported only once their new chunks are on their way.
            if let Err(e) = batch.send() {
                done.push((u64::MAX, Err(e)));
            }
            if results.send(done).is_err() {
                return;
            }
        }
    }

    /// Reads one file through its origin, cutting, naming and (when new) packing its chunks.
    fn chunk_file(
        &self,
        origin: &dyn Origin,
        path: &[u8],
        etag: Option<&str>,
        batch: &mut FrameBatch<'_>,
        chunker: &mut Chunker,
        compressor: &mut FrameCompressor,
    ) -> Result<Chunked> {
        let mut chunks = Vec::new();
        let contents = origin.read(path, etag, &mut |reader, size| {
            // From the start: an origin reads again after a broken download.
            chunks.clear();
            chunker.for_each_chunk(reader, size, |data| {
                let id = self.keys.key.chunk_id(data);
                if self.claim(&id) {
                    let frame = compressor.compress(data).map_err(|e| Error::io("compressing a chunk", e))?;
                    batch.push(Frame { id, data: frame, plain_len: data.len() as u32 })?;
                }
                chunks.push(id);
                Ok(())
            })
        })?;
        Ok(match contents {
            Contents::Vanished => Chunked::Vanished,
            Contents::Read { read, size, change, object, replaced } => {
                let object = object.map(Box::new);
                Chunked::Done { chunks, read, size, change, read_at: SystemTime::now(), object, replaced }
            }
        })
    }

    /// The tree chunker: the tree's JSON lines in, chunk ids out.
    fn chunk_tree(&self, tree: impl Read, frames: &SyncSender<Vec<Frame>>) -> Result<(Vec<ChunkId>, u64)> {
        let mut chunks = Vec::new();
        let mut batch = FrameBatch::new(frames);
        // One zstd context for the whole tree, as each file chunker keeps one.
        let mut compressor = FrameCompressor::new(self.level).map_err(|e| Error::io("starting zstd", e))?;
        let sizes = self.keys.chunking.tree_sizes();
        let plain = for_each_chunk(tree, u64::MAX, sizes, self.keys.key.gear_seed(), |data| {
            let id = self.keys.key.chunk_id(data);
            if self.claim(&id) {
                let frame = compressor.compress(data).map_err(|e| Error::io("compressing the tree", e))?;
                batch.push(Frame { id, data: frame, plain_len: data.len() as u32 })?;
            }
            chunks.push(id);
            Ok(())
        })
        .map_err(|e| match e {
            ChunkerError::Read(e) => Error::io("reading the tree", e),
            ChunkerError::Consumer(e) => e,
        })?;
        batch.send()?;
        Ok((chunks, plain))
    }

    /// Whether the repository holds the chunk, or this run packed it.
    fn is_stored(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.added.lock().is_ok_and(|added| added.contains(id))
    }

    /// True when this caller must pack the chunk: neither the repository nor this run has it yet.
    fn claim(&self, id: &ChunkId) -> bool {
        !self.index.contains(id) && self.added.lock().is_ok_and(|mut added| added.insert(*id))
    }

    fn cache_header(&self, name: &str, root: &str) -> CacheHeader {
        CacheHeader {
            repository: self.repository_id.clone(),
            source: name.to_string(),
            root: root.to_string(),
            key_check: self.keys.key.key_check(),
            chunking: self.keys.chunking.sha256(),
        }
    }
}

/// Records a chunker's result in its slot.
fn settle(
    queue: &mut VecDeque<Slot>,
    first_seq: u64,
    seq: u64,
    chunked: Chunked,
    name: &str,
    summary: &mut ChunkedSummary,
) {
    let Some(slot) = queue.get_mut((seq - first_seq) as usize) else { return };
    match chunked {
        Chunked::Vanished => slot.state = SlotState::Vanished,
        Chunked::Done { chunks, read, size, change, read_at, object, replaced } => {
            slot.entry.size = read;
            if let Some(object) = object {
                slot.entry.object = Some(*object);
            }
            if replaced {
                // The listing's stamp is the older version's: the next backup reads this object again.
                slot.stat = None;
                summary.replaced.push(format!("{}: replaced during the backup", display(&slot.entry.path)));
            }
            if let Some(change) = change {
                let incomplete = Incomplete { change, read, archived: size };
                slot.entry.incomplete = Some(incomplete);
                let file = IncompleteFile {
                    path: String::from_utf8_lossy(&slot.entry.path).into_owned(),
                    path_hex: std::str::from_utf8(&slot.entry.path).is_err().then(|| hex::encode(&slot.entry.path)),
                    incomplete,
                };
                tracing::debug!(source = name, "{}", file.describe());
                summary.incomplete.push(file);
            }
            slot.state = SlotState::Ready { cache: Some((chunks, read_at)) };
        }
    }
}

/// What the packer stored: counts only, for the summary (the packs' chunk lists cost 44 bytes a chunk).
#[derive(Default)]
struct Packed {
    packs: usize,
    chunks: u64,
    stored_bytes: u64,
}

impl Packed {
    fn add(&mut self, packs: &[PackRecord]) {
        self.packs += packs.len();
        self.chunks += packs.iter().map(|p| p.chunks.len() as u64).sum::<u64>();
        self.stored_bytes += packs.iter().map(|p| p.stored_size).sum::<u64>();
    }
}

/// The packer thread: packs every new chunk, stores an index object every [`INDEX_EVERY`] packs and one for the
/// rest at the end. Returns what it stored.
impl ChunkedRun {
    fn pack_all(
        &self,
        frames: Receiver<Vec<Frame>>,
        mut writer: PackWriter,
        runtime: &Handle,
        failed: &CancellationToken,
    ) -> Result<Packed> {
        let mut written = Packed::default();
        let mut unindexed: Vec<PackRecord> = Vec::new();
        let flush = |packs: &mut Vec<PackRecord>, written: &mut Packed| -> Result<()> {
            if packs.is_empty() {
                return Ok(());
            }
            runtime.block_on(write_index(
                self.store.as_ref(),
                &self.recipients,
                &self.keys.key,
                &self.written_by,
                &[],
                packs,
            ))?;
            written.add(packs);
            packs.clear();
            Ok(())
        };
        let mut pack = || -> Result<()> {
            for frame in frames.iter().flatten() {
                writer.add(frame.id, &frame.data, frame.plain_len)?;
                unindexed.extend(writer.take_closed()?);
                if unindexed.len() >= INDEX_EVERY {
                    flush(&mut unindexed, &mut written)?;
                }
            }
            Ok(())
        };
        if let Err(e) = pack() {
            // The store refused a pack (or an index). The packs it took before are whole: indexed, the next
            // backup reuses them instead of uploading them again. Best effort: the refusal is the error.
            unindexed.extend(writer.take_closed().unwrap_or_default());
            drop(writer);
            if let Err(index_error) = flush(&mut unindexed, &mut written) {
                tracing::debug!("the packs stored before the failure are not indexed: {index_error}");
            }
            return Err(e);
        }
        if failed.is_cancelled() {
            // Dropping the writer aborts the open pack. Closed ones are indexed: the next backup reuses them.
            unindexed.extend(writer.take_closed()?);
            drop(writer);
        } else {
            unindexed.extend(writer.finish()?);
        }
        flush(&mut unindexed, &mut written)?;
        Ok(written)
    }
}

impl ChunkedSummary {
    fn empty() -> ChunkedSummary {
        ChunkedSummary {
            tree: TreeObject {
                format: super::TREE_FORMAT,
                chunks: Vec::new(),
                entries: 0,
                files: 0,
                bytes: 0,
                plain_size: 0,
            },
            directories: 0,
            symlinks: 0,
            skipped: Vec::new(),
            incomplete: Vec::new(),
            replaced: Vec::new(),
            warnings: Vec::new(),
            external_symlinks: Vec::new(),
            unchanged_files: 0,
            new_chunks: 0,
            new_bytes: 0,
            packs: 0,
            cache: None,
            vanished: HashSet::new(),
        }
    }

    fn count(&mut self, entry: &TreeEntry) {
        self.tree.entries += 1;
        match &entry.kind {
            TreeKind::File => {
                self.tree.files += 1;
                self.tree.bytes += entry.size;
            }
            // The root is an entry (its metadata is restored) but not one of the source's directories.
            TreeKind::Dir if entry.path.is_empty() => {}
            TreeKind::Dir => self.directories += 1,
            TreeKind::Symlink { .. } => self.symlinks += 1,
            TreeKind::HardLink { .. } => self.tree.files += 1,
        }
    }
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A queue whose other end stopped: that side's own error is the cause, and the caller reports it.
fn stopped_error() -> Error {
    Error::io("chunking files", io::Error::new(io::ErrorKind::BrokenPipe, "a backup thread stopped"))
}
