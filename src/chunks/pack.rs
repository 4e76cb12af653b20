//! Packs: many chunks in one stored object, so that N small new files cost a few PUTs, not N.
//!
//! ```text
//! packs/<first 2 hex of name>/<name>.pack.age     name = 32 random lowercase hex
//! stored    = age(plaintext)                       binary age, to the repository's recipients
//! plaintext = frame_1 ‖ … ‖ frame_n ‖ trailer      frame_i = one zstd frame (checksum, content size) of chunk i,
//!                                                  compressed or raw blocks (`frame.rs`)
//! trailer   = n × (id[32] ‖ stored_len u32le ‖ plain_len u32le) ‖ n u32le ‖ "DRPACK01"
//! ```
//!
//! One age stream per pack, not per chunk: one X25519 stanza per recipient per pack instead of per chunk (CPU
//! and bytes on small files). One zstd frame per chunk: a chunk is read without its neighbours, and prune can
//! copy a live frame into a new pack without recompressing it. The trailer makes a pack self-describing, so
//! that an index can be rebuilt from the packs alone. Names are random because the name must be known when
//! the streaming upload starts; the index records each pack's SHA-256, so `sha256sum` still checks one.
//!
//! Every chunk read is checked three ways: age authenticates the bytes, zstd the frame's checksum, and
//! `HMAC(id_key, plaintext)` must equal the id, so a pack that says it holds chunk X holds X (a host with the
//! dedup key could write a pack claiming otherwise).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use super::keys::{ChunkId, DedupKey};
use crate::crypto::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::pipeline::{EncodeWriter, Encoding, UploadHandle, Uploaded, begin_encoded_upload};
use crate::progress::NoProgress;
use crate::store::{self, Store};

/// Where packs live.
pub const PACKS_PREFIX: &str = "packs/";
const PACK_SUFFIX: &str = ".pack.age";
const TRAILER_MAGIC: &[u8; 8] = b"DRPACK01";
/// One trailer entry: id, stored_len, plain_len.
const TRAILER_ENTRY: usize = 32 + 4 + 4;
/// The largest stored pack a reader accepts without an index entry that says its size: `pack_size` is at
/// most 1 GiB (`chunking.json`), a pack overshoots it by at most one chunk (16 MiB), plus age's overhead.
const MAX_PACK_STORED: u64 = (1 << 30) + (64 << 20);
/// Packs whose uploads may be in flight while the next one fills: the store keeps writing one while the
/// chunks of the next are compressed, and memory stays bounded (each holds the pipeline's channel).
const UPLOADS_IN_FLIGHT: usize = 1;

/// The store key of pack `name`.
pub fn pack_key(name: &str) -> String {
    let shard = name.get(..2).unwrap_or(name);
    format!("{PACKS_PREFIX}{shard}/{name}{PACK_SUFFIX}")
}

/// A new random pack name: 32 lowercase hex digits.
pub fn new_pack_name() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// True for a well-formed pack name (32 lowercase hex digits).
pub fn is_pack_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One chunk of a pack: `(id, offset, stored_len, plain_len)`, as an index line lists it.
pub type PackChunk = (ChunkId, u32, u32, u32);

/// A pack as uploaded: what its index line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    #[serde(rename = "pack")]
    pub name: String,
    /// Bytes in the store.
    pub stored_size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// `(id, offset, stored_len, plain_len)` of every chunk, in pack order; offsets count from the start of
    /// the plaintext.
    pub chunks: Vec<PackChunk>,
}

impl PackRecord {
    /// Bytes of the pack's frames (its plaintext without the trailer).
    pub fn frames_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.2)).sum()
    }
}

/// The pack being filled.
struct OpenPack {
    name: String,
    writer: EncodeWriter,
    handle: UploadHandle,
    chunks: Vec<PackChunk>,
    frames_len: u64,
}

/// A pack whose bytes are all written, while the store commits it.
struct ClosingPack {
    record: PackRecord,
    handle: UploadHandle,
}

