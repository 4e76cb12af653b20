//! `dr prune`: deletes the snapshots `[retention]` does not keep, then everything no snapshot references.
//!
//! Order of work, under the repository's exclusive lock (docs/retention.md is the reference):
//! 1. **Plan**, changing nothing: read every manifest and drill record; apply the policy (`retention::apply`);
//!    keep the newest snapshot that passed a drill whatever the policy says; refuse an empty policy, or one that
//!    would keep no snapshot. List `objects/` and sort what no kept manifest references into the objects of the
//!    dropped snapshots and orphans (a crashed backup's, or strays), the orphans only when older than
//!    `orphan_grace`. List the unfinished uploads older than the grace (S3's multipart uploads, a local
//!    store's hidden partial files) and, on a local store, the directories under `objects/` left empty.
//! 2. Delete the dropped snapshots' **manifests**: each snapshot disappears from every listing at once.
//! 3. Delete their **objects**, then the old orphans.
//! 4. **Abort** the stale uploads (a partial file is deleted, with the directories it leaves empty).
//! 5. Remove the **empty directories**.
//! 6. **Expire** backup attempt records older than 90 days (by the time in their names; nothing is decrypted).
//!
//! A repository with chunked files sources has a step 2b after the manifests: the packs no kept snapshot needs
//! are deleted and sparse ones repacked, after a new index is stored ([`super::chunked::prune`]).
//!
//! Each step can be repeated; a prune stopped anywhere (killed, a failed request, a lost lock) leaves at most
//! objects without a manifest, which the next prune removes. Drill records are never deleted: they are the
//! history the weekly report reads, and they are small. `--dry-run` runs step 1 alone, under a shared lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::chunked::prune::{DEFAULT_REPACK_BELOW, PackOutcome, PackPlan, PackPlanning};
use super::chunked::restore::ChunkedReader;
use super::stream_prune::{StreamPrunePlan, StreamsPlan};
use crate::chunks::ChunkKeys;
use crate::config::Config;
use crate::crypto::Identities;
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::lock::{LockKind, LockOptions, RepositoryLock};
use crate::repo::manifest::Manifest;
use crate::repo::snapshot_id::SnapshotId;
use crate::repo::{OBJECTS_PREFIX, Repository};
use crate::retention::{self, Policy};
use crate::store::{ObjectMeta, PendingUpload, UploadKind};
use std::sync::Arc;

/// Objects older than this that no snapshot references are deleted (`[retention] orphan_grace`).
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Requests in flight at once while reading manifests and deleting: enough to hide S3's latency.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Cancelling it stops the prune between two deletions (what is left is swept by the next prune).
    pub cancel: CancellationToken,
}

