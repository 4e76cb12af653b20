//! Chunked files sources: the engine's side of the deduplicated format (docs/repository-format.md, "Chunked
//! files sources").
//!
//! The parts live where they belong: keys, chunking, packs and the chunk index in [`crate::chunks`]; the tree,
//! its walk, the cache and safe extraction in [`crate::files`]. This module runs them together for one source:
//! [`backup`] writes a source's new chunks into packs and its tree into the snapshot, [`restore`] puts a tree
//! back from the packs, [`verify`] proves a tree's chunks are whole.

pub(crate) mod backup;
pub(crate) mod bucket;
pub(crate) mod origin;
pub(crate) mod prune;
pub(crate) mod restore;
mod tree_stream;
pub(crate) mod verify;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chunks::{ChunkId, ChunkIndex, ChunkKeys, IndexReader};
use crate::config::Config;
use crate::crypto::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::lock::{LockKind, LockOptions};

/// The object a snapshot stores for a chunked source (role `tree`): which chunks hold the source's tree, in order,
/// and the counts a listing shows without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeObject {
    pub format: u32,
    /// The tree's JSON lines, cut into chunks (stored in packs like file data).
    pub chunks: Vec<ChunkId>,
    /// Entries in the tree: the root, directories, files, links.
    pub entries: u64,
    pub files: u64,
    /// Bytes of the files' data.
    pub bytes: u64,
    /// Bytes of the tree's JSON lines.
    pub plain_size: u64,
}

pub const TREE_FORMAT: u32 = 1;

/// The keys a backup needs for chunked sources: the repository's, created under the exclusive lock when this
/// repository has none yet (made before chunked sources existed, or initialized without recipients).
pub(crate) async fn keys_for_backup(config: &Config, repo: &Repository, recipients: &Recipients) -> Result<ChunkKeys> {
    let key_file = dedup_key_file(config, repo);
    let key_file = Some(key_file.as_path());
    // A backup host needs no identity: with its dedup key file in place the identity is not even opened.
    let identities = match key_file {
        Some(path) if path.exists() => None,
        _ => configured_identities(config)?,
    };
    if let Some(keys) = ChunkKeys::load(repo, key_file, identities.as_ref()).await? {
        return Ok(keys);
    }
    let options = LockOptions::from_config(&config.lock, "creating the dedup key");
    let lock = repo.lock(LockKind::Exclusive, &options).await?;
    // Another host may have created it while this one waited for the lock.
    let keys = match ChunkKeys::load(repo, key_file, identities.as_ref()).await {
        Ok(Some(keys)) => Ok(keys),
        Ok(None) => {
            let choice = crate::chunks::choice(&config.chunking)?;
            ChunkKeys::create_chosen(repo, recipients, key_file, identities.is_some(), &choice).await
        }
        Err(e) => Err(e),
    };
    let _ = lock.release().await;
    keys
}

/// The dedup key file of this host for `repo`: `[encryption] dedup_key_file`, else the default in the state
/// directory ([`crate::chunks::default_key_file`]).
pub fn dedup_key_file(config: &Config, repo: &Repository) -> std::path::PathBuf {
    config.encryption.dedup_key_file.clone().unwrap_or_else(|| crate::chunks::default_key_file(repo.id()))
}

/// The keys a reader needs (restore, verify, drill, prune): the identity opens `keys/dedup.age`.
pub(crate) async fn keys_for_reading(repo: &Repository, identities: &Identities) -> Result<ChunkKeys> {
    ChunkKeys::load(repo, None, Some(identities)).await?.ok_or_else(|| Error::ObjectCorrupt {
        key: crate::chunks::CHUNKING_OBJECT.to_string(),
        reason: "a snapshot has a chunked files source, but the repository has no chunking.json".to_string(),
    })
}

/// Loads the chunk index with what this host holds: the identity if it has one, else the dedup key.
pub(crate) async fn load_index(
    repo: &Repository,
    keys: &ChunkKeys,
    identities: Option<&Arc<Identities>>,
) -> Result<ChunkIndex> {
    let reader = match identities {
        Some(identities) => IndexReader::Identities(identities.clone()),
        None => IndexReader::from_key(&keys.key),
    };
    ChunkIndex::load(repo.store(), reader).await
}

/// Everything a reader of chunked sources needs, loaded with the identity.
pub(crate) async fn chunked_reader(repo: &Repository, identities: &Arc<Identities>) -> Result<restore::ChunkedReader> {
    let keys = keys_for_reading(repo, identities).await?;
    let index = load_index(repo, &keys, Some(identities)).await?;
    Ok(restore::ChunkedReader {
        repo: repo.clone(),
        identities: identities.clone(),
        keys: Arc::new(keys),
        index: Arc::new(index),
    })
}

/// The identity, when this host is configured with one (a backup host usually is not).
fn configured_identities(config: &Config) -> Result<Option<Identities>> {
    config.encryption.identity_file.as_deref().map(Identities::load).transpose()
}