/// Writes packs. It lives on ONE blocking thread (inside `spawn_blocking`): frames are written there, and the
/// few things that must be awaited (starting an upload, its end) are awaited through `runtime`.
///
/// Each pack streams through the pipeline's age-only [`EncodeWriter`] to [`Store::put_stream`], so memory is
/// the pipeline's bounded channel per upload in flight, never a whole pack. A pack becomes visible only when
/// its upload committed; dropping the writer unfinished aborts the open pack (nothing visible) and lets the
/// packs already closed finish (they are whole; unindexed, prune sweeps them).
pub struct PackWriter {
    store: Arc<dyn Store>,
    recipients: Arc<Recipients>,
    pack_size: u64,
    runtime: Handle,
    open: Option<OpenPack>,
    closing: VecDeque<ClosingPack>,
    /// Committed, not yet handed out by [`PackWriter::take_closed`].
    closed: Vec<PackRecord>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("open", &self.open.as_ref().map(|p| &p.name))
            .field("closing", &self.closing.len())
            .field("closed", &self.closed.len())
            .finish()
    }
}

impl PackWriter {
    pub fn new(store: Arc<dyn Store>, recipients: Arc<Recipients>, pack_size: u64, runtime: Handle) -> PackWriter {
        PackWriter { store, recipients, pack_size, runtime, open: None, closing: VecDeque::new(), closed: Vec::new() }
    }

    /// Appends one chunk's frame (from [`super::compress_frame`]). A pack is closed (and uploaded) before a
    /// frame would take its plaintext, trailer included, past `pack_size`, so that a pack stays within
    /// [`stored_size_bound`] (a frame larger than `pack_size` alone makes a pack of its own).
    pub fn add(&mut self, id: ChunkId, frame: &[u8], plain_len: u32) -> Result<()> {
        let stored_len = u32::try_from(frame.len())
            .map_err(|_| Error::io("packing a chunk", io::Error::other("a compressed chunk over 4 GiB")))?;
        let overflows = |pack: &OpenPack| {
            !pack.chunks.is_empty()
                && pack.frames_len + frame.len() as u64 + trailer_len(pack.chunks.len() + 1) > self.pack_size
        };
        if let Some(pack) = self.open.take_if(|pack| overflows(pack)) {
            self.close(pack)?;
        }
        let mut pack = match self.open.take() {
            Some(pack) => pack,
            None => self.start()?,
        };
        if let Err(e) = pack.writer.write_all(frame) {
            return Err(self.failed(pack, e));
        }
        // A pack's plaintext stays within pack_size (≤ 1 GiB) unless it is one chunk: offsets fit a u32.
        let offset = u32::try_from(pack.frames_len)
            .map_err(|_| Error::io("packing a chunk", io::Error::other("a pack over 4 GiB")))?;
        pack.chunks.push((id, offset, stored_len, plain_len));
        pack.frames_len += u64::from(stored_len);
        if pack.frames_len + trailer_len(pack.chunks.len()) >= self.pack_size {
            self.close(pack)?;
        } else {
            self.open = Some(pack);
        }
        Ok(())
    }

    /// The packs committed since the last call (for the periodic index flushes), without waiting for the
    /// ones still uploading.
    pub fn take_closed(&mut self) -> Result<Vec<PackRecord>> {
        while self.closing.front().is_some_and(|p| p.handle.is_finished()) {
            self.wait_oldest()?;
        }
        Ok(std::mem::take(&mut self.closed))
    }

    /// Closes the open pack and waits for every upload; returns the packs not yet taken. An error is the
    /// store's own.
    pub fn finish(mut self) -> Result<Vec<PackRecord>> {
        if let Some(pack) = self.open.take() {
            self.close(pack)?;
        }
        while !self.closing.is_empty() {
            self.wait_oldest()?;
        }
        Ok(std::mem::take(&mut self.closed))
    }

    fn start(&mut self) -> Result<OpenPack> {
        let name = new_pack_name();
        let key = pack_key(&name);
        let (writer, handle) = self.runtime.block_on(begin_encoded_upload(
            self.store.as_ref(),
            &key,
            &self.recipients,
            Encoding::Encrypted,
            Some(stored_size_bound(self.pack_size)),
            Arc::new(NoProgress),
        ))?;
        Ok(OpenPack { name, writer, handle, chunks: Vec::new(), frames_len: 0 })
    }

