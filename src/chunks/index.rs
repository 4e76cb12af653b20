//! The index: which chunk is where. Read by backup (what is stored already), restore, verify and prune.
//!
//! ```text
//! index/<32 random hex>.jsonl.zst.age    age (binary) to the recipients AND the index recipient, of zstd of:
//!   {"format":1,"written_by":"backup <snapshot id>","supersedes":["<index name>",…]}
//!   {"pack":"<name>","stored_size":N,"sha256":"<hex>","chunks":[["<64 hex id>",offset,stored_len,plain_len],…]}
//!   … one line per pack
//! ```
//!
//! Index objects are immutable and named at random, so concurrent writers never collide; a backup writes one
//! every 64 packs and at its end, before its manifest, so a killed backup's indexed packs are reused by the
//! next. Prune writes a new object and names the ones it replaces in `supersedes`; readers drop those, so the
//! old objects can be deleted at leisure (a crash in between loses nothing).
//!
//! Encrypted to the index recipient too (derived from the dedup key) because the backing-up host must read it
//! and has no identity: the index reveals chunk ids and sizes to holders of the dedup key, never data.
//!
//! In memory: a `Vec` of 48-byte entries sorted by id (binary search) and one 56-byte record per pack, so
//! 48 bytes per chunk plus 56 per pack (with 1 MiB chunks, 48 MB per 1 TB of unique data), instead of the
//! hundreds of bytes per chunk of a hash map of strings.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::keys::{ChunkId, DedupKey};
use super::pack::{PackRecord, is_pack_name};
use crate::crypto::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::pipeline::{self, Compression};
use crate::progress::NoProgress;
use crate::store::{self, Store};

/// Where index objects live.
pub const INDEX_PREFIX: &str = "index/";
/// A backup writes an index object after this many closed packs (and at its end): what a killed backup loses
/// to the next one is at most this many packs, stored again.
pub const INDEX_FLUSH_PACKS: usize = 64;
const INDEX_SUFFIX: &str = ".jsonl.zst.age";
const INDEX_FORMAT: u32 = 1;
/// The largest index object read: prune's, listing every chunk of a large repository (~50 bytes per chunk).
const MAX_INDEX_STORED: u64 = 4 << 30;
/// A little under the stored bytes of one chunk's index entry, to reserve the entries up front.
const STORED_BYTES_PER_CHUNK: u64 = 40;
/// The longest line accepted: one pack of tiny chunks (16 MiB of 100-byte files is ~160,000 chunks).
const MAX_LINE: u64 = 256 << 20;

/// The store key of index object `name`.
pub fn index_key(name: &str) -> String {
    format!("{INDEX_PREFIX}{name}{INDEX_SUFFIX}")
}

/// Line 1 of an index object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: u32,
    written_by: String,
    #[serde(default)]
    supersedes: Vec<String>,
}

/// Writes one index object listing `packs`, to the recipients and the index recipient of `key`; returns its
/// name (for a later `supersedes`). `written_by`: `backup <snapshot id>` or `prune <id>`.
pub async fn write_index(
    store: &dyn Store,
    recipients: &Recipients,
    key: &DedupKey,
    written_by: &str,
    supersedes: &[String],
    packs: &[PackRecord],
) -> Result<String> {
    let name = format!("{:032x}", rand::random::<u128>());
    let object = index_key(&name);
    let header = Header { format: INDEX_FORMAT, written_by: written_by.to_string(), supersedes: supersedes.to_vec() };
    let packs = packs.to_vec();
    let compression = Compression { level: 3, threads: 1 };
    let to = recipients.and(key.index_recipient());
    pipeline::upload(store, &object, &to, compression, Arc::new(NoProgress), move |writer| {
        let mut lines = io::BufWriter::with_capacity(256 << 10, writer);
        let encoding = |e: serde_json::Error| Error::io("encoding an index line", e.into());
        serde_json::to_writer(&mut lines, &header).map_err(encoding)?;
        lines.write_all(b"\n").map_err(|e| Error::io("writing the index", e))?;
        for pack in &packs {
            serde_json::to_writer(&mut lines, pack).map_err(encoding)?;
            lines.write_all(b"\n").map_err(|e| Error::io("writing the index", e))?;
        }
        lines.flush().map_err(|e| Error::io("writing the index", e))
    })
    .await?;
    Ok(name)
}

/// What opens index objects: the repository's identity, or (on a backing-up host) the dedup key's index
/// identity.
#[derive(Clone)]
pub enum IndexReader {
    Identities(Arc<Identities>),
    Key(age::x25519::Identity),
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexReader::Identities(identities) => write!(f, "IndexReader({identities:?})"),
            IndexReader::Key(_) => f.write_str("IndexReader(dedup key)"),
        }
    }
}