/// What a prune did, or with `dry_run` would do.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub policy: Policy,
    pub orphan_grace_seconds: u64,
    pub started_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Every snapshot, newest first.
    pub snapshots: Vec<SnapshotPlan>,
    /// Objects under `objects/` that no snapshot references, by directory.
    pub orphans: Vec<OrphanGroup>,
    /// Uploads a killed writer left unfinished, older than the grace: S3 multipart uploads, local partial files.
    pub uploads: Vec<UploadPlan>,
    /// Directories under `objects/` that hold nothing, older than the grace (a local store's), deepest first.
    pub empty_directories: Vec<String>,
    /// Things prune could not do that do not make it fail (e.g. a drill record it could not read).
    pub warnings: Vec<String>,
    /// What happens to the packs of chunked files sources; absent when the repository has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packs: Option<PackPlan>,
    /// What happens to the change streams of continuous sources (docs/pitr.md): the generations that lose
    /// segments, or go whole.
    pub streams: Vec<StreamPrunePlan>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Remove,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPlan {
    pub id: SnapshotId,
    /// The time in the id: what the policy goes by.
    pub time: DateTime<Utc>,
    pub action: Action,
    /// Why it is kept (every rule that keeps it), or why it goes.
    pub reasons: Vec<String>,
    /// Kept: the objects in its manifest. Removed: the objects deleted with it.
    pub objects: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrphanGroup {
    /// `objects/<dir>/`.
    pub prefix: String,
    /// Why nothing references these objects.
    pub reason: String,
    /// `remove`, or `keep` while younger than the grace.
    pub action: Action,
    /// The newest sign of life: the id's time and the objects' modification times, whichever is later.
    pub last_activity: Option<DateTime<Utc>>,
    pub keys: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UploadPlan {
    pub key: String,
    pub kind: UploadKind,
    pub initiated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub snapshots_kept: usize,
    pub snapshots_removed: usize,
    /// Objects under `objects/` deleted: the removed snapshots' and the orphans'.
    pub objects_deleted: usize,
    pub orphans_deleted: usize,
    /// Orphans left for a later prune because they are younger than the grace.
    pub orphans_young: usize,
    /// Unfinished uploads aborted (S3) or partial files deleted (a local store).
    pub uploads_aborted: usize,
    /// Backup attempt records (`attempts/`) older than the attempt history (90 days) deleted.
    pub attempts_expired: usize,
    /// Directories under `objects/` that a failed or killed backup left empty (a local store's) removed.
    pub empty_directories_removed: usize,
    /// Bytes of every object deleted, manifests and packs included (aborted uploads' parts are not counted).
    pub bytes_freed: u64,
    /// Packs deleted (dead, repacked or orphaned) and written (by repacking).
    pub packs_deleted: usize,
    pub packs_written: usize,
    /// Change segments deleted (no kept base needs them).
    pub segments_deleted: usize,
}

/// Applies `[retention]` to `repo` (see the module documentation). `identities` decrypt the drill records.
pub async fn prune(
    config: &Config,
    repo: &Repository,
    identities: &Arc<Identities>,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let policy = Policy::from_config(&config.retention);
    if policy.is_empty() {
        return Err(Error::RetentionUnset);
    }
    let grace = config.retention.orphan_grace.unwrap_or(DEFAULT_ORPHAN_GRACE);
    // A dry run only reads, but under a shared lock: a prune running meanwhile would make its plan a fiction.
    let kind = if options.dry_run { LockKind::Shared } else { LockKind::Exclusive };
    let lock_options = LockOptions::from_config(&config.lock, "prune");
    let lock = tokio::select! {
        lock = repo.lock(kind, &lock_options) => lock?,
        () = options.cancel.cancelled() => return Err(Error::Cancelled),
    };
    let packs = PackSettings {
        repack_below: config.retention.repack_below.unwrap_or(DEFAULT_REPACK_BELOW),
        recipients: &config.encryption.recipients,
    };
    let result = lock.while_held(run(repo, identities, &policy, grace, &packs, options, &lock, progress)).await;
    // A failed release is logged; the lock then expires by itself.
    let _ = lock.release().await;
    if !options.dry_run {
        crate::audit::record(config, audit_entry(&result));
    }
    result
}

/// The audit log's line for a prune: what it removed (the ids, up to a thousand), or why it stopped.
fn audit_entry(result: &Result<PruneReport>) -> crate::audit::AuditEntry {
    const LISTED: usize = 1000;
    match result {
        Ok(report) => {
            let totals = &report.totals;
            let removed: Vec<&str> =
                report.snapshots.iter().filter(|s| s.action == Action::Remove).map(|s| s.id.as_str()).collect();
            let mut detail = format!(
                "removed {} of {} snapshots and {} objects ({} orphans, {} uploads aborted), {} bytes freed",
                totals.snapshots_removed,
                totals.snapshots_removed + totals.snapshots_kept,
                totals.objects_deleted,
                totals.orphans_deleted,
                totals.uploads_aborted,
                totals.bytes_freed
            );
            if !removed.is_empty() {
                detail.push_str(&format!(": {}", removed[..removed.len().min(LISTED)].join(" ")));
                if removed.len() > LISTED {
                    detail.push_str(&format!(" and {} more", removed.len() - LISTED));
                }
            }
            crate::audit::AuditEntry::new("prune", None, None).detail(detail)
        }
        // Deleting stops at the first failure; what went before it is gone, the rest is the next prune's.
        Err(e) => crate::audit::AuditEntry::new("prune", None, Some(e.to_string())),
    }
}

/// What prune needs for the packs of chunked sources.
struct PackSettings<'a> {
    repack_below: f64,
    /// A repack writes new packs, to these.
    recipients: &'a [String],
}

#[allow(clippy::too_many_arguments)]
async fn run(
    repo: &Repository,
    identities: &Arc<Identities>,
    policy: &Policy,
    grace: Duration,
    packs: &PackSettings<'_>,
    options: &PruneOptions,
    lock: &RepositoryLock,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    // A grace too long for the calendar keeps every orphan.
    let cutoff = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|grace| started_at.checked_sub_signed(grace))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let plan = tokio::select! {
        plan = plan(repo, identities, policy, cutoff, grace, packs.repack_below) => plan?,
        () = options.cancel.cancelled() => return Err(Error::Cancelled),
    };
    let mut report = plan.report(policy, grace, started_at);
    report.dry_run = options.dry_run;
    tracing::info!(
        dry_run = options.dry_run,
        remove = report.totals.snapshots_removed,
        keep = report.totals.snapshots_kept,
        objects = report.totals.objects_deleted,
        bytes = report.totals.bytes_freed,
        "prune planned ({policy})"
    );
    if !options.dry_run {
        let steps = PruneExecutor { repo, lock, cancel: &options.cancel };
        let written_by = format!("prune {}", SnapshotId::new(started_at));
        let packed = steps.execute(plan, packs, &written_by, report.totals.bytes_freed, progress).await?;
        report.totals.packs_written = packed.packs_written as usize;
        tracing::info!(
            removed = report.totals.snapshots_removed,
            objects = report.totals.objects_deleted,
            bytes = report.totals.bytes_freed,
            uploads = report.totals.uploads_aborted,
            "prune finished"
        );
    }
    report.duration_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// The newest snapshot a drill passed on, and that drill.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    snapshot: SnapshotId,
    drill: SnapshotId,
}

/// Everything a prune will do, decided before anything is deleted.
struct PrunePlan {
    snapshots: Vec<SnapshotPlan>,
    /// Id and manifest size of each snapshot to remove.
    manifests: Vec<(SnapshotId, u64)>,
    /// Objects of the removed snapshots: deleted right after the manifests.
    dropped: Vec<ObjectMeta>,
    orphans: Vec<OrphanGroup>,
    /// The orphans old enough to go: deleted last.
    sweep: Vec<ObjectMeta>,
    uploads: Vec<PendingUpload>,
    /// Backup attempt records past the attempt history: deleted last.
    attempts: Vec<SnapshotId>,
    empty_directories: Vec<String>,
    warnings: Vec<String>,
    /// The packs' plan, and the reader that made it (it holds the index the new one replaces).
    packs: Option<(ChunkedReader, PackPlanning)>,
    streams: StreamsPlan,
}

