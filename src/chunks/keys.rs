//! The dedup key and what is derived from it; `chunking.json`; how a run gets both.
//!
//! A chunked backup must know which chunks the repository holds already, on a host that has only the
//! recipients (public keys) and must stay unable to read old backups. Ids made from the plaintext alone
//! (SHA-256) would let anyone holding the repository test whether it holds a given file; ids made from the
//! identity would need the identity on the backing-up host. So each repository has a random 32-byte **dedup
//! key**, kept encrypted to the recipients in `keys/dedup.age` and given to backup hosts as a file. It computes
//! chunk ids and opens the index, and decrypts no data: packs, trees and manifests stay encrypted to the
//! recipients only.
//!
//! Every secret is one `HMAC-SHA256(master, label)`, so no two uses share a key and a new use never weakens
//! an old one; `key_check` is public and tells, before anything is written, that a key file belongs to
//! another repository.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::store;

type HmacSha256 = Hmac<Sha256>;

/// The dedup key, encrypted to the repository's recipients (ASCII-armored age of `hex(master) + "\n"`).
pub const DEDUP_KEY_OBJECT: &str = "keys/dedup.age";
/// The chunking parameters and the key check: written once, after [`DEDUP_KEY_OBJECT`]; its presence commits
/// the key.
pub const CHUNKING_OBJECT: &str = "chunking.json";

const ID_LABEL: &[u8] = b"dr chunk id v1";
const GEAR_SEED_LABEL: &[u8] = b"dr gear seed v1";
const INDEX_IDENTITY_LABEL: &[u8] = b"dr index identity v1";
const KEY_CHECK_LABEL: &[u8] = b"dr key check v1";

/// A chunk's id: `HMAC-SHA256(id_key, plaintext)`. Lowercase hex in every text format.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// Why a text is not a chunk id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a chunk id (64 lowercase hex digits): {0:?}")]
pub struct NotAChunkId(pub String);

impl FromStr for ChunkId {
    type Err = NotAChunkId;

    fn from_str(text: &str) -> std::result::Result<ChunkId, NotAChunkId> {
        let not = || NotAChunkId(text.chars().take(80).collect());
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(not());
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).map_err(|_| not())?;
        Ok(ChunkId(id))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut text = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        hex::encode_to_slice(self.0, &mut text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<ChunkId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a text is not a dedup key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotADedupKey(&'static str);

/// A repository's dedup key (the master secret) and the chunk-id MAC keyed from it.
#[derive(Clone)]
pub struct DedupKey {
    master: [u8; 32],
    /// `HMAC(id_key, ·)` with its key already absorbed: each chunk id clones it.
    id_mac: HmacSha256,
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key check is public; the key never appears in output.
        write!(f, "DedupKey(key_check {})", self.key_check())
    }
}

impl PartialEq for DedupKey {
    fn eq(&self, other: &DedupKey) -> bool {
        use subtle::ConstantTimeEq;
        self.master.ct_eq(&other.master).into()
    }
}

impl Eq for DedupKey {}

impl DedupKey {
    /// A new random key (from the thread's CSPRNG, seeded by the operating system).
    pub fn generate() -> DedupKey {
        DedupKey::from_master(rand::random())
    }

    fn from_master(master: [u8; 32]) -> DedupKey {
        let id_key = derive(&master, ID_LABEL);
        DedupKey { master, id_mac: mac(&id_key) }
    }

    /// Parses `hex(master)`, as the key file and `keys/dedup.age` hold it; surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> std::result::Result<DedupKey, NotADedupKey> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(NotADedupKey("a dedup key is 64 hex digits"));
        }
        let mut master = [0u8; 32];
        hex::decode_to_slice(text, &mut master).map_err(|_| NotADedupKey("a dedup key is 64 hex digits"))?;
        Ok(DedupKey::from_master(master))
    }