impl IndexReader {
    pub fn from_key(key: &DedupKey) -> IndexReader {
        IndexReader::Key(key.index_identity())
    }

    fn decrypt<'a>(&self, stored: &'a [u8], object: &str) -> Result<age::stream::StreamReader<&'a [u8]>> {
        match self {
            IndexReader::Identities(identities) => {
                identities.decrypt(stored).map_err(|failure| identities.failure_error(failure, object))
            }
            IndexReader::Key(identity) => {
                let corrupt = |reason: String| Error::ObjectCorrupt { key: object.to_string(), reason };
                let decryptor = age::Decryptor::new_buffered(stored)
                    .map_err(|e| corrupt(format!("its age header is damaged ({e})")))?;
                decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => {
                        corrupt("it is not encrypted to this repository's index recipient".to_string())
                    }
                    other => corrupt(format!("its age header is damaged ({other})")),
                })
            }
        }
    }
}

/// One chunk in memory: 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: [u8; 32],
    /// Into [`ChunkIndex::packs`].
    pack: u32,
    offset: u32,
    stored_len: u32,
    plain_len: u32,
}

/// One pack in memory: 56 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PackInfo {
    name: [u8; 16],
    pub stored_size: u64,
    sha256: [u8; 32],
}

impl std::fmt::Debug for PackInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackInfo({}, {} bytes)", self.name(), self.stored_size)
    }
}

impl PackInfo {
    fn from_record(record: &PackRecord) -> std::result::Result<PackInfo, String> {
        let mut name = [0u8; 16];
        let mut sha256 = [0u8; 32];
        if !is_pack_name(&record.name) || hex::decode_to_slice(&record.name, &mut name).is_err() {
            return Err(format!("{:?} is not a pack name", record.name));
        }
        if hex::decode_to_slice(&record.sha256, &mut sha256).is_err() {
            return Err(format!("pack {}: {:?} is not a SHA-256", record.name, record.sha256));
        }
        Ok(PackInfo { name, stored_size: record.stored_size, sha256 })
    }

    /// The pack's name (32 lowercase hex); `pack::pack_key` gives its key.
    pub fn name(&self) -> String {
        hex::encode(self.name)
    }

    /// SHA-256 of its stored bytes, lowercase hex.
    pub fn sha256(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLocation<'a> {
    pub pack: &'a PackInfo,
    /// The pack's position in [`ChunkIndex::packs`]: a cheap key to group chunks by pack.
    pub pack_number: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub plain_len: u32,
}

/// Every chunk the repository's index objects list (superseded ones left out), sorted for binary search.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    entries: Vec<Entry>,
    packs: Vec<PackInfo>,
    /// Every index object read, superseded or not: a new index that replaces this one supersedes them all.
    index_names: Vec<String>,
}

impl ChunkIndex {
    /// Lists and reads every index object (one at a time; each decoded on a blocking thread), drops the
    /// superseded ones, and builds the index. A damaged object is an error naming it: a backup that trusted a
    /// partial index would only store chunks again, but restore, verify and prune must see everything.
    pub async fn load(store: &dyn Store, reader: IndexReader) -> Result<ChunkIndex> {
        let mut objects = Vec::new();
        let mut stored_bytes = 0u64;
        for meta in store.list(INDEX_PREFIX).await? {
            let Some(name) = meta.key.strip_prefix(INDEX_PREFIX).and_then(|k| k.strip_suffix(INDEX_SUFFIX)) else {
                tracing::debug!(key = %meta.key, "not an index object; ignored");
                continue;
            };
            objects.push(name.to_string());
            stored_bytes += meta.size;
        }
        let mut builder = IndexBuilder::default();
        // A chunk takes ~47 stored bytes (its id is 32 random bytes, which do not compress): reserving for all
        // of them at once spares the doublings of a growing Vec, whose peak is up to three times the result.
        builder.entries.reserve(usize::try_from(stored_bytes / STORED_BYTES_PER_CHUNK).unwrap_or(0));
        let mut loaded = Vec::with_capacity(objects.len());
        let mut superseded = HashSet::new();
        for name in &objects {
            let key = index_key(name);
            let stored = store::get_bytes(store, &key, MAX_INDEX_STORED).await?;
            let reader = reader.clone();
            let first_pack = builder.packs.len();
            let (header, filled) = tokio::task::spawn_blocking(move || {
                let mut builder = builder;
                let header = read_object(&reader, &stored, &key, &mut builder)?;
                Ok::<_, Error>((header, builder))
            })
            .await
            .map_err(|e| Error::io(format!("reading {}", index_key(name)), io::Error::other(e)))??;
            builder = filled;
            superseded.extend(header.supersedes);
            loaded.push((name.clone(), first_pack..builder.packs.len()));
        }
        let dropped: Vec<_> =
            loaded.iter().filter(|(name, _)| superseded.contains(name)).map(|(_, packs)| packs.clone()).collect();
        if !dropped.is_empty() {
            builder.drop_packs(|pack| dropped.iter().any(|packs| packs.contains(&pack)));
        }
        let mut index = builder.finish();
        index.index_names = objects;
        Ok(index)
    }

