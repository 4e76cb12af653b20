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
pub mod index;
pub mod keys;
pub mod pack;

pub use chunker::{Chunker, ChunkerError, for_each_chunk};
pub use index::{ChunkIndex, ChunkLocation, INDEX_PREFIX, IndexReader, PackInfo, index_key, write_index};
pub use keys::{CHUNKING_OBJECT, ChunkId, ChunkKeys, ChunkSizes, Chunking, DEDUP_KEY_OBJECT, DedupKey};
pub use pack::{
    FrameCompressor, PACKS_PREFIX, PackChunk, PackContents, PackEntry, PackRecord, PackWriter, compress_frame,
    pack_key, read_indexed_pack, read_pack,
};