    /// `hex(master)`: the key file's contents without the newline. A secret: never log it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.master)
    }

    /// The id of a chunk: `HMAC-SHA256(id_key, plaintext)`.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        let mut mac = self.id_mac.clone();
        mac.update(plaintext);
        ChunkId(mac.finalize().into_bytes().into())
    }

    /// The seed of the chunker's gear table: cut points depend on the key, so chunk sizes reveal less about
    /// known files.
    pub fn gear_seed(&self) -> u64 {
        let derived = derive(&self.master, GEAR_SEED_LABEL);
        let mut first = [0u8; 8];
        first.copy_from_slice(&derived[..8]);
        u64::from_le_bytes(first)
    }

    /// Public: 32 hex digits that tell which key this is, without revealing it.
    pub fn key_check(&self) -> String {
        hex::encode(&derive(&self.master, KEY_CHECK_LABEL)[..16])
    }

    /// The age identity that opens index objects (they are encrypted to [`DedupKey::index_recipient`] too).
    pub fn index_identity(&self) -> age::x25519::Identity {
        let secret = derive(&self.master, INDEX_IDENTITY_LABEL);
        // age's own encoding of an X25519 secret key: bech32 with the hrp "age-secret-key-", upper-cased.
        #[allow(clippy::expect_used)]
        let hrp = bech32::Hrp::parse("age-secret-key-").expect("invariant: a valid bech32 hrp");
        #[allow(clippy::expect_used)]
        let text = bech32::encode_upper::<bech32::Bech32>(hrp, &secret).expect("invariant: 32 bytes fit bech32");
        #[allow(clippy::expect_used)]
        age::x25519::Identity::from_str(&text).expect("invariant: any 32 bytes are an X25519 secret key")
    }

    /// The public half of [`DedupKey::index_identity`].
    pub fn index_recipient(&self) -> age::x25519::Recipient {
        self.index_identity().to_public()
    }

    /// Reads a key file (`hex(master)` and a newline); warns when other users may read it.
    pub fn read_file(path: &Path) -> Result<DedupKey> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading dedup key file {}", path.display()), e))?;
        warn_if_readable_by_others(path);
        DedupKey::from_hex(&text).map_err(|e| Error::DedupKeyFile { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Writes a key file: mode 0600 from its creation (a temporary file renamed into place, so a crash leaves
    /// no half-written key); an existing file is never replaced. The directory must exist.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let context = || format!("writing dedup key file {}", path.display());
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        // The default place (a state directory) may not exist yet; made private, as the key is.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // tempfile creates its files with mode 0600.
        let mut temp =
            tempfile::Builder::new().prefix(".dr-dedup-").tempfile_in(dir).map_err(|e| Error::io(context(), e))?;
        writeln!(temp, "{}", self.to_hex()).map_err(|e| Error::io(context(), e))?;
        temp.as_file().sync_all().map_err(|e| Error::io(context(), e))?;
        temp.persist_noclobber(path).map_err(|e| Error::io(context(), e.error))?;
        crate::files::sync_directory(dir).map_err(|e| Error::io(context(), e))
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    #[allow(clippy::expect_used)]
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("invariant: HMAC accepts any key length")
}

/// `HMAC-SHA256(master, label)`.
fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = mac(master);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the dedup key file is readable by other users; chmod 600 it");
    }
}

/// Minimum, average and maximum chunk size for one chunker (files or the tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// `chunking.json`: how this repository cuts and packs chunks, and which key it uses. Fixed when the key is
/// made: other sizes would cut the same files elsewhere and deduplicate nothing against what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    pub format: u32,
    pub chunk_id: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    pub tree_min_size: u32,
    pub tree_avg_size: u32,
    pub tree_max_size: u32,
    pub pack_size: u64,
    pub key_check: String,
    pub created_at: DateTime<Utc>,
    /// The object's bytes as stored (their SHA-256 keys the files cache).
    #[serde(skip)]
    stored: StoredBytes,
}

/// Bytes kept as they were stored; shown by their length only.
#[derive(Clone, Default, PartialEq, Eq)]
struct StoredBytes(Vec<u8>);

impl fmt::Debug for StoredBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

const CHUNKING_FORMAT: u32 = 1;
const CHUNK_ID_SCHEME: &str = "hmac-sha256";

impl Chunking {
    /// The defaults, for `key`: restic's chunk sizes (512 KiB to 8 MiB, 1 MiB on average) and 8 MiB packs, each
    /// one S3 PutObject of which a backup holds two (one filling, one uploading) within its 64 MiB
    /// (docs/benchmarks.md, "Chunk and pack sizes").
    pub fn default_for(key: &DedupKey) -> Chunking {
        let mut chunking = Chunking {
            format: CHUNKING_FORMAT,
            chunk_id: CHUNK_ID_SCHEME.to_string(),
            min_size: 512 << 10,
            avg_size: 1 << 20,
            max_size: 8 << 20,
            tree_min_size: 16 << 10,
            tree_avg_size: 64 << 10,
            tree_max_size: 256 << 10,
            pack_size: 8 << 20,
            key_check: key.key_check(),
            created_at: Utc::now(),
            stored: StoredBytes::default(),
        };
        // Plain data always serializes.
        chunking.stored = StoredBytes(serde_json::to_vec_pretty(&chunking).unwrap_or_default());
        chunking
    }