    /// An index of `packs` alone (a run's own packs, tests).
    pub fn from_records(packs: &[PackRecord]) -> Result<ChunkIndex> {
        let mut builder = IndexBuilder::default();
        for record in packs {
            builder.add(record).map_err(|reason| Error::ObjectCorrupt { key: pack_name_key(record), reason })?;
        }
        Ok(builder.finish())
    }

    /// The pack at `number` (a [`ChunkLocation::pack_number`]).
    pub fn pack(&self, number: u32) -> &PackInfo {
        &self.packs[number as usize]
    }

    /// Every pack with the chunks this index places in it, in pack order: what a new index object that
    /// replaces the loaded ones holds for the packs it keeps (a chunk stored twice is listed once).
    pub fn records(&self) -> Vec<PackRecord> {
        let mut chunks: Vec<Vec<super::pack::PackChunk>> = vec![Vec::new(); self.packs.len()];
        for entry in &self.entries {
            chunks[entry.pack as usize].push((ChunkId(entry.id), entry.offset, entry.stored_len, entry.plain_len));
        }
        self.packs
            .iter()
            .zip(chunks)
            .filter(|(_, chunks)| !chunks.is_empty())
            .map(|(pack, mut chunks)| {
                chunks.sort_by_key(|c| c.1);
                PackRecord { name: pack.name(), stored_size: pack.stored_size, sha256: pack.sha256(), chunks }
            })
            .collect()
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.find(id).is_some()
    }

    pub fn locate(&self, id: &ChunkId) -> Option<ChunkLocation<'_>> {
        self.find(id).map(|entry| self.location(entry))
    }

    /// A chunk's position in the index: 4 bytes that stand for its id and its place while the index lives
    /// (a restore keeps one per wanted chunk, where the id and place take 48).
    pub fn position(&self, id: &ChunkId) -> Option<u32> {
        let i = self.entries.binary_search_by(|entry| entry.id.cmp(&id.0)).ok()?;
        u32::try_from(i).ok()
    }

    /// The chunk at a [`position`](Self::position), and where it is.
    pub fn at(&self, position: u32) -> (ChunkId, ChunkLocation<'_>) {
        let entry = &self.entries[position as usize];
        (ChunkId(entry.id), self.location(entry))
    }

    /// Chunks in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every pack the index lists.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// The names of every index object read (superseded ones too): what an index replacing this one
    /// supersedes.
    pub fn index_names(&self) -> &[String] {
        &self.index_names
    }

    /// Every chunk and where it is, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, ChunkLocation<'_>)> {
        self.entries.iter().map(|entry| (ChunkId(entry.id), self.location(entry)))
    }

    /// Heap bytes the index holds (capacity, not length): what the docs' memory figures are checked against.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.packs.capacity() * size_of::<PackInfo>()
            + self.index_names.capacity() * size_of::<String>()
            + self.index_names.iter().map(String::capacity).sum::<usize>()
    }

    fn find(&self, id: &ChunkId) -> Option<&Entry> {
        self.entries.binary_search_by(|entry| entry.id.cmp(&id.0)).ok().map(|i| &self.entries[i])
    }

    fn location(&self, entry: &Entry) -> ChunkLocation<'_> {
        ChunkLocation {
            pack: &self.packs[entry.pack as usize],
            pack_number: entry.pack,
            offset: entry.offset,
            stored_len: entry.stored_len,
            plain_len: entry.plain_len,
        }
    }
}

fn pack_name_key(record: &PackRecord) -> String {
    super::pack::pack_key(&record.name)
}

/// Entries and packs as they are read, before sorting.
#[derive(Default)]
struct IndexBuilder {
    entries: Vec<Entry>,
    packs: Vec<PackInfo>,
}