    /// Writes the trailer, ends the age stream and queues the commit; waits for the oldest upload when too
    /// many are in flight.
    fn close(&mut self, mut pack: OpenPack) -> Result<()> {
        let trailer = encode_trailer(&pack.chunks);
        if let Err(e) = pack.writer.write_all(&trailer) {
            return Err(self.failed(pack, e));
        }
        let OpenPack { name, writer, handle, chunks, .. } = pack;
        let sealed = match writer.finish() {
            Ok(sealed) => sealed,
            Err(e) => {
                let key = pack_key(&name);
                return Err(self.upload_failure(handle, &key, e));
            }
        };
        let record = PackRecord { name, stored_size: sealed.stored_size, sha256: sealed.sha256, chunks };
        self.closing.push_back(ClosingPack { record, handle });
        while self.closing.len() > UPLOADS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<()> {
        let Some(ClosingPack { record, handle }) = self.closing.pop_front() else { return Ok(()) };
        let key = handle.key().to_string();
        match self.runtime.block_on(handle.wait())? {
            Uploaded::Committed => {
                self.closed.push(record);
                Ok(())
            }
            // The commit was queued before the handle was: the store side cannot have seen the writer vanish.
            Uploaded::Abandoned => {
                Err(Error::io(format!("uploading {key}"), io::Error::other("the upload ended uncommitted")))
            }
        }
    }

    /// The open pack's writer failed: the store's error when the store failed under it (the writer then only
    /// saw a closed channel), the writer's own otherwise.
    fn failed(&mut self, pack: OpenPack, e: io::Error) -> Error {
        let key = pack_key(&pack.name);
        drop(pack.writer);
        self.upload_failure(pack.handle, &key, e)
    }

    fn upload_failure(&mut self, handle: UploadHandle, key: &str, e: io::Error) -> Error {
        match self.runtime.block_on(handle.wait()) {
            Err(store_error) => store_error,
            Ok(_) => store::store_error(self.store.location(), "write", key, e),
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // Dropping the open pack's writer closes its channel: the store side aborts the object. Its task and
        // the closing packs' are left to end on the runtime (aborting a commit midway could leave a partial
        // upload behind).
        if let Some(pack) = self.open.take() {
            drop(pack.writer);
            drop(self.runtime.spawn(pack.handle.wait()));
        }
        for pack in self.closing.drain(..) {
            drop(self.runtime.spawn(pack.handle.wait()));
        }
    }
}

/// Bytes of the trailer of a pack of `chunks` chunks.
fn trailer_len(chunks: usize) -> u64 {
    (chunks * TRAILER_ENTRY + 12) as u64
}

/// The most a pack of `pack_size` stores, unless one frame alone is larger: its plaintext, plus age's 16 bytes
/// per 64 KiB and its header (one stanza of ~100 bytes per recipient; 64 KiB covers hundreds).
pub fn stored_size_bound(pack_size: u64) -> u64 {
    pack_size + pack_size / 4096 + (64 << 10)
}

fn encode_trailer(chunks: &[PackChunk]) -> Vec<u8> {
    let mut trailer = Vec::with_capacity(trailer_len(chunks.len()) as usize);
    for (id, _, stored_len, plain_len) in chunks {
        trailer.extend_from_slice(&id.0);
        trailer.extend_from_slice(&stored_len.to_le_bytes());
        trailer.extend_from_slice(&plain_len.to_le_bytes());
    }
    // A frame is at least 9 bytes and a pack under 4 GiB (`add` checks the offsets), so n fits a u32.
    trailer.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    trailer.extend_from_slice(TRAILER_MAGIC);
    trailer
}

/// One chunk as a pack's trailer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub stored_len: u32,
    pub plain_len: u32,
}

/// A whole pack, decrypted, with its trailer parsed: take chunks out with [`PackContents::chunk`].
pub struct PackContents {
    key: String,
    plaintext: Vec<u8>,
    /// Bytes of frames, before the trailer.
    frames_len: usize,
    entries: Vec<PackEntry>,
}

impl std::fmt::Debug for PackContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackContents").field("key", &self.key).field("chunks", &self.entries.len()).finish()
    }
}