    /// The defaults with the sizes a `[chunking]` section chose (each one that is set), checked.
    pub fn chosen(key: &DedupKey, choice: &ChunkingChoice) -> Result<Chunking> {
        let mut chunking = Chunking::default_for(key);
        let sizes = &mut chunking;
        for (value, slot) in [
            (choice.min_size, &mut sizes.min_size),
            (choice.avg_size, &mut sizes.avg_size),
            (choice.max_size, &mut sizes.max_size),
        ] {
            if let Some(value) = value {
                *slot = value;
            }
        }
        if let Some(pack_size) = choice.pack_size {
            chunking.pack_size = pack_size;
        }
        chunking.check().map_err(|reason| Error::ConfigInvalid(format!("[chunking]: {reason}")))?;
        chunking.stored = StoredBytes(serde_json::to_vec_pretty(&chunking).unwrap_or_default());
        Ok(chunking)
    }

    /// Parses and checks the stored object.
    pub fn parse(bytes: &[u8]) -> Result<Chunking> {
        let corrupt = |reason: String| Error::ObjectCorrupt { key: CHUNKING_OBJECT.to_string(), reason };
        let format = serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| corrupt(format!("not JSON: {e}")))?
            .get("format")
            .and_then(|f| f.as_u64())
            .ok_or_else(|| corrupt("it has no format number".to_string()))?;
        if format > u64::from(CHUNKING_FORMAT) {
            return Err(Error::RepositoryFormatTooNew {
                key: CHUNKING_OBJECT.to_string(),
                format: u32::try_from(format).unwrap_or(u32::MAX),
                supported: CHUNKING_FORMAT,
            });
        }
        let mut chunking: Chunking =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a chunking.json: {e}")))?;
        chunking.check().map_err(corrupt)?;
        chunking.stored = StoredBytes(bytes.to_vec());
        Ok(chunking)
    }

    /// The bytes to store (or as they were read).
    pub fn stored_bytes(&self) -> &[u8] {
        &self.stored.0
    }

    /// SHA-256 of the stored bytes, lowercase hex: it changes whenever anything that decides chunk ids does.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.stored.0))
    }

    pub fn file_sizes(&self) -> ChunkSizes {
        ChunkSizes { min: self.min_size, avg: self.avg_size, max: self.max_size }
    }

    pub fn tree_sizes(&self) -> ChunkSizes {
        ChunkSizes { min: self.tree_min_size, avg: self.tree_avg_size, max: self.tree_max_size }
    }

    /// What the chunker and the packer need to hold (fastcdc's bounds, which it only debug-asserts).
    fn check(&self) -> std::result::Result<(), String> {
        if self.format != CHUNKING_FORMAT {
            return Err(format!("unknown format {}", self.format));
        }
        if self.chunk_id != CHUNK_ID_SCHEME {
            return Err(format!("unknown chunk id scheme {:?}", self.chunk_id));
        }
        for (what, sizes) in [("", self.file_sizes()), ("tree_", self.tree_sizes())] {
            check_sizes(sizes).map_err(|e| format!("{what}min_size/{what}avg_size/{what}max_size: {e}"))?;
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(format!("pack_size {} is outside 1 MiB to 1 GiB", self.pack_size));
        }
        if self.key_check.len() != 32 || !self.key_check.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("key_check {:?} is not 32 hex digits", self.key_check));
        }
        Ok(())
    }
}

fn check_sizes(sizes: ChunkSizes) -> std::result::Result<(), String> {
    use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
    let ChunkSizes { min, avg, max } = sizes;
    let within = |value: u32, low: usize, high: usize| (low..=high).contains(&(value as usize));
    if !within(min, MINIMUM_MIN, MINIMUM_MAX) || !within(avg, AVERAGE_MIN, AVERAGE_MAX) {
        return Err(format!("{min}/{avg}/{max} is outside what the chunker supports"));
    }
    if !within(max, MAXIMUM_MIN, MAXIMUM_MAX) || min > avg || avg > max {
        return Err(format!("{min}/{avg}/{max} is outside what the chunker supports"));
    }
    if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
        return Err(format!("{min}/{avg}/{max}: the chunker needs even sizes"));
    }
    Ok(())
}