impl IndexBuilder {
    /// Adds one pack line; the chunks' offsets must follow one another from 0, as the pack's frames do.
    fn add(&mut self, record: &PackRecord) -> std::result::Result<(), String> {
        let info = PackInfo::from_record(record)?;
        let pack = u32::try_from(self.packs.len()).map_err(|_| "more than 4 billion packs".to_string())?;
        let mut next = 0u64;
        self.entries.reserve(record.chunks.len());
        for &(id, offset, stored_len, plain_len) in &record.chunks {
            if u64::from(offset) != next {
                return Err(format!("pack {}: chunk {id} is at offset {offset}, expected {next}", record.name));
            }
            next += u64::from(stored_len);
            self.entries.push(Entry { id: id.0, pack, offset, stored_len, plain_len });
        }
        self.packs.push(info);
        Ok(())
    }

    /// Removes the packs for which `dropped` is true (those of superseded index objects) and their entries.
    fn drop_packs(&mut self, dropped: impl Fn(usize) -> bool) {
        let mut renumbered = Vec::with_capacity(self.packs.len());
        let mut kept = 0u32;
        for pack in 0..self.packs.len() {
            renumbered.push(if dropped(pack) { None } else { Some(kept) });
            if !dropped(pack) {
                kept += 1;
            }
        }
        let mut pack = 0;
        self.packs.retain(|_| {
            pack += 1;
            renumbered[pack - 1].is_some()
        });
        self.entries.retain_mut(|entry| match renumbered[entry.pack as usize] {
            Some(new) => {
                entry.pack = new;
                true
            }
            None => false,
        });
    }

    /// Sorts by id (then by pack, so that of two copies of a chunk the first read is kept) without the extra
    /// memory of a stable sort, and drops duplicates.
    fn finish(mut self) -> ChunkIndex {
        self.entries.sort_unstable_by_key(|entry| (entry.id, entry.pack));
        self.entries.dedup_by(|later, first| later.id == first.id);
        self.entries.shrink_to_fit();
        self.packs.shrink_to_fit();
        ChunkIndex { entries: self.entries, packs: self.packs, index_names: Vec::new() }
    }
}

/// Decrypts, decompresses and parses one index object into `builder`; returns its header.
fn read_object(reader: &IndexReader, stored: &[u8], key: &str, builder: &mut IndexBuilder) -> Result<Header> {
    let corrupt = |reason: String| Error::ObjectCorrupt { key: key.to_string(), reason };
    let decrypted = reader.decrypt(stored, key)?;
    let decoder = zstd::stream::read::Decoder::new(decrypted).map_err(|e| Error::io(format!("reading {key}"), e))?;
    let mut lines = BufReader::with_capacity(256 << 10, decoder);
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| -> Result<bool> {
        line.clear();
        (&mut lines).take(MAX_LINE).read_until(b'\n', line).map_err(|e| corrupt(explain(&e)))?;
        if line.len() as u64 >= MAX_LINE {
            return Err(corrupt(format!("a line is longer than {MAX_LINE} bytes")));
        }
        Ok(!line.is_empty())
    };
    if !next_line(&mut line)? {
        return Err(corrupt("it is empty".to_string()));
    }
    let format = serde_json::from_slice::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_u64()))
        .ok_or_else(|| corrupt("its first line is not an index header".to_string()))?;
    if format > u64::from(INDEX_FORMAT) {
        return Err(Error::RepositoryFormatTooNew {
            key: key.to_string(),
            format: u32::try_from(format).unwrap_or(u32::MAX),
            supported: INDEX_FORMAT,
        });
    }
    let header: Header =
        serde_json::from_slice(&line).map_err(|e| corrupt(format!("its header does not parse: {e}")))?;
    let mut number = 1;
    while next_line(&mut line)? {
        number += 1;
        let record: PackRecord =
            serde_json::from_slice(&line).map_err(|e| corrupt(format!("line {number} does not parse: {e}")))?;
        builder.add(&record).map_err(|reason| corrupt(format!("line {number}: {reason}")))?;
    }
    Ok(header)
}

