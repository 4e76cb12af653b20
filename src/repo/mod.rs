//! The repository: what keys mean, how snapshots are found, and the commit rule.
//!
//! Layout (docs/repository-format.md is the reference):
//! ```text
//! config.json                                  format version and repository id (plain JSON)
//! objects/<snapshot>/<source>/<role file>      data: age(zstd(stream))
//! snapshots/<snapshot>.json                    the manifest, written last: its presence *is* the commit
//! drills/<drill>.json.age                      a restore drill's record, encrypted (drill_record.rs)
//! attempts/<attempt>.json.age                  a backup attempt's outcome, encrypted (attempt_record.rs)
//! locks/<lock>.json                            a writer's lease lock (lock.rs)
//! ```
//! Objects of a snapshot whose manifest was never written belong to no snapshot: nothing lists or restores
//! them, and a failed backup deletes them on its way out (prune sweeps up after a crash).

pub mod attempt_record;
pub mod drill_record;
pub mod lock;
pub mod manifest;
pub(crate) mod snapshot_id;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::store::{self, Store};
use attempt_record::AttemptRecord;
use drill_record::DrillRecord;
use manifest::{CHUNKED_FORMAT_VERSION, FORMAT_VERSION, Manifest, ObjectRole, PrivateManifest};
use snapshot_id::{Selector, SnapshotId};

const CONFIG_KEY: &str = "config.json";
const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Where every snapshot's objects live: `objects/<snapshot>/...`.
pub const OBJECTS_PREFIX: &str = "objects/";
const DRILLS_PREFIX: &str = "drills/";
const DRILL_SUFFIX: &str = ".json.age";
/// Where backup attempts are recorded: `attempts/<attempt id>.json.age`.
pub const ATTEMPTS_PREFIX: &str = "attempts/";
const ATTEMPT_SUFFIX: &str = ".json.age";
/// Manifests are small (sizes and hashes); anything bigger is not one of ours.
const MANIFEST_LIMIT: u64 = 64 << 20;

/// The repository's own small config object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RepositoryInfo {
    format: u32,
    id: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn Store>,
    /// The repository's random id (from `config.json`): names its cache on a backing-up host.
    id: String,
    /// When `dr init` made it (from `config.json`).
    created_at: Option<DateTime<Utc>>,
}

impl Repository {
    /// Creates a repository in an empty location.
    pub async fn init(store: Arc<dyn Store>) -> Result<Repository> {
        if store.head(CONFIG_KEY).await?.is_some() {
            return Err(Error::RepositoryExists { location: store.location().to_string() });
        }
        let info = RepositoryInfo {
            format: FORMAT_VERSION,
            id: format!("{:032x}", rand::random::<u128>()),
            created_at: Utc::now(),
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::io("encoding config.json", e.into()))?;
        store.put(CONFIG_KEY, Bytes::from(json)).await?;
        Ok(Repository { store, id: info.id, created_at: Some(info.created_at) })
    }

    /// Opens an initialized repository.
    pub async fn open(store: Arc<dyn Store>) -> Result<Repository> {
        let bytes = match store::get_bytes(store.as_ref(), CONFIG_KEY, 1 << 20).await {
            Ok(bytes) => bytes,
            Err(Error::ObjectMissing { .. }) => {
                return Err(Error::RepositoryNotInitialized { location: store.location().to_string() });
            }
            Err(e) => return Err(e),
        };
        let info: RepositoryInfo = serde_json::from_slice(&bytes)
            .map_err(|e| Error::ObjectCorrupt { key: CONFIG_KEY.to_string(), reason: e.to_string() })?;
        if info.format > FORMAT_VERSION {
            return Err(Error::RepositoryFormatTooNew {
                key: CONFIG_KEY.to_string(),
                format: info.format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Repository { store, id: info.id, created_at: Some(info.created_at) })
    }

    /// The repository's id: 32 hex digits, random, fixed at `dr init`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the repository was initialized.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The store, shared: for the writers and readers that outlive one call (packs upload in the background).
    pub fn shared_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn location(&self) -> &str {
        self.store.location()
    }

    pub fn object_key(snapshot: &SnapshotId, source: &str, role: ObjectRole) -> String {
        format!("{OBJECTS_PREFIX}{snapshot}/{source}/{}", role.file_name())
    }

    fn manifest_key(snapshot: &SnapshotId) -> String {
        format!("{SNAPSHOTS_PREFIX}{snapshot}.json")
    }

    /// Deletes a snapshot's manifest: from this moment the snapshot no longer exists, and its objects belong to
    /// no snapshot (prune deletes them next).
    pub async fn forget(&self, id: &SnapshotId) -> Result<()> {
        self.store.delete(&Self::manifest_key(id)).await
    }

    /// Ids of every committed snapshot, oldest first.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.snapshot_sizes().await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Ids of every committed snapshot with the size of its manifest, oldest first.
    pub async fn snapshot_sizes(&self) -> Result<Vec<(SnapshotId, u64)>> {
        self.ids_between(SNAPSHOTS_PREFIX, ".json").await
    }

    /// The ids named by the keys `<prefix><id><suffix>`, with the objects' sizes, sorted by id (so oldest
    /// first); other keys are ignored.
    async fn ids_between(&self, prefix: &str, suffix: &str) -> Result<Vec<(SnapshotId, u64)>> {
        let mut ids: Vec<(SnapshotId, u64)> = self
            .store
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|meta| Some((meta.key.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?, meta.size)))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ids)
    }