async fn plan(
    repo: &Repository,
    identities: &Arc<Identities>,
    policy: &Policy,
    cutoff: DateTime<Utc>,
    grace: Duration,
    repack_below: f64,
) -> Result<PrunePlan> {
    let listed = repo.snapshot_sizes().await?;
    let ids: Vec<SnapshotId> = listed.iter().map(|(id, _)| id.clone()).collect();
    let manifests = read_manifests(repo, &ids).await?;
    let mut warnings = Vec::new();
    let verified = newest_verified(repo, identities, &ids, &mut warnings).await?;
    let decisions = decide(&ids, policy, verified.as_ref())?;

    let removed: HashSet<&SnapshotId> =
        decisions.iter().filter(|d| d.action == Action::Remove).map(|d| &d.id).collect();
    let kept: Vec<&Manifest> = manifests.iter().filter(|m| !removed.contains(&m.id)).collect();
    let referenced: HashSet<&str> = kept.iter().flat_map(|m| m.objects()).map(|o| o.key.as_str()).collect();
    let committed: HashSet<&SnapshotId> = ids.iter().collect();
    let objects = repo.store().list(OBJECTS_PREFIX).await?;
    let sorted = sort_objects(objects, &referenced, &committed, &removed, cutoff);

    let manifest_sizes: HashMap<&SnapshotId, u64> = listed.iter().map(|(id, size)| (id, *size)).collect();
    let by_id: HashMap<&SnapshotId, &Manifest> = manifests.iter().map(|m| (&m.id, m)).collect();
    let mut snapshots = Vec::new();
    for decision in decisions {
        let (objects, bytes) = match decision.action {
            Action::Keep => by_id.get(&decision.id).map_or((0, 0), |m| (m.objects().count(), m.stored_size())),
            Action::Remove => sorted
                .dropped
                .get(&decision.id)
                .map_or((0, 0), |objects| (objects.len(), objects.iter().map(|o| o.size).sum())),
        };
        snapshots.push(SnapshotPlan { objects, bytes, ..decision });
    }
    let manifests = snapshots
        .iter()
        .filter(|s| s.action == Action::Remove)
        .map(|s| (s.id.clone(), manifest_sizes.get(&s.id).copied().unwrap_or(0)))
        .collect();
    let leftovers = repo.store().leftovers();
    let stale_uploads = match leftovers {
        Some(leftovers) => leftovers.stale_uploads(cutoff).await,
        None => Ok(Vec::new()),
    };
    let uploads = match stale_uploads {
        Ok(uploads) => uploads,
        // Prune's other work does not depend on it; the bucket's lifecycle rule can do this part.
        Err(e @ Error::StoreAccessDenied { .. }) => {
            warnings.push(format!(
                "multipart uploads were not checked ({e}): grant s3:ListBucketMultipartUploads on the bucket, or \
                 rely on a lifecycle rule that aborts incomplete uploads (docs/s3.md)"
            ));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let attempts = crate::repo::attempt_record::expired(&repo.attempt_ids().await?, Utc::now());
    let mut empty_directories = match leftovers {
        Some(leftovers) => leftovers.empty_directories(OBJECTS_PREFIX, cutoff).await?,
        None => Vec::new(),
    };
    let packs = match ChunkKeys::load(repo, None, Some(identities)).await? {
        Some(_) => {
            let reader = crate::engine::chunked_reader(repo, identities).await?;
            let planning = super::chunked::prune::plan(&reader, &kept, repack_below, grace, Utc::now()).await?;
            if let Some(leftovers) = leftovers {
                empty_directories.extend(leftovers.empty_directories(crate::chunks::PACKS_PREFIX, cutoff).await?);
            }
            Some((reader, planning))
        }
        None => None,
    };
    let streams = super::stream_prune::plan(repo, identities, &kept, cutoff).await?;
    Ok(PrunePlan {
        streams,
        snapshots,
        manifests,
        dropped: sorted.dropped.into_values().flatten().collect(),
        orphans: sorted.orphans,
        sweep: sorted.sweep,
        uploads,
        attempts,
        empty_directories,
        warnings,
        packs,
    })
}

/// Every manifest, read `CONCURRENCY` at a time; one that cannot be read stops the prune before it deletes
/// anything, since its references are unknown.
async fn read_manifests(repo: &Repository, ids: &[SnapshotId]) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::with_capacity(ids.len());
    // Batches of plain futures rather than a stream of closures: the service runs prune in a spawned task,
    // and closures that return borrowing futures trip the compiler's `Send` inference there.
    for batch in ids.chunks(CONCURRENCY) {
        for read in futures::future::join_all(batch.iter().map(|id| repo.manifest(id))).await {
            manifests.push(read.map_err(|e| match e {
                Error::ObjectCorrupt { key, reason } => Error::PruneUnreadable { key, reason },
                Error::ObjectMissing { key } => {
                    Error::PruneUnreadable { key, reason: "it disappeared while prune was reading it".into() }
                }
                other => other,
            })?);
        }
    }
    Ok(manifests)
}

/// The newest existing snapshot that a drill passed on. A record that cannot be decrypted with these
/// identities stops the prune (with the wrong key, every record would be unreadable, and the protection
/// silently gone); a damaged one is skipped with a warning.
async fn newest_verified(
    repo: &Repository,
    identities: &Identities,
    snapshots: &[SnapshotId],
    warnings: &mut Vec<String>,
) -> Result<Option<Verified>> {
    let existing: HashSet<&SnapshotId> = snapshots.iter().collect();
    let drill_ids = repo.drill_ids().await?;
    let mut records = Vec::with_capacity(drill_ids.len());
    for batch in drill_ids.chunks(CONCURRENCY) {
        records.extend(futures::future::join_all(batch.iter().map(|id| repo.drill(id, identities))).await);
    }
    let mut best: Option<Verified> = None;
    for (id, record) in drill_ids.into_iter().zip(records) {
        let record = match record {
            Ok(record) => record,
            Err(Error::ObjectCorrupt { key, reason }) => {
                warnings.push(format!("drill record {key} was skipped: {reason}"));
                continue;
            }
            Err(Error::ObjectMissing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(snapshot) = record.snapshot.filter(|s| record.passed && existing.contains(s)) else { continue };
        if best.as_ref().is_none_or(|b| snapshot > b.snapshot || (snapshot == b.snapshot && id > b.drill)) {
            best = Some(Verified { snapshot, drill: id });
        }
    }
    Ok(best)
}

/// The policy's verdicts plus the drill rule, newest first; refuses a policy that keeps nothing.
fn decide(ids: &[SnapshotId], policy: &Policy, verified: Option<&Verified>) -> Result<Vec<SnapshotPlan>> {
    if policy.is_empty() {
        return Err(Error::RetentionUnset);
    }
    let plans: Vec<SnapshotPlan> = retention::apply(ids, policy)
        .into_iter()
        .map(|verdict| {
            let mut reasons: Vec<String> = verdict.reasons.iter().map(ToString::to_string).collect();
            if let Some(v) = verified.filter(|v| v.snapshot == verdict.id) {
                reasons.push(format!("newest snapshot verified by drill {}", v.drill));
            }
            let action = if reasons.is_empty() { Action::Remove } else { Action::Keep };
            if action == Action::Remove {
                reasons.push("not kept by the policy".to_string());
            }
            SnapshotPlan { time: verdict.id.time(), id: verdict.id, action, reasons, objects: 0, bytes: 0 }
        })
        .collect();
    refuse_keeping_nothing(&plans, policy)?;
    Ok(plans)
}

/// The net under the policy: a plan that would leave no snapshot is refused. (A policy that is set always keeps
/// the newest snapshot, so this fires only on a bug; a repository without snapshots is fine.)
fn refuse_keeping_nothing(plans: &[SnapshotPlan], policy: &Policy) -> Result<()> {
    if !plans.is_empty() && plans.iter().all(|p| p.action == Action::Remove) {
        return Err(Error::RetentionKeepsNothing { policy: policy.to_string(), snapshots: plans.len() });
    }
    Ok(())
}

/// What the listing of `objects/` holds beyond the kept snapshots' objects.
struct Sorted {
    /// The objects under each removed snapshot's directory that no kept manifest references.
    dropped: BTreeMap<SnapshotId, Vec<ObjectMeta>>,
    orphans: Vec<OrphanGroup>,
    /// The objects of the orphan groups that go.
    sweep: Vec<ObjectMeta>,
}

/// Sorts every object no kept manifest references: a removed snapshot's goes with it; any other is an orphan,
/// deleted once its directory showed no sign of life for the grace (`cutoff` is now minus the grace).
fn sort_objects(
    objects: Vec<ObjectMeta>,
    referenced: &HashSet<&str>,
    committed: &HashSet<&SnapshotId>,
    removed: &HashSet<&SnapshotId>,
    cutoff: DateTime<Utc>,
) -> Sorted {
    let mut dropped: BTreeMap<SnapshotId, Vec<ObjectMeta>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for object in objects {
        if referenced.contains(object.key.as_str()) {
            continue;
        }
        let rest = object.key.strip_prefix(OBJECTS_PREFIX).unwrap_or(&object.key);
        let dir = rest.split_once('/').map_or(rest, |(dir, _)| dir);
        match dir.parse::<SnapshotId>() {
            Ok(id) if removed.contains(&id) => dropped.entry(id).or_default().push(object),
            _ => groups.entry(format!("{OBJECTS_PREFIX}{dir}/")).or_default().push(object),
        }
    }
    let mut sweep = Vec::new();
    let orphans = groups
        .into_iter()
        .map(|(prefix, objects)| {
            let dir = prefix.trim_start_matches(OBJECTS_PREFIX).trim_end_matches('/');
            let id = dir.parse::<SnapshotId>().ok();
            let reason = match &id {
                Some(id) if committed.contains(id) => format!("not in the manifest of snapshot {id}"),
                Some(_) => "no manifest: left by a backup that failed, was killed, or is still running".to_string(),
                None => "not a snapshot's directory".to_string(),
            };
            // The id says when its backup started, the objects when they were written; an object of unknown time
            // in a directory that is no snapshot's leaves the group's age unknown, and the group alone.
            let times: Option<Vec<DateTime<Utc>>> = objects.iter().map(|o| o.modified).collect();
            let last_activity = match (id.as_ref().map(SnapshotId::time), times) {
                (Some(start), times) => Some(times.unwrap_or_default().into_iter().fold(start, DateTime::max)),
                (None, Some(times)) => times.into_iter().max(),
                (None, None) => None,
            };
            let old = last_activity.is_some_and(|t| t < cutoff);
            let group = OrphanGroup {
                reason,
                action: if old { Action::Remove } else { Action::Keep },
                last_activity,
                bytes: objects.iter().map(|o| o.size).sum(),
                keys: objects.iter().map(|o| o.key.clone()).collect(),
                prefix,
            };
            if old {
                sweep.extend(objects);
            }
            group
        })
        .collect();
    Sorted { dropped, orphans, sweep }
}

impl PrunePlan {
    fn report(&self, policy: &Policy, grace: Duration, started_at: DateTime<Utc>) -> PruneReport {
        let orphans_deleted = self.sweep.len();
        let packs = self.packs.as_ref().map(|(_, planning)| planning.plan.clone());
        let bytes_freed = self.manifests.iter().map(|(_, size)| size).sum::<u64>()
            + self.dropped.iter().chain(&self.sweep).map(|o| o.size).sum::<u64>()
            + packs.as_ref().map_or(0, |p| p.bytes_freed)
            + self.streams.bytes;
        let packs_deleted =
            packs.as_ref().map_or(0, |p| p.packs_dead.len() + p.packs_repacked.len() + p.orphan_packs.len());
        let totals = Totals {
            snapshots_kept: self.snapshots.iter().filter(|s| s.action == Action::Keep).count(),
            snapshots_removed: self.manifests.len(),
            objects_deleted: self.dropped.len() + orphans_deleted,
            orphans_deleted,
            orphans_young: self.orphans.iter().filter(|g| g.action == Action::Keep).map(|g| g.keys.len()).sum(),
            uploads_aborted: self.uploads.len(),
            attempts_expired: self.attempts.len(),
            empty_directories_removed: self.empty_directories.len(),
            bytes_freed,
            packs_deleted,
            packs_written: 0,
            segments_deleted: self.streams.segments,
        };
        PruneReport {
            dry_run: false,
            policy: *policy,
            orphan_grace_seconds: grace.as_secs(),
            started_at,
            duration_seconds: 0.0,
            snapshots: self.snapshots.clone(),
            orphans: self.orphans.clone(),
            uploads: self
                .uploads
                .iter()
                .map(|u| UploadPlan { key: u.key.clone(), kind: u.kind, initiated: u.initiated })
                .collect(),
            empty_directories: self.empty_directories.clone(),
            warnings: self.warnings.clone(),
            packs,
            streams: self.streams.report.clone(),
            totals,
        }
    }
}

/// Carries out a plan, `CONCURRENCY` deletions at a time; each batch first checks that the prune may go on.
struct PruneExecutor<'a> {
    repo: &'a Repository,
    lock: &'a RepositoryLock,
    cancel: &'a CancellationToken,
}

impl PruneExecutor<'_> {
    fn may_continue(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.lock.check()
    }

    /// Runs steps 2 to 6; progress counts the bytes freed.
    async fn execute(
        &self,
        mut plan: PrunePlan,
        settings: &PackSettings<'_>,
        written_by: &str,
        total: u64,
        progress: &dyn Progress,
    ) -> Result<PackOutcome> {
        let task = progress.task("prune", Some(total));
        // 2. Manifests first: once one is gone, its snapshot is gone, and its objects are mere orphans.
        for batch in plan.manifests.chunks(CONCURRENCY) {
            self.may_continue()?;
            let deletes = futures::future::join_all(batch.iter().map(|(id, _)| self.repo.forget(id))).await;
            for ((id, size), deleted) in batch.iter().zip(deletes) {
                deleted?;
                tracing::debug!(snapshot = %id, "snapshot removed");
                task.advance(*size);
            }
        }

        // 2b. Packs: what the kept snapshots need is repacked and indexed anew before anything is deleted.
        let mut packed = PackOutcome::default();
        if let Some((reader, planning)) = plan.packs.take()
            && planning.plan.changes_anything()
        {
            self.may_continue()?;
            let recipients = Arc::new(Recipients::parse(settings.recipients)?);
            packed = super::chunked::prune::execute(&reader, planning, recipients, written_by, self.cancel).await?;
            task.advance(packed.bytes_freed);
        }

        // 3. Their objects, then the orphans old enough to go.
        let objects: Vec<&ObjectMeta> = plan.dropped.iter().chain(&plan.sweep).collect();
        for batch in objects.chunks(CONCURRENCY) {
            self.may_continue()?;
            let store = self.repo.store();
            let deletes = futures::future::join_all(batch.iter().map(|object| store.delete(&object.key))).await;
            for (object, deleted) in batch.iter().zip(deletes) {
                deleted?;
                task.advance(object.size);
            }
        }
        // 3b. Change segments no kept base needs.
        super::stream_prune::execute(self.repo, &plan.streams, &|| self.may_continue()).await?;
        task.advance(plan.streams.bytes);
        task.finish(&format!("{} freed", crate::units::bytes(total)));

        // 4. Uploads a killed writer left open (a plan lists some only for a store that can hold them).
        if let Some(leftovers) = self.repo.store().leftovers() {
            for upload in &plan.uploads {
                self.may_continue()?;
                leftovers.abort_upload(upload).await?;
                tracing::debug!(key = %upload.key, id = %upload.upload_id, "stale upload aborted");
            }

            // 5. Directories a failed or killed backup left empty (deepest first, so parents empty in turn).
            for directory in &plan.empty_directories {
                self.may_continue()?;
                leftovers.remove_empty_directory(directory).await?;
            }
        }

        // 6. Backup attempt records past the history the reports read.
        for batch in plan.attempts.chunks(CONCURRENCY) {
            self.may_continue()?;
            let deletes = futures::future::join_all(batch.iter().map(|id| self.repo.forget_attempt(id))).await;
            for deleted in deletes {
                deleted?;
            }
        }
        Ok(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::{ObjectEntry, ObjectRole, PrivateManifest, SourceEntry, SourceKind};
    use chrono::NaiveDateTime;

    fn id(text: &str) -> SnapshotId {
        let time = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc();
        format!("{}-000000", time.format("%Y%m%dT%H%M%SZ")).parse().unwrap()
    }

    fn daily(days: u32) -> Vec<SnapshotId> {
        (1..=days).map(|d| id(&format!("2026-11-{d:02} 04:00"))).collect()
    }

    fn kept(plans: &[SnapshotPlan]) -> Vec<String> {
        plans.iter().filter(|p| p.action == Action::Keep).map(|p| p.id.to_string()).collect()
    }

    #[test]
    fn an_empty_policy_is_refused() {
        let err = decide(&daily(3), &Policy::default(), None).unwrap_err();
        assert!(matches!(err, Error::RetentionUnset), "{err}");
        assert!(err.hint().unwrap().contains("keep_last"), "{:?}", err.hint());
        let zero = Policy { keep_daily: 0, keep_last: 0, ..Policy::default() };
        assert!(matches!(decide(&[], &zero, None), Err(Error::RetentionUnset)));
    }

    #[test]
    fn a_set_policy_always_keeps_the_newest_and_an_empty_repository_is_fine() {
        for policy in [
            Policy { keep_last: 1, ..Policy::default() },
            Policy { keep_yearly: 1, ..Policy::default() },
            Policy { keep_hourly: 1, ..Policy::default() },
        ] {
            let plans = decide(&daily(20), &policy, None).unwrap();
            assert_eq!(kept(&plans), [id("2026-11-20 04:00").to_string()], "{policy}");
            assert_eq!(plans.len(), 20);
            assert_eq!(plans[19].reasons, ["not kept by the policy"]);
        }
        assert!(decide(&[], &Policy { keep_last: 1, ..Policy::default() }, None).unwrap().is_empty());
    }

    #[test]
    fn a_plan_that_keeps_nothing_is_refused() {
        let policy = Policy { keep_last: 1, ..Policy::default() };
        let mut plans = decide(&daily(4), &policy, None).unwrap();
        assert!(refuse_keeping_nothing(&plans, &policy).is_ok());
        plans[0].action = Action::Remove;
        let err = refuse_keeping_nothing(&plans, &policy).unwrap_err();
        assert!(matches!(err, Error::RetentionKeepsNothing { snapshots: 4, .. }), "{err:?}");
        assert!(err.to_string().contains("(keep_last 1) would keep none of the 4 snapshots"), "{err}");
        assert!(err.hint().unwrap().contains("nothing was deleted"));
        assert!(refuse_keeping_nothing(&[], &policy).is_ok(), "an empty repository has nothing to lose");
    }

    #[test]
    fn the_newest_drill_verified_snapshot_survives_any_policy() {
        let ids = daily(10);
        let verified = Verified { snapshot: id("2026-11-03 04:00"), drill: id("2026-11-04 05:00") };
        let plans = decide(&ids, &Policy { keep_last: 2, ..Policy::default() }, Some(&verified)).unwrap();
        assert_eq!(
            kept(&plans),
            [id("2026-11-10 04:00"), id("2026-11-09 04:00"), id("2026-11-03 04:00")].map(|i| i.to_string())
        );
        let protected = plans.iter().find(|p| p.id == verified.snapshot).unwrap();
        assert_eq!(protected.reasons, [format!("newest snapshot verified by drill {}", verified.drill)]);
        // Kept by the policy as well: both reasons.
        let verified = Verified { snapshot: id("2026-11-10 04:00"), drill: id("2026-11-10 05:00") };
        let plans = decide(&ids, &Policy { keep_last: 1, ..Policy::default() }, Some(&verified)).unwrap();
        assert_eq!(
            plans[0].reasons,
            ["last 1".to_string(), format!("newest snapshot verified by drill {}", verified.drill)]
        );
        assert_eq!(kept(&plans).len(), 1);
    }

    /// A repository in memory with `days` daily snapshots (one object each, ending an hour ago), a key pair,
    /// and a config with `policy`.
    struct Fixture {
        dir: tempfile::TempDir,
        repo: Repository,
        recipients: crate::crypto::Recipients,
        identities: Arc<Identities>,
        config: Config,
        ids: Vec<SnapshotId>,
    }

    impl Fixture {
        async fn new(days: i64, policy: Policy) -> Fixture {
            use bytes::Bytes;
            let store = std::sync::Arc::new(crate::store::MemoryStore::new());
            let repo = Repository::init(store).await.unwrap();
            let key = crate::crypto::KeyPair::generate();
            let dir = tempfile::tempdir().unwrap();
            key.write_identity_file(&dir.path().join("identity.txt")).unwrap();
            let recipients = crate::crypto::Recipients::parse(&[key.recipient()]).unwrap();
            let mut config = Config::default();
            config.retention.keep_last = Some(policy.keep_last);
            config.retention.keep_daily = Some(policy.keep_daily);
            let now = Utc::now();
            let mut ids = Vec::new();
            for day in (0..days).rev() {
                let at = now - chrono::Duration::days(day) - chrono::Duration::hours(1);
                let id = SnapshotId::new(at);
                let key = Repository::object_key(&id, "app", ObjectRole::PgDump);
                repo.store().put(&key, Bytes::from(vec![7u8; 100])).await.unwrap();
                let object = ObjectEntry {
                    key,
                    role: ObjectRole::PgDump,
                    stored_size: 100,
                    sha256: "0".repeat(64),
                    plain_size: 100,
                };
                let manifest = Manifest {
                    format: 1,
                    id: id.clone(),
                    started_at: at,
                    finished_at: at,
                    hostname: "web1".into(),
                    dr_version: "test".into(),
                    sources: vec![SourceEntry {
                        format: None,
                        chunked: None,
                        name: "app".into(),
                        kind: SourceKind::Postgres,
                        consistent_at: at,
                        objects: vec![object],
                        incomplete_files: 0,
                    }],
                    private: Repository::seal_private(&recipients, &PrivateManifest::default()).unwrap(),
                };
                repo.commit(&manifest).await.unwrap();
                ids.push(id);
            }
            let identities = Arc::new(Identities::load(&dir.path().join("identity.txt")).unwrap());
            Fixture { dir, repo, recipients, identities, config, ids }
        }

        async fn drill(&self, snapshot: &SnapshotId, passed: bool) -> SnapshotId {
            use crate::repo::drill_record::*;
            let started_at = snapshot.time() + chrono::Duration::minutes(30);
            let record = DrillRecord {
                format: DRILL_RECORD_FORMAT,
                id: SnapshotId::new(started_at),
                snapshot: Some(snapshot.clone()),
                started_at,
                finished_at: started_at,
                hostname: "drill".into(),
                dr_version: "test".into(),
                passed,
                succeeded: passed,
                reason: None,
                snapshot_consistent_at: None,
                scratch: ScratchDescription {
                    kind: "embedded".into(),
                    location: String::new(),
                    server_version: None,
                    start_seconds: 0.0,
                },
                phases: Vec::new(),
                checks: Vec::new(),
                rpo: Measure { seconds: None, objective_seconds: None },
                rto: Measure { seconds: None, objective_seconds: None },
                sizes: Vec::new(),
                anomalies: Vec::new(),
                tools: Tools::default(),
                stream: None,
            };
            self.repo.save_drill(&self.recipients, &record).await.unwrap();
            record.id
        }

        async fn keys(&self) -> Vec<String> {
            self.repo.store().list("").await.unwrap().into_iter().map(|m| m.key).collect()
        }

        async fn prune(&self, dry_run: bool) -> Result<PruneReport> {
            let options = PruneOptions { dry_run, ..PruneOptions::default() };
            prune(&self.config, &self.repo, &self.identities, &options, &crate::progress::NoProgress).await
        }
    }

    #[tokio::test]
    async fn prune_deletes_manifests_objects_and_old_orphans_and_keeps_the_drilled_snapshot() {
        use bytes::Bytes;
        let mut fixture = Fixture::new(10, Policy { keep_last: 3, ..Policy::default() }).await;
        let audit = fixture.dir.path().join("audit.jsonl");
        fixture.config.audit.path = Some(audit.clone());
        let ids = &fixture.ids;
        let passed = fixture.drill(&ids[1], true).await;
        fixture.drill(&ids[8], false).await;
        fixture.drill(&ids[0], true).await;
        // A crashed backup of three days ago, and one (or one running) from ten minutes ago.
        let old = SnapshotId::new(Utc::now() - chrono::Duration::days(3));
        let young = SnapshotId::new(Utc::now() - chrono::Duration::minutes(10));
        for id in [&old, &young] {
            fixture
                .repo
                .store()
                .put(&format!("objects/{id}/app/pg_dump.zst.age"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }

        let before = fixture.keys().await;
        let plan = fixture.prune(true).await.unwrap();
        assert_eq!(fixture.keys().await, before, "a dry run changes nothing");
        assert!(plan.dry_run);
        assert_eq!(
            plan.totals,
            Totals {
                snapshots_kept: 4,
                snapshots_removed: 6,
                objects_deleted: 7,
                orphans_deleted: 1,
                orphans_young: 1,
                uploads_aborted: 0,
                attempts_expired: 0,
                empty_directories_removed: 0,
                bytes_freed: plan.totals.bytes_freed,
                packs_deleted: 0,
                packs_written: 0,
                segments_deleted: 0,
            }
        );
        let protected = plan.snapshots.iter().find(|s| s.id == ids[1]).unwrap();
        assert_eq!(protected.reasons, [format!("newest snapshot verified by drill {passed}")]);

        assert!(!audit.exists(), "a dry run is not audited: it changes nothing");
        let report = fixture.prune(false).await.unwrap();
        assert_eq!(report.totals, plan.totals, "the prune does what the dry run said");
        let line: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap();
        assert_eq!((line["action"].as_str(), line["outcome"].as_str()), (Some("prune"), Some("success")));
        let detail = line["detail"].as_str().unwrap();
        assert!(detail.starts_with("removed 6 of 10 snapshots and 7 objects (1 orphans"), "{detail}");
        assert!(detail.contains(ids[0].as_str()) && !detail.contains(ids[1].as_str()), "{detail}");
        let left = fixture.repo.snapshot_ids().await.unwrap();
        assert_eq!(left, [ids[1].clone(), ids[7].clone(), ids[8].clone(), ids[9].clone()]);
        let objects: Vec<String> =
            fixture.repo.store().list("objects/").await.unwrap().into_iter().map(|m| m.key).collect();
        let mut expected: Vec<String> =
            left.iter().map(|id| Repository::object_key(id, "app", ObjectRole::PgDump)).collect();
        expected.push(format!("objects/{young}/app/pg_dump.zst.age"));
        expected.sort();
        assert_eq!(objects, expected);
        assert_eq!(fixture.repo.drill_ids().await.unwrap().len(), 3, "drill records are kept");
        assert!(fixture.repo.locks().await.unwrap().is_empty(), "the lock is released");

        let again = fixture.prune(false).await.unwrap();
        assert_eq!((again.totals.snapshots_removed, again.totals.objects_deleted), (0, 0), "nothing left to do");
    }

    #[tokio::test]
    async fn prune_refuses_to_run_beside_another_lock_holder_and_with_the_wrong_key() {
        let fixture = Fixture::new(3, Policy { keep_last: 1, ..Policy::default() }).await;
        let held = fixture.repo.lock(LockKind::Shared, &LockOptions::new("backup")).await.unwrap();
        assert!(matches!(fixture.prune(false).await, Err(Error::RepositoryLocked { .. })));
        fixture.prune(true).await.expect("a dry run shares the repository");
        held.release().await.unwrap();

        fixture.drill(&fixture.ids[0], true).await;
        let other = crate::crypto::KeyPair::generate();
        let path = fixture.dir.path().join("other.txt");
        other.write_identity_file(&path).unwrap();
        let wrong = Arc::new(Identities::load(&path).unwrap());
        let options = PruneOptions::default();
        let err = prune(&fixture.config, &fixture.repo, &wrong, &options, &crate::progress::NoProgress).await;
        assert!(matches!(err, Err(Error::WrongIdentity { .. })), "{err:?}");
        assert_eq!(fixture.repo.snapshot_ids().await.unwrap().len(), 3, "nothing was deleted");
    }

    fn meta(key: &str, size: u64, modified: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size,
            modified: modified.map(|m| NaiveDateTime::parse_from_str(m, "%Y-%m-%d %H:%M").unwrap().and_utc()),
        }
    }

    #[test]
    fn objects_nobody_references_are_sorted_and_aged() {
        let kept_id = id("2026-11-20 04:00");
        let removed_id = id("2026-11-01 04:00");
        let crashed_old = id("2026-11-10 04:00");
        let crashed_young = id("2026-11-24 03:00");
        let long_running = id("2026-11-22 04:00");
        let key = |id: &SnapshotId, name: &str| format!("objects/{id}/{name}");
        let objects = vec![
            meta(&key(&kept_id, "app/pg_dump.zst.age"), 100, Some("2026-11-20 04:10")),
            meta(&key(&kept_id, "stray"), 5, Some("2026-11-20 04:10")),
            meta(&key(&removed_id, "app/pg_dump.zst.age"), 70, None),
            meta(&key(&removed_id, "app/globals.sql.zst.age"), 7, None),
            meta(&key(&crashed_old, "app/pg_dump.zst.age"), 30, None),
            meta(&key(&crashed_young, "app/pg_dump.zst.age"), 40, None),
            // Started two days ago, but its last object was written an hour ago: still running.
            meta(&key(&long_running, "app/pg_dump.zst.age"), 50, Some("2026-11-24 03:00")),
            meta("objects/junk/file", 1, Some("2026-10-01 00:00")),
            meta("objects/unknown-age/file", 1, None),
        ];
        let first_key = key(&kept_id, "app/pg_dump.zst.age");
        let referenced: HashSet<&str> = [first_key.as_str()].into();
        let committed: HashSet<&SnapshotId> = [&kept_id, &removed_id].into();
        let removed: HashSet<&SnapshotId> = [&removed_id].into();
        let cutoff = NaiveDateTime::parse_from_str("2026-11-23 04:00", "%Y-%m-%d %H:%M").unwrap().and_utc();
        let sorted = sort_objects(objects, &referenced, &committed, &removed, cutoff);

        assert_eq!(sorted.dropped.len(), 1);
        assert_eq!(sorted.dropped[&removed_id].len(), 2, "a removed snapshot's objects go, whatever their age");
        let summary: Vec<(String, Action, &str)> =
            sorted.orphans.iter().map(|g| (g.prefix.clone(), g.action, g.reason.split(':').next().unwrap())).collect();
        assert_eq!(
            summary,
            [
                (format!("objects/{crashed_old}/"), Action::Remove, "no manifest"),
                (
                    format!("objects/{kept_id}/"),
                    Action::Remove,
                    "not in the manifest of snapshot 20261120T040000Z-000000"
                ),
                (format!("objects/{long_running}/"), Action::Keep, "no manifest"),
                (format!("objects/{crashed_young}/"), Action::Keep, "no manifest"),
                ("objects/junk/".to_string(), Action::Remove, "not a snapshot's directory"),
                ("objects/unknown-age/".to_string(), Action::Keep, "not a snapshot's directory"),
            ]
        );
        let long = sorted.orphans.iter().find(|g| g.prefix.contains(long_running.as_str())).unwrap();
        assert_eq!(long.last_activity.unwrap().format("%d %H:%M").to_string(), "24 03:00");
    }
}
