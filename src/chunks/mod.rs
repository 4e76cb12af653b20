//! Content-addressed storage for chunked files sources: keyed chunk ids, content-defined chunking, packs and
//! the index (the formats are in docs/repository-format.md).
//!
//! ```text
//! file ─▶ Chunker ─▶ chunk ─▶ DedupKey::chunk_id ─▶ in the index? ─yes─▶ reference only
//!                                                        │ no
//!                                                        ▼
//!                                   compress_frame ─▶ PackWriter ─▶ packs/… (age, streamed)
//!                                                        │ closed packs
//!                                                        ▼
//!                                                  write_index ─▶ index/… (before the manifest)
//! ```
//!
//! Why it is built this way:
//! - **No identity needed to deduplicate.** A backing-up host holds the recipients and the dedup key
//!   (`keys`): the key computes chunk ids and opens the index (encrypted to a recipient derived from it),
//!   but decrypts no pack, tree or manifest. Losing the web host does not expose old backups.
//! - **Ids are keyed** (`HMAC-SHA256(id_key, plaintext)`): without the key, nobody holding the repository can
//!   test whether it contains a known file; the chunker's gear table is keyed too, so chunk sizes reveal
//!   less.
//! - **Packs**, not one object per chunk: S3 requests and per-object overhead stay low; one zstd frame per
//!   chunk keeps each chunk readable (and copyable by prune) on its own.
//! - **A compact in-memory index**: 48 bytes per chunk in a sorted `Vec`, where a hash map of strings would
//!   take several times that.

pub mod chunker;
pub mod frame;
pub mod index;
pub mod keys;
pub mod pack;
pub mod pack_stream;

pub use chunker::{Chunker, ChunkerError, for_each_chunk};
pub use frame::{FrameCompressor, compress_frame};
pub use index::{ChunkIndex, ChunkLocation, INDEX_PREFIX, IndexReader, PackInfo, index_key, write_index};
pub use keys::{
    CHUNKING_OBJECT, ChunkId, ChunkKeys, ChunkSizes, Chunking, ChunkingChoice, DEDUP_KEY_OBJECT, DedupKey,
    default_key_file,
};
pub use pack::{
    PACKS_PREFIX, PackChunk, PackContents, PackEntry, PackRecord, PackWriter, pack_key, read_indexed_pack, read_pack,
};
pub use pack_stream::PackStream;

/// The sizes `[chunking]` chooses, as the chunker takes them.
pub fn choice(config: &crate::config::ChunkingConfig) -> crate::Result<ChunkingChoice> {
    let small = |what: &str, size: Option<bytesize::ByteSize>| -> crate::Result<Option<u32>> {
        size.map(|s| {
            u32::try_from(s.as_u64())
                .map_err(|_| crate::Error::ConfigInvalid(format!("[chunking] {what} = {s} is too large for a chunk")))
        })
        .transpose()
    };
    Ok(ChunkingChoice {
        min_size: small("min_size", config.min_size)?,
        avg_size: small("avg_size", config.avg_size)?,
        max_size: small("max_size", config.max_size)?,
        pack_size: config.pack_size.map(|s| s.as_u64()),
    })
}

/// Checks `[chunking]`: the sizes are within what the chunker and the packer take, in order.
pub fn validate(config: &crate::config::ChunkingConfig) -> crate::Result<()> {
    Chunking::chosen(&DedupKey::generate(), &choice(config)?).map(|_| ())
}