    pub async fn manifest(&self, id: &SnapshotId) -> Result<Manifest> {
        let key = Self::manifest_key(id);
        let bytes = store::get_bytes(self.store(), &key, MANIFEST_LIMIT).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::ObjectCorrupt { key: key.clone(), reason: format!("not a valid manifest: {e}") })?;
        if &manifest.id != id {
            return Err(Error::ObjectCorrupt { key, reason: format!("it describes snapshot {}", manifest.id) });
        }
        if manifest.format > CHUNKED_FORMAT_VERSION {
            return Err(Error::ObjectCorrupt {
                key,
                reason: format!(
                    "manifest format {} is newer than this dr understands ({CHUNKED_FORMAT_VERSION}); upgrade dr",
                    manifest.format
                ),
            });
        }
        // The object keys are repository data here, not a user's input: a bad one is damage (exit 1), never the
        // usage error (exit 2) the store gives for a bad key it is asked for.
        if let Some(bad) = manifest.objects().find(|object| store::check_key(&object.key).is_err()) {
            return Err(Error::ObjectCorrupt { key, reason: format!("it names an invalid object key {:?}", bad.key) });
        }
        Ok(manifest)
    }

    /// Decrypts a manifest's private half.
    pub fn private(&self, manifest: &Manifest, identities: &Identities) -> Result<PrivateManifest> {
        let what = format!("the manifest of snapshot {}", manifest.id);
        let json = identities.open(&manifest.private, &what).map_err(|e| match e {
            // Name the manifest by its key, and only the first line of age's explanation.
            Error::ObjectCorrupt { reason, .. } => Error::ObjectCorrupt {
                key: Self::manifest_key(&manifest.id),
                reason: format!(
                    "its encrypted part is damaged ({})",
                    reason.lines().next().unwrap_or_default().trim_end_matches('.')
                ),
            },
            other => other,
        })?;
        serde_json::from_slice(&json).map_err(|e| Error::ObjectCorrupt {
            key: Self::manifest_key(&manifest.id),
            reason: format!("private part: {e}"),
        })
    }

    /// Encrypts the private half for a manifest under construction.
    pub fn seal_private(recipients: &Recipients, private: &PrivateManifest) -> Result<String> {
        let json = serde_json::to_vec(private).map_err(|e| Error::io("encoding manifest", e.into()))?;
        recipients.seal(&json).map_err(|e| Error::io("encrypting the manifest", e))
    }

    /// Writes the manifest: from this moment the snapshot exists.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::io("encoding manifest", e.into()))?;
        self.store.put(&Self::manifest_key(&manifest.id), Bytes::from(json)).await
    }

    /// Deletes the objects of a snapshot that was never committed (best effort: prune catches the rest).
    pub async fn discard_uncommitted(&self, id: &SnapshotId) {
        if self.store.head(&Self::manifest_key(id)).await.ok().flatten().is_some() {
            return;
        }
        let prefix = format!("{OBJECTS_PREFIX}{id}/");
        let Ok(objects) = self.store.list(&prefix).await else {
            return;
        };
        for object in objects {
            if let Err(e) = self.store.delete(&object.key).await {
                tracing::warn!(key = %object.key, error = %e, "could not delete an object of a failed backup");
            }
        }
    }

    /// Where a drill's record is stored: `drills/<id>.json.age`.
    pub fn drill_key(id: &SnapshotId) -> String {
        format!("{DRILLS_PREFIX}{id}{DRILL_SUFFIX}")
    }

    /// Stores a drill's record, encrypted to `recipients`.
    pub async fn save_drill(&self, recipients: &Recipients, record: &DrillRecord) -> Result<String> {
        self.save_sealed(recipients, Self::drill_key(&record.id), record, "drill record").await
    }

    /// Ids of every stored drill record, oldest first.
    pub async fn drill_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.ids_between(DRILLS_PREFIX, DRILL_SUFFIX).await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Reads and decrypts one drill record.
    pub async fn drill(&self, id: &SnapshotId, identities: &Identities) -> Result<DrillRecord> {
        self.open_record(Self::drill_key(id), identities, "drill record", id).await
    }

    fn attempt_key(id: &SnapshotId) -> String {
        format!("{ATTEMPTS_PREFIX}{id}{ATTEMPT_SUFFIX}")
    }

    /// Stores (or replaces) a backup attempt's record, encrypted to `recipients`.
    pub async fn save_attempt(&self, recipients: &Recipients, record: &AttemptRecord) -> Result<String> {
        self.save_sealed(recipients, Self::attempt_key(&record.id), record, "attempt record").await
    }

    /// Ids of every stored attempt record, oldest first.
    pub async fn attempt_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.ids_between(ATTEMPTS_PREFIX, ATTEMPT_SUFFIX).await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Deletes one attempt record (`dr prune` expiring history).
    pub async fn forget_attempt(&self, id: &SnapshotId) -> Result<()> {
        self.store.delete(&Self::attempt_key(id)).await
    }

    /// Reads and decrypts one attempt record.
    pub async fn attempt(&self, id: &SnapshotId, identities: &Identities) -> Result<AttemptRecord> {
        self.open_record(Self::attempt_key(id), identities, "attempt record", id).await
    }

    /// Stores a small record (a drill's, a backup attempt's) as JSON encrypted to `recipients`, under `key`.
    async fn save_sealed<T: Serialize>(
        &self,
        recipients: &Recipients,
        key: String,
        record: &T,
        what: &str,
    ) -> Result<String> {
        let json =
            serde_json::to_vec_pretty(record).map_err(|e| Error::io(format!("encoding the {what}"), e.into()))?;
        let sealed = recipients.seal(&json).map_err(|e| Error::io(format!("encrypting the {what}"), e))?;
        self.store.put(&key, Bytes::from(sealed)).await?;
        Ok(key)
    }

    /// Reads, decrypts and parses a record that [`Self::save_sealed`] stored.
    async fn open_record<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
        identities: &Identities,
        what: &str,
        id: &SnapshotId,
    ) -> Result<T> {
        let json = self.open_sealed(&key, identities, &format!("{what} {id}")).await?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::ObjectCorrupt { key, reason: format!("not a valid {what}: {e}") })
    }

    /// Reads a small ASCII-armored age object and decrypts it; damage is named by its key, with the first line
    /// of age's explanation.
    async fn open_sealed(&self, key: &str, identities: &Identities, what: &str) -> Result<Vec<u8>> {
        let bytes = store::get_bytes(self.store(), key, MANIFEST_LIMIT).await?;
        let armored = String::from_utf8(bytes)
            .map_err(|_| Error::ObjectCorrupt { key: key.to_string(), reason: "not ASCII-armored age".into() })?;
        identities.open(&armored, what).map_err(|e| match e {
            Error::ObjectCorrupt { reason, .. } => Error::ObjectCorrupt {
                key: key.to_string(),
                reason: reason.lines().next().unwrap_or_default().trim_end_matches('.').to_string(),
            },
            other => other,
        })
    }

    /// Finds the snapshot `selector` names.
    pub async fn resolve(&self, selector: &Selector) -> Result<SnapshotId> {
        let ids = self.snapshot_ids().await?;
        resolve_in(&ids, selector)
    }
}