impl PackContents {
    /// Parses the trailer of a pack's plaintext; `key` names the pack in errors.
    pub fn parse(key: &str, plaintext: Vec<u8>) -> Result<PackContents> {
        let corrupt = |reason: String| Error::ObjectCorrupt { key: key.to_string(), reason };
        let len = plaintext.len();
        if len < 12 || &plaintext[len - 8..] != TRAILER_MAGIC {
            return Err(corrupt("its plaintext does not end with a pack trailer".to_string()));
        }
        let mut count = [0u8; 4];
        count.copy_from_slice(&plaintext[len - 12..len - 8]);
        let count = u32::from_le_bytes(count) as usize;
        let trailer_len = count
            .checked_mul(TRAILER_ENTRY)
            .and_then(|n| n.checked_add(12))
            .filter(|&n| n <= len)
            .ok_or_else(|| corrupt(format!("its trailer lists {count} chunks, more than the pack can hold")))?;
        let frames_len = len - trailer_len;
        let mut entries = Vec::with_capacity(count);
        let mut offset = 0u64;
        for raw in plaintext[frames_len..len - 12].chunks_exact(TRAILER_ENTRY) {
            let mut id = [0u8; 32];
            id.copy_from_slice(&raw[..32]);
            let stored_len = u32::from_le_bytes([raw[32], raw[33], raw[34], raw[35]]);
            let plain_len = u32::from_le_bytes([raw[36], raw[37], raw[38], raw[39]]);
            let start = u32::try_from(offset).map_err(|_| corrupt("its trailer overflows".to_string()))?;
            entries.push(PackEntry { id: ChunkId(id), offset: start, stored_len, plain_len });
            offset += u64::from(stored_len);
        }
        if offset != frames_len as u64 {
            return Err(corrupt(format!(
                "its trailer accounts for {offset} bytes of frames, the pack holds {frames_len}"
            )));
        }
        Ok(PackContents { key: key.to_string(), plaintext, frames_len, entries })
    }