/// Where a host keeps a repository's dedup key when `[encryption] dedup_key_file` is not set: in its state
/// directory, one file per repository, `$XDG_STATE_HOME/dr/dedup-keys/<repository id>.key`, else
/// `~/.local/state/dr/dedup-keys/...`, else `/var/lib/dr/dedup-keys/...`. State, not cache: on a host without the
/// identity, losing it stops chunked backups until `dr dedup-key` gives it back.
pub fn default_key_file(repository_id: &str) -> PathBuf {
    default_key_file_from(repository_id, |name| std::env::var_os(name))
}

fn default_key_file_from(repository_id: &str, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = set("XDG_STATE_HOME")
        .map(|d| d.join("dr"))
        .or_else(|| set("HOME").map(|d| d.join(".local/state/dr")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/dr"));
    dir.join("dedup-keys").join(format!("{repository_id}.key"))
}

/// Sizes chosen in the configuration's `[chunking]` for a repository whose chunking is being made; `None`
/// keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkingChoice {
    pub min_size: Option<u32>,
    pub avg_size: Option<u32>,
    pub max_size: Option<u32>,
    pub pack_size: Option<u64>,
}

/// What a run holds to write and read chunks: the key and the repository's chunking parameters.
#[derive(Debug, Clone)]
pub struct ChunkKeys {
    pub key: DedupKey,
    pub chunking: Chunking,
}

impl ChunkKeys {
    /// The keys of a repository that has them (`chunking.json` exists); `None` when it has none yet.
    ///
    /// The key comes from `key_file` when it is configured and present (it must belong to this repository);
    /// else from `keys/dedup.age`, opened with the identity (and then written to `key_file` if that is
    /// configured but missing, so the next run needs no identity); else [`Error::ChunkKeyMissing`].
    pub async fn load(
        repo: &Repository,
        key_file: Option<&Path>,
        identities: Option<&Identities>,
    ) -> Result<Option<ChunkKeys>> {
        let store = repo.store();
        let chunking = match store::get_bytes(store, CHUNKING_OBJECT, 1 << 20).await {
            Ok(bytes) => Chunking::parse(&bytes)?,
            Err(Error::ObjectMissing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(path) = key_file
            && path.exists()
        {
            let key = DedupKey::read_file(path)?;
            if key.key_check() != chunking.key_check {
                return Err(Error::DedupKeyMismatch {
                    path: path.to_path_buf(),
                    location: repo.location().to_string(),
                    found: key.key_check(),
                    expected: chunking.key_check.clone(),
                });
            }
            return Ok(Some(ChunkKeys { key, chunking }));
        }
        let Some(identities) = identities else {
            return Err(Error::ChunkKeyMissing {
                location: repo.location().to_string(),
                create: false,
                file_configured: key_file.is_some(),
            });
        };
        let key = read_key_object(repo, identities).await?;
        if key.key_check() != chunking.key_check {
            return Err(Error::ObjectCorrupt {
                key: DEDUP_KEY_OBJECT.to_string(),
                reason: format!(
                    "it holds a key whose key check is {}, and {CHUNKING_OBJECT} says {}",
                    key.key_check(),
                    chunking.key_check
                ),
            });
        }
        if let Some(path) = key_file {
            key.write_file(path)?;
            tracing::info!(path = %path.display(), "wrote the repository's dedup key to the dedup key file");
        }
        Ok(Some(ChunkKeys { key, chunking }))
    }

    /// Makes the keys of a repository that has none: the key file first (when configured; a key already in
    /// it is used), then `keys/dedup.age`, then `chunking.json`, whose presence commits the key. Needs a place
    /// the key can be read back from on this host: `key_file` or an identity; without either nothing is
    /// written.
    ///
    /// The caller holds the exclusive lock and has checked with [`ChunkKeys::load`], under it, that the
    /// repository still has no `chunking.json`.
    pub async fn create(
        repo: &Repository,
        recipients: &Recipients,
        key_file: Option<&Path>,
        identities_present: bool,
    ) -> Result<ChunkKeys> {
        ChunkKeys::create_chosen(repo, recipients, key_file, identities_present, &ChunkingChoice::default()).await
    }

    /// [`ChunkKeys::create`] with the sizes of `choice` (checked before anything is written).
    pub async fn create_chosen(
        repo: &Repository,
        recipients: &Recipients,
        key_file: Option<&Path>,
        identities_present: bool,
        choice: &ChunkingChoice,
    ) -> Result<ChunkKeys> {
        Chunking::chosen(&DedupKey::generate(), choice)?;
        if key_file.is_none() && !identities_present {
            return Err(Error::ChunkKeyMissing {
                location: repo.location().to_string(),
                create: true,
                file_configured: false,
            });
        }
        let key = match key_file {
            // A run that stopped after writing the file and before chunking.json left it: the same key goes on.
            Some(path) if path.exists() => DedupKey::read_file(path)?,
            Some(path) => {
                let key = DedupKey::generate();
                key.write_file(path)?;
                key
            }
            None => DedupKey::generate(),
        };
        let sealed = recipients
            .seal(format!("{}\n", key.to_hex()).as_bytes())
            .map_err(|e| Error::io(format!("encrypting {DEDUP_KEY_OBJECT}"), e))?;
        repo.store().put(DEDUP_KEY_OBJECT, Bytes::from(sealed)).await?;
        let chunking = Chunking::chosen(&key, choice)?;
        repo.store().put(CHUNKING_OBJECT, Bytes::copy_from_slice(chunking.stored_bytes())).await?;
        tracing::info!(key_check = %chunking.key_check, "created the repository's dedup key");
        Ok(ChunkKeys { key, chunking })
    }
}

/// Opens `keys/dedup.age` with the identity.
async fn read_key_object(repo: &Repository, identities: &Identities) -> Result<DedupKey> {
    let corrupt = |reason: String| Error::ObjectCorrupt { key: DEDUP_KEY_OBJECT.to_string(), reason };
    let bytes = store::get_bytes(repo.store(), DEDUP_KEY_OBJECT, 64 << 10).await?;
    let armored = String::from_utf8(bytes).map_err(|_| corrupt("not ASCII-armored age".to_string()))?;
    let plaintext = identities.open(&armored, DEDUP_KEY_OBJECT)?;
    let text = String::from_utf8(plaintext).map_err(|_| corrupt("it holds no dedup key".to_string()))?;
    DedupKey::from_hex(&text).map_err(|e| corrupt(format!("it holds no dedup key ({e})")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The key 00 01 02 … 1f. Every expected value below was computed independently with Python's standard
    /// library, not with this code:
    /// ```text
    /// import hmac, hashlib
    /// H = lambda k, m: hmac.new(k, m, hashlib.sha256).digest()
    /// master = bytes(range(32)); id_key = H(master, b"dr chunk id v1")
    /// H(id_key, b"hello").hex(); H(id_key, b"").hex()
    /// int.from_bytes(H(master, b"dr gear seed v1")[:8], "little")
    /// H(master, b"dr key check v1")[:16].hex()
    /// ```
    /// and the index identity with BIP-173's reference bech32 encoder (Python, 30 lines) of
    /// `H(master, b"dr index identity v1")` under the hrp `age-secret-key-`, upper-cased.
    fn fixed_key() -> DedupKey {
        DedupKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap()
    }

    #[test]
    fn the_default_key_file_is_per_repository_in_the_state_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let xdg = default_key_file_from("f9d7", env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]));
        assert_eq!(xdg, PathBuf::from("/s/dr/dedup-keys/f9d7.key"));
        let home = default_key_file_from("f9d7", env(&[("HOME", "/h")]));
        assert_eq!(home, PathBuf::from("/h/.local/state/dr/dedup-keys/f9d7.key"));
        assert_eq!(default_key_file_from("f9d7", env(&[])), PathBuf::from("/var/lib/dr/dedup-keys/f9d7.key"));
    }

    #[test]
    fn derivations_match_vectors_computed_with_python_hmac() {
        use age::secrecy::ExposeSecret;
        let key = fixed_key();
        assert_eq!(
            key.chunk_id(b"hello").to_string(),
            "52b9df75413d82a5f6544a284becf86c8822f6e850d5bca79d49d1ee10a76cf4"
        );
        assert_eq!(key.chunk_id(b"").to_string(), "b78dfd75906a046dc997f006ed78c29e86018e4ccfc75099de7bb9283a5d4a52");
        assert_eq!(key.gear_seed(), 15304140428707810975);
        assert_eq!(key.key_check(), "9c08bba44ac862d6ca55e14483100a8a");
        assert_eq!(
            key.index_identity().to_string().expose_secret(),
            "AGE-SECRET-KEY-19KZVPCESXNQ4L2U8362FW4QAG43F07GPA8D8MWSZ4F2TXX6HAF4Q5T3XYH"
        );
    }

    #[test]
    fn the_key_reads_back_from_hex_and_never_shows_in_debug() {
        let key = DedupKey::generate();
        let hex = key.to_hex();
        assert_eq!(DedupKey::from_hex(&format!("  {hex}\n")).unwrap(), key);
        assert_ne!(DedupKey::generate(), key);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex) && debug.contains(&key.key_check()), "{debug}");
        assert!(DedupKey::from_hex("abc").is_err());
        assert!(DedupKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn chunk_ids_print_parse_and_serialize_as_lowercase_hex() {
        let id = fixed_key().chunk_id(b"hello");
        let text = id.to_string();
        assert_eq!(text.parse::<ChunkId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ChunkId>(&format!("\"{text}\"")).unwrap(), id);
        assert!(text.to_uppercase().parse::<ChunkId>().is_err());
        assert!(text[1..].parse::<ChunkId>().is_err());
        assert!(serde_json::from_str::<ChunkId>("\"xyz\"").is_err());
    }

    #[test]
    fn the_index_identity_opens_what_is_encrypted_to_the_index_recipient() {
        use std::io::Read;
        let key = DedupKey::generate();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&key.index_recipient() as &dyn age::Recipient)).unwrap();
        let mut stored = Vec::new();
        let mut writer = encryptor.wrap_output(&mut stored).unwrap();
        writer.write_all(b"index lines").unwrap();
        writer.finish().unwrap();
        let identity = key.index_identity();
        let decryptor = age::Decryptor::new(&stored[..]).unwrap();
        let mut plaintext = Vec::new();
        decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut plaintext)
            .unwrap();
        assert_eq!(plaintext, b"index lines");
        let other = DedupKey::generate().index_identity();
        let decryptor = age::Decryptor::new(&stored[..]).unwrap();
        assert!(decryptor.decrypt(std::iter::once(&other as &dyn age::Identity)).is_err());
    }

    #[test]
    fn the_key_file_is_private_from_its_creation_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.key");
        let key = DedupKey::generate();
        key.write_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", key.to_hex()));
        assert_eq!(DedupKey::read_file(&path).unwrap(), key);
        let err = DedupKey::generate().write_file(&path).unwrap_err().to_string();
        assert!(err.contains("dedup.key"), "{err}");
        assert_eq!(DedupKey::read_file(&path).unwrap(), key);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::write(&path, "not a key\n").unwrap();
        let err = DedupKey::read_file(&path).unwrap_err();
        assert!(matches!(err, Error::DedupKeyFile { .. }) && err.to_string().contains("dedup.key"), "{err}");
    }

    #[test]
    fn chunking_json_round_trips_and_bad_values_are_corruption() {
        let key = fixed_key();
        let chunking = Chunking::default_for(&key);
        let parsed = Chunking::parse(chunking.stored_bytes()).unwrap();
        assert_eq!(parsed, chunking);
        assert_eq!(parsed.sha256(), chunking.sha256());
        assert_eq!(parsed.key_check, key.key_check());
        assert_eq!(parsed.file_sizes(), ChunkSizes { min: 524288, avg: 1048576, max: 8388608 });
        assert_eq!(parsed.tree_sizes(), ChunkSizes { min: 16384, avg: 65536, max: 262144 });
        let json: serde_json::Value = serde_json::from_slice(chunking.stored_bytes()).unwrap();
        assert_eq!(json["chunk_id"], "hmac-sha256");
        assert_eq!(json["pack_size"], 8388608);

        let with = |field: &str, value: serde_json::Value| {
            let mut json = json.clone();
            json[field] = value;
            Chunking::parse(&serde_json::to_vec(&json).unwrap())
        };
        for (field, value) in [
            ("min_size", serde_json::json!(1)),
            ("max_size", serde_json::json!(1 << 30)),
            ("avg_size", serde_json::json!(1048577)),
            ("pack_size", serde_json::json!(0)),
            ("chunk_id", serde_json::json!("sha256")),
            ("key_check", serde_json::json!("zz")),
        ] {
            let err = with(field, value).unwrap_err();
            assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if key == CHUNKING_OBJECT), "{field}: {err}");
        }
        assert!(matches!(with("format", serde_json::json!(2)), Err(Error::RepositoryFormatTooNew { .. })));
    }
}