fn resolve_in(ids: &[SnapshotId], selector: &Selector) -> Result<SnapshotId> {
    if ids.is_empty() {
        return Err(Error::NoSnapshots);
    }
    let not_found = || Error::SnapshotNotFound { selector: selector.to_string() };
    match selector {
        Selector::Latest => ids.last().cloned().ok_or_else(not_found),
        Selector::AtOrBefore(time) => ids.iter().rev().find(|id| id.time() <= *time).cloned().ok_or_else(|| {
            // `ids` is sorted and not empty: the first is the oldest, the one to offer instead.
            let oldest = &ids[0];
            Error::SnapshotTooEarly { time: *time, oldest: oldest.to_string(), oldest_time: oldest.time() }
        }),
        Selector::Id(prefix) => {
            if let Some(exact) = ids.iter().find(|id| id.as_str() == prefix) {
                return Ok(exact.clone());
            }
            let matches: Vec<&SnapshotId> = ids.iter().filter(|id| id.as_str().starts_with(prefix.as_str())).collect();
            match matches.as_slice() {
                [] => Err(not_found()),
                [one] => Ok((*one).clone()),
                many => Err(Error::SnapshotAmbiguous {
                    prefix: prefix.clone(),
                    matches: many.iter().map(|id| id.to_string()).collect(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn ids(texts: &[&str]) -> Vec<SnapshotId> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn selectors_resolve_against_a_timeline() {
        let all = ids(&["20261120T010000Z-aaaaaa", "20261121T010000Z-bbbbbb", "20261121T020000Z-cccccc"]);
        let pick = |s: &str| resolve_in(&all, &s.parse().unwrap()).map(|id| id.to_string());
        assert_eq!(pick("latest").unwrap(), "20261121T020000Z-cccccc");
        assert_eq!(pick("2026-11-21T01:30:00Z").unwrap(), "20261121T010000Z-bbbbbb");
        assert_eq!(pick("2026-11-21T01:00:00Z").unwrap(), "20261121T010000Z-bbbbbb");
        let early = pick("2026-11-19T00:00:00Z").unwrap_err();
        assert!(matches!(&early, Error::SnapshotTooEarly { oldest, .. } if oldest == "20261120T010000Z-aaaaaa"));
        assert_eq!(
            early.to_string(),
            "no snapshot was taken at or before 2026-11-19 00:00:00 UTC: the oldest is 20261120T010000Z-aaaaaa \
             (taken 2026-11-20 01:00:00 UTC)"
        );
        assert_eq!(pick("20261120").unwrap(), "20261120T010000Z-aaaaaa");
        assert!(matches!(pick("20261121"), Err(Error::SnapshotAmbiguous { .. })));
        assert!(matches!(pick("2027"), Err(Error::SnapshotNotFound { .. })));
        assert!(matches!(resolve_in(&[], &Selector::Latest), Err(Error::NoSnapshots)));
    }

    #[tokio::test]
    async fn a_repository_is_initialized_once_and_must_be_initialized_to_open() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        assert!(matches!(Repository::open(store.clone()).await, Err(Error::RepositoryNotInitialized { .. })));
        Repository::init(store.clone()).await.unwrap();
        assert!(matches!(Repository::init(store.clone()).await, Err(Error::RepositoryExists { .. })));
        let repo = Repository::open(store).await.unwrap();
        assert!(repo.snapshot_ids().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_manifest_naming_an_invalid_object_key_is_corrupt_not_a_usage_error() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let repo = Repository::init(store).await.unwrap();
        let id = SnapshotId::new(Utc::now());
        let tampered = "objects/../config.json".to_string();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: id.clone(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            hostname: "host".into(),
            dr_version: "0".into(),
            sources: vec![crate::repo::manifest::SourceEntry {
                format: None,
                chunked: None,
                name: "app".into(),
                kind: crate::repo::manifest::SourceKind::Postgres,
                consistent_at: Utc::now(),
                objects: vec![crate::repo::manifest::ObjectEntry {
                    key: tampered.clone(),
                    role: ObjectRole::PgDump,
                    stored_size: 1,
                    sha256: String::new(),
                    plain_size: 1,
                }],
                incomplete_files: 0,
            }],
            private: String::new(),
        };
        repo.commit(&manifest).await.unwrap();

        // Asked directly, the store calls the key a usage error (exit 2): right for a key a user typed.
        let asked = repo.store().get(&tampered).await.map(|_| ()).unwrap_err();
        assert_eq!(asked.exit_code(), 2, "{asked}");
        // Read from a manifest, the same key is damage to the repository (exit 1), named by the manifest's key.
        let err = repo.manifest(&id).await.unwrap_err();
        assert!(matches!(&err, Error::ObjectCorrupt { key, .. } if *key == Repository::manifest_key(&id)), "{err}");
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("invalid object key"), "{err}");
    }
}