    /// The pack's key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every chunk the trailer lists, in pack order.
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The plaintext of the chunk at `offset`: its frame decompressed (zstd checks the frame's checksum), its
    /// length checked, and its HMAC id checked against `id`. Any mismatch is [`Error::ObjectCorrupt`] naming
    /// the pack and the chunk.
    pub fn chunk(&self, offset: u32, stored_len: u32, plain_len: u32, id: &ChunkId, key: &DedupKey) -> Result<Vec<u8>> {
        let corrupt =
            |reason: String| Error::ObjectCorrupt { key: self.key.clone(), reason: format!("chunk {id}: {reason}") };
        let start = offset as usize;
        let frame = start
            .checked_add(stored_len as usize)
            .filter(|&end| end <= self.frames_len)
            .map(|end| &self.plaintext[start..end])
            .ok_or_else(|| corrupt(format!("bytes {offset}+{stored_len} lie outside the pack's frames")))?;
        let plaintext = zstd::bulk::decompress(frame, plain_len as usize)
            .map_err(|e| corrupt(format!("its frame does not decompress ({e})")))?;
        if plaintext.len() != plain_len as usize {
            return Err(corrupt(format!("it decompresses to {} bytes, not {plain_len}", plaintext.len())));
        }
        let actual = key.chunk_id(&plaintext);
        if actual != *id {
            return Err(corrupt(format!("its bytes have id {actual}")));
        }
        Ok(plaintext)
    }

    /// The stored (compressed) frame of an entry, unchecked: what a repack copies, after checking the chunk.
    pub fn frame(&self, entry: &PackEntry) -> Result<&[u8]> {
        let start = entry.offset as usize;
        start
            .checked_add(entry.stored_len as usize)
            .filter(|&end| end <= self.frames_len)
            .map(|end| &self.plaintext[start..end])
            .ok_or_else(|| Error::ObjectCorrupt {
                key: self.key.clone(),
                reason: format!(
                    "chunk {}: bytes {}+{} lie outside the pack's frames",
                    entry.id, entry.offset, entry.stored_len
                ),
            })
    }

    /// Checks every chunk the trailer lists: frame, length and id (`dr verify`).
    pub fn check_all(&self, key: &DedupKey) -> Result<()> {
        for entry in &self.entries {
            self.chunk_at(entry, key)?;
        }
        Ok(())
    }

    /// [`PackContents::chunk`] for an entry of the trailer.
    pub fn chunk_at(&self, entry: &PackEntry, key: &DedupKey) -> Result<Vec<u8>> {
        self.chunk(entry.offset, entry.stored_len, entry.plain_len, &entry.id, key)
    }
}

/// Reads pack `name` whole (a pack's plaintext is at most `pack_size` plus one chunk: 16 MiB by default),
/// checks its stored size and SHA-256 against `expected` (from the index) when given, decrypts it with the
/// identity (on a blocking thread) and parses its trailer.
pub async fn read_pack(
    store: &dyn Store,
    name: &str,
    expected: Option<(u64, &str)>,
    identities: Arc<Identities>,
) -> Result<PackContents> {
    let key = pack_key(name);
    let corrupt = |reason: String| Error::ObjectCorrupt { key: key.clone(), reason };
    let limit = expected.map_or(MAX_PACK_STORED, |(size, _)| size);
    let stored = store::get_bytes(store, &key, limit).await?;
    if let Some((size, _)) = expected
        && stored.len() as u64 != size
    {
        return Err(corrupt(format!("it holds {} bytes, the index says {size}", stored.len())));
    }
    let key_owned = key.clone();
    let sha256 = expected.map(|(_, sha256)| sha256.to_string());
    // Hashing and decrypting 16 MiB are CPU work: off the async runtime's threads, both.
    tokio::task::spawn_blocking(move || {
        if let Some(sha256) = sha256 {
            let actual = hex::encode(Sha256::digest(&stored));
            if actual != sha256 {
                return Err(Error::ObjectCorrupt {
                    key: key_owned,
                    reason: format!("SHA-256 is {actual}, the index says {sha256}"),
                });
            }
        }
        let plaintext = decrypt(&stored, &identities, &key_owned)?;
        PackContents::parse(&key_owned, plaintext)
    })
    .await
    .map_err(|e| Error::io(format!("decrypting {key}"), io::Error::other(e)))?
}

fn decrypt(stored: &[u8], identities: &Identities, key: &str) -> Result<Vec<u8>> {
    let mut reader = identities.decrypt(stored).map_err(|failure| identities.failure_error(failure, key))?;
    let mut plaintext = Vec::with_capacity(stored.len());
    reader.read_to_end(&mut plaintext).map_err(|e| Error::ObjectCorrupt {
        key: key.to_string(),
        reason: format!("it fails age authentication: bytes were altered or the pack is truncated ({e})"),
    })?;
    Ok(plaintext)
}

/// [`read_pack`] of a pack the index lists, checked against the index's size and SHA-256.
pub async fn read_indexed_pack(
    store: &dyn Store,
    pack: &super::PackInfo,
    identities: Arc<Identities>,
) -> Result<PackContents> {
    read_pack(store, &pack.name(), Some((pack.stored_size, &pack.sha256())), identities).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::chunks::compress_frame;

    /// A pack's plaintext as the writer lays it out, from chunk plaintexts.
    fn plaintext_of(key: &DedupKey, chunks: &[&[u8]]) -> (Vec<u8>, Vec<PackChunk>) {
        let mut frames = Vec::new();
        let mut listed = Vec::new();
        for chunk in chunks {
            let frame = compress_frame(3, chunk).unwrap();
            listed.push((key.chunk_id(chunk), frames.len() as u32, frame.len() as u32, chunk.len() as u32));
            frames.extend_from_slice(&frame);
        }
        frames.extend_from_slice(&encode_trailer(&listed));
        (frames, listed)
    }

    #[test]
    fn writers_and_contents_move_between_threads() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        send::<PackWriter>();
        shared::<PackContents>();
        shared::<DedupKey>();
        shared::<crate::chunks::ChunkIndex>();
    }