/// age and zstd report damage tersely; say what it means.
fn explain(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("it ends early ({e})"),
        io::ErrorKind::InvalidData => format!("it fails age authentication or does not decompress ({e})"),
        _ => format!("it does not decode ({e})"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(n: u64) -> ChunkId {
        let mut id = [0u8; 32];
        // Spread over the key space, as HMAC ids are.
        id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        id[24..].copy_from_slice(&n.to_le_bytes());
        ChunkId(id)
    }

    fn pack(name_seed: u128, ids: impl Iterator<Item = u64>) -> PackRecord {
        let chunks = ids.enumerate().map(|(i, n)| (id(n), i as u32 * 100, 100, 150)).collect();
        PackRecord { name: format!("{name_seed:032x}"), stored_size: 1000, sha256: "ab".repeat(32), chunks }
    }

    #[test]
    fn entries_and_pack_records_have_the_documented_sizes() {
        assert_eq!(size_of::<Entry>(), 48);
        assert_eq!(size_of::<PackInfo>(), 56);
    }

    #[test]
    fn a_million_chunks_take_at_most_52_mb() {
        // 16 chunks per pack, as 1 MiB chunks in 16 MiB packs.
        let packs: Vec<_> = (0..62_500u64).map(|p| pack(u128::from(p) + 1, p * 16..p * 16 + 16)).collect();
        let index = ChunkIndex::from_records(&packs).unwrap();
        drop(packs);
        assert_eq!(index.len(), 1_000_000);
        assert!(index.heap_bytes() <= 52_000_000, "{} bytes", index.heap_bytes());
        for n in [0, 1, 499_999, 999_999] {
            let location = index.locate(&id(n)).unwrap();
            assert_eq!(location.pack.name(), format!("{:032x}", n / 16 + 1));
            assert_eq!(location.offset, (n % 16) as u32 * 100);
        }
        assert!(!index.contains(&id(1_000_000)));
    }

    /// The reservation in `load` assumes at least [`STORED_BYTES_PER_CHUNK`] stored bytes per chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_index_object_stores_over_40_bytes_per_chunk_and_loads_without_regrowing() {
        let store = crate::store::MemoryStore::new();
        let pair = crate::crypto::KeyPair::generate();
        let recipients = Recipients::parse(&[pair.recipient()]).unwrap();
        let key = DedupKey::generate();
        // HMAC ids, 16 MiB packs of ~1 MiB chunks with realistic lengths.
        let packs: Vec<_> = (0..1000u32)
            .map(|p| {
                let mut offset = 0;
                let chunks = (0..16u32)
                    .map(|c| {
                        let stored = 900_000 + (p * 7919 + c * 104_729) % 200_000;
                        let entry = (key.chunk_id(&(p * 16 + c).to_le_bytes()), offset, stored, stored + 1000);
                        offset += stored;
                        entry
                    })
                    .collect();
                PackRecord {
                    name: format!("{:032x}", p + 1),
                    stored_size: u64::from(offset),
                    sha256: "cd".repeat(32),
                    chunks,
                }
            })
            .collect();
        let name = write_index(&store, &recipients, &key, "backup x", &[], &packs).await.unwrap();
        let stored = store.head(&index_key(&name)).await.unwrap().unwrap().size;
        let per_chunk = stored / 16_000;
        assert!((STORED_BYTES_PER_CHUNK..=60).contains(&per_chunk), "{per_chunk} bytes per chunk");
        let index = ChunkIndex::load(&store, IndexReader::from_key(&key)).await.unwrap();
        assert_eq!(index.len(), 16_000);
        assert!(index.heap_bytes() <= 16_000 * 48 + 1000 * 56 + 200, "{}", index.heap_bytes());
    }

    #[test]
    fn of_two_copies_of_a_chunk_the_first_read_is_kept() {
        let index = ChunkIndex::from_records(&[pack(1, [5, 6].into_iter()), pack(2, [6, 7].into_iter())]).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(index.locate(&id(6)).unwrap().pack.name(), format!("{:032x}", 1));
        assert_eq!(index.locate(&id(7)).unwrap().pack.name(), format!("{:032x}", 2));
        assert_eq!(index.iter().count(), 3);
    }

    #[test]
    fn dropped_packs_take_their_chunks_with_them_and_the_rest_are_renumbered() {
        let mut builder = IndexBuilder::default();
        for record in [pack(1, [1].into_iter()), pack(2, [2, 1].into_iter()), pack(3, [3].into_iter())] {
            builder.add(&record).unwrap();
        }
        builder.drop_packs(|pack| pack == 0);
        let index = builder.finish();
        assert_eq!(index.packs().len(), 2);
        assert_eq!(index.locate(&id(1)).unwrap().pack.name(), format!("{:032x}", 2));
        assert_eq!(index.locate(&id(3)).unwrap().pack.name(), format!("{:032x}", 3));
    }

    #[test]
    fn a_pack_line_with_gaps_or_a_bad_name_is_refused() {
        let mut gap = pack(1, [1, 2].into_iter());
        gap.chunks[1].1 = 150;
        assert!(IndexBuilder::default().add(&gap).unwrap_err().contains("offset 150"));
        let mut bad = pack(1, [1].into_iter());
        bad.name = "../etc".into();
        assert!(IndexBuilder::default().add(&bad).is_err());
    }
}
