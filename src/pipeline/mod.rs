//! The streaming data path between a source (pg_dump, a tar stream) and the store.
//!
//! ```text
//! backup:   source ──Write──▶ zstd ─▶ age ─▶ sha256+count ─▶ 1 MiB chunks ─▶ bounded channel ─▶ ObjectWriter
//!           (blocking thread: compression and encryption are CPU work)                (async task)
//! restore:  ObjectReader ─▶ sync bridge ─▶ sha256+count ─▶ age ─▶ read-ahead ─▶ zstd ──Read──▶ consumer
//!           (read-ahead thread: store, hash, decryption)       (blocking thread: zstd, pg_restore's pipe, tar)
//! ```
//!
//! A pack of chunks (`chunks::pack`) skips the zstd layer ([`Encoding::Encrypted`]): its chunks are zstd frames
//! already, each compressed alone so that one can be read without the others.
//!
//! Memory is bounded by fixed budgets: the channel holds at most [`CHANNEL_CHUNKS`] chunks of [`CHUNK_SIZE`],
//! age works in 64 KiB chunks, and zstd's buffers depend on the level, thread count and job size (1 MiB),
//! never on the data size.
//! The SHA-256 is taken over the stored (encrypted) bytes, so `sha256sum` on an object checks it without a key.

mod child;
mod decode;
mod encode;
mod read_ahead;

use std::io;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub use child::{ChildFailure, ChildReader, ChildWriter, child_failure};
pub use decode::{DecodeReader, download, open_decoder};
pub(crate) use encode::Uploaded;
pub use encode::{EncodeWriter, Encoding, UploadHandle, begin_encoded_upload, begin_upload, settle, upload};

/// Size of the pieces handed to the store.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks in flight between the encoder thread and the store.
pub const CHANNEL_CHUNKS: usize = 4;

/// Each zstd worker holds a few MiB (its 1 MiB jobs and its window), so "one per CPU" stops here: memory stays
/// within budget on a big host, and four workers at level 3 already outrun pg_dump's output.
pub const AUTO_THREADS_MAX: u32 = 4;

/// Reads until `buffer` is full or the input ends (readers return short reads); how many bytes were read.
pub(crate) fn read_up_to(reader: &mut impl io::Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// zstd settings for the encoder.
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub level: i32,
    /// Worker threads; 0 means one per CPU.
    pub threads: u32,
}

impl Compression {
    pub fn from_config(config: &crate::config::CompressionConfig) -> Compression {
        Compression { level: config.level, threads: config.threads }
    }

    /// Checks `[compression]`. Levels 20-22 ("ultra") need windows of up to 128 MiB per thread: outside dr's
    /// memory budget.
    pub fn validate(config: &crate::config::CompressionConfig) -> crate::Result<()> {
        if (1..=19).contains(&config.level) {
            return Ok(());
        }
        Err(crate::Error::ConfigInvalid(format!(
            "[compression] level = {} is out of range; use 1 (fastest) to 19 (smallest)",
            config.level
        )))
    }

    /// Workers for `threads = 0`: one per CPU, up to [`AUTO_THREADS_MAX`].
    fn worker_threads(&self) -> u32 {
        if self.threads > 0 {
            return self.threads;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        cpus.min(AUTO_THREADS_MAX)
    }
}

/// What the pipeline learned about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes in the store (the age file).
    pub stored_size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Bytes of the source stream before compression.
    pub plain_size: u64,
}

/// Running SHA-256 and byte count over a stream, shared between the layer that sees the bytes and the code
/// that reads the result at the end (the layers own their inner streams, so the tally cannot be reached by
/// unwrapping them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    inner: Arc<Mutex<TallyState>>,
}

#[derive(Debug, Default)]
struct TallyState {
    hasher: Sha256,
    bytes: u64,
    /// The first error from the layer under the tally (the store), as opposed to the layers above it: the
    /// original, which may carry the store's own [`Error`](crate::Error).
    source_error: Option<io::Error>,
}

impl Tally {
    fn update(&self, data: &[u8]) {
        let mut state = self.lock();
        state.hasher.update(data);
        state.bytes += data.len() as u64;
    }

    /// Keeps the store's error and returns a stand-in (same kind and text) for the layers above.
    fn record_source_error(&self, e: io::Error) -> io::Error {
        let stand_in = io::Error::new(e.kind(), e.to_string());
        self.lock().source_error.get_or_insert(e);
        stand_in
    }

    fn take_source_error(&self) -> Option<io::Error> {
        self.lock().source_error.take()
    }

    fn finish(&self) -> (u64, String) {
        let state = self.lock();
        (state.bytes, hex::encode(state.hasher.clone().finalize()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