    #[test]
    fn keys_are_sharded_by_the_first_two_hex_digits() {
        let name = new_pack_name();
        assert!(is_pack_name(&name));
        assert_eq!(pack_key("7e0102030405060708090a0b0c0d0e0f"), "packs/7e/7e0102030405060708090a0b0c0d0e0f.pack.age");
        assert!(!is_pack_name("7E0102030405060708090a0b0c0d0e0f") && !is_pack_name("7e"));
    }

    #[test]
    fn the_trailer_parses_and_every_chunk_comes_back_checked() {
        let key = DedupKey::generate();
        let chunks: [&[u8]; 3] = [b"first chunk", &[7u8; 100_000], b""];
        let (plaintext, listed) = plaintext_of(&key, &chunks);
        let contents = PackContents::parse("packs/ab/ab.pack.age", plaintext).unwrap();
        let entries: Vec<_> = contents.entries().iter().map(|e| (e.id, e.offset, e.stored_len, e.plain_len)).collect();
        assert_eq!(entries, listed);
        for (entry, chunk) in contents.entries().iter().zip(chunks) {
            assert_eq!(contents.chunk_at(entry, &key).unwrap(), chunk);
        }
        // Frames carry their content size and checksum.
        let frame = compress_frame(3, b"hello").unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).unwrap(), Some(5));
        assert_ne!(frame[4] & 0b100, 0, "content checksum flag");
    }

    #[test]
    fn a_wrong_id_a_wrong_key_or_a_damaged_frame_is_corruption_naming_pack_and_chunk() {
        let key = DedupKey::generate();
        let (plaintext, listed) = plaintext_of(&key, &[b"one chunk of data", b"another chunk"]);
        let contents = PackContents::parse("packs/ab/ab.pack.age", plaintext.clone()).unwrap();
        let (id, offset, stored_len, plain_len) = listed[0];
        let other = key.chunk_id(b"something else");
        let err = contents.chunk(offset, stored_len, plain_len, &other, &key).unwrap_err().to_string();
        assert!(err.contains("packs/ab/ab.pack.age") && err.contains(&other.to_string()), "{err}");
        assert!(contents.chunk(offset, stored_len, plain_len, &id, &DedupKey::generate()).is_err());
        assert!(contents.chunk(offset, stored_len, plain_len + 1, &id, &key).is_err());
        assert!(contents.chunk(offset + 1_000_000, stored_len, plain_len, &id, &key).is_err());

        let mut damaged = plaintext;
        damaged[offset as usize + stored_len as usize - 2] ^= 1;
        let contents = PackContents::parse("packs/ab/ab.pack.age", damaged).unwrap();
        let err = contents.chunk(offset, stored_len, plain_len, &id, &key).unwrap_err().to_string();
        assert!(err.contains(&id.to_string()), "{err}");
    }

    #[test]
    fn a_damaged_trailer_is_corruption() {
        let key = DedupKey::generate();
        let (plaintext, _) = plaintext_of(&key, &[b"a", b"b"]);
        for damage in [
            |p: &mut Vec<u8>| p.truncate(p.len() - 1),
            |p: &mut Vec<u8>| {
                let n = p.len() - 12;
                p[n] = 200;
            },
            // The last chunk's stored_len: the frames no longer add up.
            |p: &mut Vec<u8>| {
                let n = p.len() - 20;
                p[n] ^= 1;
            },
            |p: &mut Vec<u8>| p.clear(),
        ] {
            let mut damaged = plaintext.clone();
            damage(&mut damaged);
            let err = PackContents::parse("packs/ab/ab.pack.age", damaged).unwrap_err();
            assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if key == "packs/ab/ab.pack.age"), "{err}");
        }
    }
}
