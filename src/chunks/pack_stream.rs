//! Reading chunks out of a pack as it streams from the store: for a restore, which takes the chunks it needs in
//! pack order and never holds the pack whole (a few buffers and one chunk per pack in flight, whatever the pack
//! size).
//!
//! Every byte handed out is authenticated first: age's STREAM releases a 64 KiB block of plaintext only after
//! checking its tag, zstd checks each frame's checksum, and the chunk's id is recomputed from its plaintext.
//! [`PackStream::finish`] then reads to the end, where age checks the final block (a cut-off pack fails there)
//! and the stored size is compared with the index. The stored bytes' SHA-256 is not taken here: with every
//! block authenticated and every chunk's id recomputed it would prove nothing more, and it cost a fifth of a
//! restore's CPU (measured); `dr verify` and `sha256sum` check it.

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use super::keys::{ChunkId, DedupKey};
use crate::crypto::Identities;
use crate::error::{Error, Result};

/// A pack's plaintext, read front to back.
pub struct PackStream {
    key: String,
    /// The store's location, for a failed read of it.
    location: String,
    /// What passed under age: the stored bytes' count, and the store's own failure if it failed.
    stored: Arc<Mutex<Stored>>,
    plaintext: age::stream::StreamReader<BufReader<Hashing>>,
    /// Offset of the next plaintext byte.
    position: u64,
    frame: Vec<u8>,
    /// One zstd context for every chunk: making one per chunk was 6 % of a restore of small files.
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl std::fmt::Debug for PackStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackStream").field("key", &self.key).field("position", &self.position).finish()
    }
}

#[derive(Default)]
struct Stored {
    bytes: u64,
    /// The store's reader failed (as opposed to age or zstd over it).
    failed: Option<io::Error>,
}

fn lock(state: &Mutex<Stored>) -> MutexGuard<'_, Stored> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The stored bytes, counted as they pass.
struct Hashing {
    inner: Box<dyn Read + Send>,
    stored: Arc<Mutex<Stored>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                lock(&self.stored).bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let stand_in = io::Error::new(e.kind(), e.to_string());
                lock(&self.stored).failed.get_or_insert(e);
                Err(stand_in)
            }
        }
    }
}

impl PackStream {
    /// Opens the pack `key` of the store at `location`, whose stored bytes `stored` yields (a blocking reader
    /// over the store's stream).
    pub fn open(
        stored: Box<dyn Read + Send>,
        location: &str,
        key: &str,
        identities: &Identities,
    ) -> Result<PackStream> {
        let state: Arc<Mutex<Stored>> = Arc::default();
        let hashing = Hashing { inner: stored, stored: Arc::clone(&state) };
        let plaintext = match identities.decrypt(BufReader::with_capacity(256 << 10, hashing)) {
            Ok(plaintext) => plaintext,
            Err(failure) => {
                if let Some(e) = lock(&state).failed.take() {
                    return Err(store_error(location, key, e));
                }
                return Err(identities.failure_error(failure, key));
            }
        };
        let decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| Error::io(format!("starting zstd for {key}"), e))?;
        Ok(PackStream {
            decompressor,
            key: key.to_string(),
            location: location.to_string(),
            stored: state,
            plaintext,
            position: 0,
            frame: Vec::new(),
        })
    }

    /// The plaintext of the chunk whose frame starts at `offset` (at or after the last one taken): the bytes
    /// before it are read past, the frame decompressed and its id checked.
    pub fn chunk_at(
        &mut self,
        offset: u32,
        stored_len: u32,
        plain_len: u32,
        id: &ChunkId,
        key: &DedupKey,
    ) -> Result<Vec<u8>> {
        let offset = u64::from(offset);
        if offset < self.position {
            return Err(self.corrupt(format!("chunk {id}: its frame at {offset} lies before one already read")));
        }
        let skip = offset - self.position;
        let skipped =
            io::copy(&mut (&mut self.plaintext).take(skip), &mut io::sink()).map_err(|e| self.read_error(e))?;
        if skipped < skip {
            return Err(self.corrupt(format!("chunk {id}: the pack ends before its frame at {offset}")));
        }
        self.frame.resize(stored_len as usize, 0);
        if let Err(e) = self.plaintext.read_exact(&mut self.frame) {
            return Err(self.read_error(e));
        }
        self.position = offset + u64::from(stored_len);
        let plaintext = match self.decompressor.decompress(&self.frame, plain_len as usize) {
            Ok(plaintext) => plaintext,
            Err(e) => return Err(self.corrupt(format!("chunk {id}: its frame does not decompress ({e})"))),
        };
        if plaintext.len() != plain_len as usize {
            return Err(
                self.corrupt(format!("chunk {id}: it decompresses to {} bytes, not {plain_len}", plaintext.len()))
            );
        }
        let actual = key.chunk_id(&plaintext);
        if actual != *id {
            return Err(self.corrupt(format!("chunk {id}: its bytes have id {actual}")));
        }
        Ok(plaintext)
    }

    /// Reads the rest of the pack (age checks its last block there) and compares the stored size with what the
    /// index recorded.
    pub fn finish(mut self, stored_size: u64) -> Result<()> {
        if let Err(e) = io::copy(&mut self.plaintext, &mut io::sink()) {
            return Err(self.read_error(e));
        }
        let bytes = lock(&self.stored).bytes;
        if bytes != stored_size {
            return Err(self.corrupt(format!("it holds {bytes} bytes, the index says {stored_size}")));
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::ObjectCorrupt { key: self.key.clone(), reason }
    }

    /// A failed read: the store's own failure when the store failed, else damage (age refuses altered or cut
    /// bytes).
    fn read_error(&self, e: io::Error) -> Error {
        if let Some(store) = lock(&self.stored).failed.take() {
            return store_error(&self.location, &self.key, store);
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return self.corrupt(format!("it ends early ({e})"));
        }
        self.corrupt(format!("it fails age authentication: bytes were altered or the pack is truncated ({e})"))
    }
}

/// The store failed under the pack: its own error when its reader passed one through, else a read error.
fn store_error(location: &str, key: &str, e: io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(error) => error,
        Err(e) => crate::store::read_error(location, key, e),
    }
}
