//! `dr verify`: read snapshots back and prove every object is whole.
//!
//! Per object: it exists, its SHA-256 and size match the manifest, it decrypts and decompresses to the end
//! with the recorded plaintext size, and its content has the right shape: a pg_dump archive header, a tar
//! stream whose counts match the manifest, an index of valid lines, SQL text. Every bad object is named;
//! one bad object does not stop the others from being checked. Files stored incomplete (they changed while
//! the backup read them) are listed, not counted as damage. With `--all`, drill records are read too.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use serde::Serialize;

pub use super::chunked::verify::ReadPacks;
use super::chunked::verify::{TreeToCheck, check_trees};
use crate::config::Config;
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::files::IndexEntry;
use crate::pipeline::{self, DecodeReader};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::manifest::{FilesDetails, ObjectEntry, ObjectRole, PrivateManifest, SourceDetails};
use crate::repo::snapshot_id::{Selector, SnapshotId};

#[derive(Debug, Clone)]
pub enum VerifySelection {
    One(Selector),
    All,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub snapshots: Vec<SnapshotVerdict>,
    /// With `--all`, every drill record: decrypted and parsed (they are what `dr report` is made of).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<DrillVerdict>,
    /// With `--all`, every change stream generation: each segment read whole and parsed, the chain checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::stream::verify::StreamVerdict>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.snapshots.iter().all(SnapshotVerdict::ok)
            && self.drills.iter().all(|d| d.error.is_none())
            && self.streams.iter().all(|s| s.errors.is_empty())
    }

    pub fn bad_drills(&self) -> impl Iterator<Item = &DrillVerdict> {
        self.drills.iter().filter(|d| d.error.is_some())
    }

    pub fn bad_objects(&self) -> impl Iterator<Item = &ObjectVerdict> {
        self.snapshots.iter().flat_map(|s| s.objects.iter()).filter(|o| o.error.is_some())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotVerdict {
    pub snapshot: SnapshotId,
    /// A problem with the manifest itself (its private part does not decrypt, say).
    pub manifest_error: Option<String>,
    pub objects: Vec<ObjectVerdict>,
    /// Files stored incomplete because they changed while they were read, as `source: path what happened`
    /// (from the private part). Not damage: the snapshot holds what the backup could read, and says so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete_files: Vec<String>,
}

impl SnapshotVerdict {
    pub fn ok(&self) -> bool {
        self.manifest_error.is_none() && self.objects.iter().all(|o| o.error.is_none())
    }
}

/// One drill record (`drills/<id>.json.age`): whether it decrypts and parses.
#[derive(Debug, Clone, Serialize)]
pub struct DrillVerdict {
    pub drill: SnapshotId,
    pub key: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectVerdict {
    pub source: String,
    pub key: String,
    pub role: ObjectRole,
    pub stored_size: u64,
    pub plain_size: u64,
    pub error: Option<String>,
    /// The manifest's entry, for the checks that follow the object's own (a tree's chunks).
    #[serde(skip)]
    entry: ObjectEntry,
}

/// Verifies under a shared repository lock (only its `[lock]` settings are read from `config`), so that a prune
/// cannot delete what is being read; losing the lock stops the verification rather than report deleted
/// objects as damage.
pub async fn verify(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    selection: &VerifySelection,
    read_packs: ReadPacks,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let lock = repo.lock(LockKind::Shared, &LockOptions::from_config(&config.lock, "verify")).await?;
    let report = lock.while_held(verify_selection(repo, identities, selection, read_packs, progress)).await;
    let _ = lock.release().await;
    report
}

async fn verify_selection(
    repo: &Repository,
    identities: Arc<Identities>,
    selection: &VerifySelection,
    read_packs: ReadPacks,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let ids = match selection {
        VerifySelection::All => {
            let ids = repo.snapshot_ids().await?;
            if ids.is_empty() {
                return Err(Error::NoSnapshots);
            }
            ids
        }
        VerifySelection::One(selector) => vec![repo.resolve(selector).await?],
    };
    let mut snapshots = Vec::new();
    for id in ids {
        snapshots.push(verify_snapshot(repo, &identities, &id, progress).await?);
    }
    verify_chunked(repo, &identities, &mut snapshots, read_packs, progress).await?;
    let (drills, streams) = match selection {
        VerifySelection::All => {
            (verify_drills(repo, &identities).await?, crate::stream::verify::verify(repo, &identities).await?)
        }
        VerifySelection::One(_) => (Vec::new(), Vec::new()),
    };
    Ok(VerifyReport { snapshots, drills, streams })
}

/// Reads every drill record: a damaged one is named (the report would only list it as unreadable).
///
/// Drill records are read after the snapshots, whose manifests all opened with this identity (the wrong one
/// stops the verification there), and are encrypted to the same recipients. So a record this identity cannot
/// open had its age header altered (one changed byte in a recipient stanza is enough) or was replaced:
/// damage, named like any other, not the wrong key.
async fn verify_drills(repo: &Repository, identities: &Identities) -> Result<Vec<DrillVerdict>> {
    let mut verdicts = Vec::new();
    for id in repo.drill_ids().await? {
        let key = Repository::drill_key(&id);
        let error = match repo.drill(&id, identities).await {
            Ok(_) => None,
            Err(e @ (Error::ObjectCorrupt { .. } | Error::ObjectMissing { .. })) => Some(e.to_string()),
            Err(Error::WrongIdentity { .. }) => Some(
                Error::ObjectCorrupt {
                    key: key.clone(),
                    reason: "its age header has no recipient this identity can open, although the snapshots' \
                             manifests opened with it: the header was altered or the record replaced"
                        .to_string(),
                }
                .to_string(),
            ),
            Err(e) => return Err(e),
        };
        verdicts.push(DrillVerdict { key, drill: id, error });
    }
    Ok(verdicts)
}

async fn verify_snapshot(
    repo: &Repository,
    identities: &Arc<Identities>,
    id: &SnapshotId,
    progress: &dyn Progress,
) -> Result<SnapshotVerdict> {
    let manifest = match repo.manifest(id).await {
        Ok(manifest) => manifest,
        Err(e @ (Error::ObjectCorrupt { .. } | Error::ObjectMissing { .. })) => {
            return Ok(SnapshotVerdict {
                snapshot: id.clone(),
                manifest_error: Some(e.to_string()),
                objects: Vec::new(),
                incomplete_files: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    let private = match repo.private(&manifest, identities) {
        Ok(private) => Some(private),
        // The wrong key is the user's problem, not the repository's: stop with that message.
        Err(e @ Error::WrongIdentity { .. }) => return Err(e),
        Err(e) => {
            return Ok(SnapshotVerdict {
                snapshot: id.clone(),
                manifest_error: Some(e.to_string()),
                objects: Vec::new(),
                incomplete_files: Vec::new(),
            });
        }
    };
    let mut objects = Vec::new();
    for source in &manifest.sources {
        for object in &source.objects {
            let files = private.as_ref().and_then(|p: &PrivateManifest| p.files(&source.name)).cloned();
            let task = progress.task(&format!("{} {}", source.name, object.role.file_name()), Some(object.plain_size));
            let outcome =
                pipeline::download(repo.store(), &object.key, identities.clone(), object.expected(), task.clone(), {
                    let role = object.role;
                    move |decoder| check_content(role, decoder, files.as_ref())
                })
                .await;
            let error = match outcome {
                Ok(()) => None,
                Err(e @ Error::WrongIdentity { .. }) => return Err(e),
                Err(e) => Some(e.to_string()),
            };
            task.finish(if error.is_some() { "BAD" } else { "ok" });
            objects.push(verdict(&source.name, object, error));
        }
    }
    let incomplete_files = private
        .iter()
        .flat_map(|p| p.sources.iter())
        .filter_map(|s| match s {
            SourceDetails::Files(files) => Some(files),
            SourceDetails::Postgres(_) => None,
        })
        .flat_map(|files| files.incomplete.iter().map(|f| format!("{}: {}", files.name, f.describe())))
        .collect();
    Ok(SnapshotVerdict { snapshot: id.clone(), manifest_error: None, objects, incomplete_files })
}

/// Checks the chunks of every chunked source's tree whose object read back whole: packs are shared between
/// snapshots, so each is read once for all of them. A problem is the tree object's error.
async fn verify_chunked(
    repo: &Repository,
    identities: &Arc<Identities>,
    snapshots: &mut [SnapshotVerdict],
    read_packs: ReadPacks,
    progress: &dyn Progress,
) -> Result<()> {
    let mut places = Vec::new();
    let mut trees = Vec::new();
    for (s, snapshot) in snapshots.iter().enumerate() {
        for (o, object) in snapshot.objects.iter().enumerate() {
            if object.role == ObjectRole::Tree && object.error.is_none() {
                places.push((s, o));
                trees.push(TreeToCheck { object: object.entry.clone() });
            }
        }
    }
    if trees.is_empty() {
        return Ok(());
    }
    let reader = super::chunked::chunked_reader(repo, identities).await?;
    let problems = check_trees(&reader, &trees, read_packs, progress).await?;
    for ((s, o), problem) in places.into_iter().zip(problems) {
        snapshots[s].objects[o].error = problem;
    }
    Ok(())
}

fn verdict(source: &str, object: &ObjectEntry, error: Option<String>) -> ObjectVerdict {
    ObjectVerdict {
        source: source.to_string(),
        key: object.key.clone(),
        role: object.role,
        stored_size: object.stored_size,
        plain_size: object.plain_size,
        error,
        entry: object.clone(),
    }
}

/// Checks that the plaintext has the shape its role promises.
pub(crate) fn check_content(role: ObjectRole, decoder: &mut DecodeReader, files: Option<&FilesDetails>) -> Result<()> {
    let key = decoder.key().to_string();
    let corrupt = |reason: String| Error::ObjectCorrupt { key: key.clone(), reason };
    let read_error = |e: io::Error| corrupt(e.to_string());
    match role {
        ObjectRole::PgDump => {
            let mut magic = [0u8; 5];
            decoder.read_exact(&mut magic).map_err(read_error)?;
            if &magic != b"PGDMP" {
                return Err(corrupt("it is not a pg_dump custom-format archive".into()));
            }
        }
        ObjectRole::Globals => {
            let mut text = String::new();
            decoder.read_to_string(&mut text).map_err(|e| corrupt(format!("not SQL text: {e}")))?;
        }
        ObjectRole::Index => {
            for (n, line) in io::BufReader::new(decoder).lines().enumerate() {
                let line = line.map_err(read_error)?;
                serde_json::from_str::<IndexEntry>(&line).map_err(|e| corrupt(format!("index line {}: {e}", n + 1)))?;
            }
        }
        ObjectRole::Tree => {
            serde_json::from_reader::<_, serde_json::Value>(decoder)
                .map_err(|e| corrupt(format!("not a tree: {e}")))?;
        }
        ObjectRole::Tar => {
            let mut archive = tar::Archive::new(decoder);
            let (mut files_seen, mut bytes) = (0u64, 0u64);
            for entry in archive.entries().map_err(read_error)? {
                let mut entry = entry.map_err(read_error)?;
                if entry.header().entry_type().is_file() {
                    files_seen += 1;
                    bytes += io::copy(&mut entry, &mut io::sink()).map_err(read_error)?;
                }
            }
            if let Some(expected) = files
                && (expected.files, expected.bytes) != (files_seen, bytes)
            {
                return Err(corrupt(format!(
                    "it holds {files_seen} files / {bytes} bytes, the manifest says {} / {}",
                    expected.files, expected.bytes
                )));
            }
        }
    }
    Ok(())
}
