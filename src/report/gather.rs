//! Reading the repository into a [`Report`]: the drill records, backup attempt records and snapshots of the
//! window, plus the last recovery point before it (the window may open in the middle of a gap, and its first
//! snapshot needs something to be compared with).

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::timeline::{self, RecoveryPoint};
use super::{
    BackupAttempt, DrillSummary, DrillVerdict, FailedCheck, GapBasis, RecordKind, Report, ReportObjectives,
    ReportStatus, RpoGap, SnapshotAnomaly, SnapshotSummary, Summary, Unreadable, Window, duration,
};
use crate::anomalies;
use crate::config::Config;
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::attempt_record::{AttemptOutcome, AttemptRecord};
use crate::repo::drill_record::{CheckStatus, DrillRecord};
use crate::repo::manifest::{Manifest, PrivateManifest, SourceDetails};
use crate::repo::snapshot_id::SnapshotId;
use crate::units::plural;

/// Manifests and drill records read at once: enough to hide an S3 round trip, few enough to stay polite.
const READS_IN_FLIGHT: usize = 8;
/// How many attempt records before the window are read, newest first, to find the last successful one: the
/// recovery point the window's first gap starts from. Beyond that, the last snapshot before the window serves.
const ATTEMPTS_BEFORE_WINDOW: usize = 100;

/// Reads what happened between `window_start` and `now` (both included) and works out the report. Drills and
/// snapshots are placed by their id's time (their start). Records that cannot be read are listed in the report
/// rather than failing it; a wrong identity, an unreachable store or a missing repository fail it.
pub async fn gather(
    repo: &Repository,
    identities: &Identities,
    window_start: DateTime<Utc>,
    now: DateTime<Utc>,
    config: &Config,
) -> Result<Report> {
    if window_start >= now {
        return Err(Error::Usage(format!("the report window starts at {window_start}, not before its end {now}")));
    }
    let in_window = |id: &SnapshotId| window_start <= id.time() && id.time() <= now;
    let mut unreadable = Vec::new();

    let drill_ids: Vec<SnapshotId> = repo.drill_ids().await?.into_iter().filter(|id| in_window(id)).collect();
    let mut drills = Vec::new();
    for (id, read) in read_all(drill_ids, |id| async move { repo.drill(&id, identities).await }).await? {
        match read {
            Ok(record) => drills.push(record),
            Err(error) => unreadable.push(Unreadable { kind: RecordKind::Drill, id, error: error.to_string() }),
        }
    }

    let snapshot_ids = repo.snapshot_ids().await?;
    let inside_ids: Vec<SnapshotId> = snapshot_ids.iter().filter(|id| in_window(id)).cloned().collect();
    let mut inside = Vec::new();
    for (id, read) in read_all(inside_ids, |id| read_snapshot(repo, identities, id)).await? {
        match read {
            Ok(snapshot) => inside.push(snapshot),
            Err(error) => unreadable.push(Unreadable { kind: RecordKind::Snapshot, id, error: error.to_string() }),
        }
    }
    let before_ids = snapshot_ids.iter().rev().filter(|id| id.time() < window_start);
    let before = last_readable(repo, identities, before_ids).await?;

    let attempt_ids = repo.attempt_ids().await?;
    let inside_attempt_ids: Vec<SnapshotId> = attempt_ids.iter().filter(|id| in_window(id)).cloned().collect();
    let mut attempts = Vec::new();
    for (id, read) in read_all(inside_attempt_ids, |id| async move { repo.attempt(&id, identities).await }).await? {
        match read {
            Ok(record) => attempts.push(record),
            Err(error) => unreadable.push(Unreadable { kind: RecordKind::Attempt, id, error: error.to_string() }),
        }
    }
    let attempt_ids_before = attempt_ids.iter().rev().filter(|id| id.time() < window_start);
    let attempt_before = last_successful(repo, identities, attempt_ids_before).await?;

    let max_shrink = config.drill.max_shrink;
    let anomalies = compare_consecutive(before.as_ref(), &inside, max_shrink);
    let objectives = ReportObjectives {
        rpo_seconds: config.objectives.rpo.map(|d| d.as_secs_f64()),
        rto_seconds: config.objectives.rto.map(|d| d.as_secs_f64()),
    };
    // Every snapshot in the repository is a recovery point; so is every successful attempt whose snapshot is gone
    // (removed by prune since). A snapshot that still exists counts through its manifest only: an unreadable
    // one is no recovery point, whatever its attempt record says.
    let removed = |record: &&AttemptRecord| {
        record.outcome == AttemptOutcome::Ok
            && record.snapshot.as_ref().is_some_and(|s| snapshot_ids.binary_search(s).is_err())
    };
    let mut points: Vec<RecoveryPoint> = inside.iter().map(Snapshot::recovery_point).collect();
    points.extend(attempts.iter().filter(removed).map(attempt_point));
    let before_point = before
        .as_ref()
        .map(Snapshot::recovery_point)
        .into_iter()
        .chain(attempt_before.as_ref().filter(removed).map(attempt_point))
        .max_by_key(|p| p.at);
    let basis = if attempts.is_empty() && attempt_before.is_none() { GapBasis::Snapshots } else { GapBasis::Attempts };
    let worst_rpo_gap = timeline::worst_gap(before_point.as_ref(), &points, now, objectives.rpo_seconds, basis);
    let snapshots: Vec<SnapshotSummary> = inside.iter().map(Snapshot::summary).collect();
    let failed_checks: Vec<FailedCheck> = drills.iter().flat_map(failed_checks_of).collect();
    let drills: Vec<DrillSummary> = drills.iter().map(summarize_drill).collect();
    let failed_backups: Vec<BackupAttempt> =
        attempts.iter().filter(|a| a.outcome != AttemptOutcome::Ok).map(summarize_attempt).collect();
    // The repository's history begins at its earliest trace; `dr init` may not be it (a repository copied from
    // elsewhere, or records written by hand in the tests).
    let history_start =
        [repo.created_at(), snapshot_ids.first().map(SnapshotId::time), attempt_ids.first().map(SnapshotId::time)]
            .into_iter()
            .flatten()
            .min();

    let backups = Attempts { recorded: attempts.len(), failed: &failed_backups };
    let summary =
        summarize(&drills, &failed_checks, backups, &snapshots, worst_rpo_gap.as_ref(), &anomalies, &unreadable);
    let streams = super::streams::gather(repo, window_start, now).await?;
    Ok(Report {
        streams,
        format: super::REPORT_FORMAT,
        dr_version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at: now,
        repository: repo.location().to_string(),
        window: Window { start: window_start, end: now, seconds: (now - window_start).num_seconds() as f64 },
        objectives,
        summary,
        days: timeline::days(window_start, now, &snapshots, &failed_backups, history_start),
        drills,
        failed_checks,
        failed_backups,
        worst_rpo_gap,
        snapshots,
        anomalies,
        max_shrink,
        unreadable,
    })
}

/// A snapshot with both halves of its manifest.
struct Snapshot {
    manifest: Manifest,
    private: PrivateManifest,
}

impl Snapshot {
    /// What a restore of it gets back to: the oldest of its sources' consistent moments.
    fn recovery_point(&self) -> RecoveryPoint {
        let at = self.manifest.consistent_at().unwrap_or(self.manifest.started_at);
        RecoveryPoint { snapshot: self.manifest.id.clone(), at, removed: false }
    }

    fn summary(&self) -> SnapshotSummary {
        let m = &self.manifest;
        SnapshotSummary {
            id: m.id.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            recovery_point: self.recovery_point().at,
            hostname: m.hostname.clone(),
            stored_bytes: m.stored_size(),
            plain_bytes: m.objects().map(|o| o.plain_size).sum(),
            incomplete_files: self
                .private
                .sources
                .iter()
                .filter_map(|s| match s {
                    SourceDetails::Files(files) => Some(files),
                    SourceDetails::Postgres(_) => None,
                })
                .flat_map(|files| files.incomplete.iter().map(|f| format!("{}: {}", files.name, f.describe())))
                .collect(),
        }
    }
}

/// A snapshot that cannot be restored because its manifest or its private half is unreadable is no recovery
/// point: it is reported as unreadable instead.
async fn read_snapshot(repo: &Repository, identities: &Identities, id: SnapshotId) -> Result<Snapshot> {
    let manifest = repo.manifest(&id).await?;
    let private = repo.private(&manifest, identities)?;
    Ok(Snapshot { manifest, private })
}

/// Runs `read` on every id, a few at a time, keeping their order. Damage to one record (corrupt, vanished since
/// the listing) is that record's outcome; any other error ends the report.
async fn read_all<T, F, Fut>(ids: Vec<SnapshotId>, read: F) -> Result<Vec<(SnapshotId, Result<T>)>>
where
    F: Fn(SnapshotId) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    futures::stream::iter(ids)
        .map(|id| {
            let reading = read(id.clone());
            async move {
                match reading.await {
                    Ok(value) => Ok((id, Ok(value))),
                    Err(e) if is_damage(&e) => Ok((id, Err(e))),
                    Err(e) => Err(e),
                }
            }
        })
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
}

fn is_damage(error: &Error) -> bool {
    matches!(error, Error::ObjectCorrupt { .. } | Error::ObjectMissing { .. })
}

/// The newest readable snapshot among `ids` (newest first). A damaged one is skipped with a warning: it lies
/// outside the window, so it is not the report's to list.
async fn last_readable<'a>(
    repo: &Repository,
    identities: &Identities,
    ids: impl Iterator<Item = &'a SnapshotId>,
) -> Result<Option<Snapshot>> {
    for id in ids {
        match read_snapshot(repo, identities, id.clone()).await {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(e) if is_damage(&e) => {
                tracing::warn!(snapshot = %id, error = %e, "skipping an unreadable snapshot before the window");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The newest attempt among `ids` (newest first) that committed a snapshot, reading at most
/// [`ATTEMPTS_BEFORE_WINDOW`] records. A damaged one is skipped with a warning, as it lies outside the window.
async fn last_successful<'a>(
    repo: &Repository,
    identities: &Identities,
    ids: impl Iterator<Item = &'a SnapshotId>,
) -> Result<Option<AttemptRecord>> {
    for id in ids.take(ATTEMPTS_BEFORE_WINDOW) {
        match repo.attempt(id, identities).await {
            Ok(record) if record.outcome == AttemptOutcome::Ok => return Ok(Some(record)),
            Ok(_) => {}
            Err(e) if is_damage(&e) => {
                tracing::warn!(attempt = %id, error = %e, "skipping an unreadable attempt record before the window");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The recovery point a successful attempt gave (its snapshot's, recorded when it committed).
fn attempt_point(record: &AttemptRecord) -> RecoveryPoint {
    RecoveryPoint {
        snapshot: record.snapshot.clone().unwrap_or_else(|| record.id.clone()),
        at: record.recovery_point.unwrap_or(record.started_at),
        removed: true,
    }
}

fn summarize_attempt(record: &AttemptRecord) -> BackupAttempt {
    BackupAttempt {
        id: record.id.clone(),
        started_at: record.started_at,
        finished_at: record.finished_at,
        outcome: record.outcome,
        reason: record.reason.clone(),
        only: record.only.clone(),
        hostname: record.hostname.clone(),
    }
}

/// The window's backup attempts, for the summary.
#[derive(Clone, Copy)]
struct Attempts<'a> {
    recorded: usize,
    failed: &'a [BackupAttempt],
}

/// Shrinkage between each snapshot of the window and the one before it.
fn compare_consecutive(before: Option<&Snapshot>, inside: &[Snapshot], max_shrink: f64) -> Vec<SnapshotAnomaly> {
    let mut found = Vec::new();
    let mut previous = before;
    for current in inside {
        if let Some(previous) = previous {
            let pair = anomalies::compare(
                &previous.manifest,
                Some(&previous.private),
                &current.manifest,
                Some(&current.private),
                max_shrink,
            );
            found.extend(pair.into_iter().map(|anomaly| SnapshotAnomaly {
                previous_snapshot: previous.manifest.id.clone(),
                snapshot: current.manifest.id.clone(),
                snapshot_started_at: current.manifest.started_at,
                description: anomaly.to_string(),
                anomaly,
            }));
        }
        previous = Some(current);
    }
    found
}

fn verdict(record: &DrillRecord) -> DrillVerdict {
    if !record.passed {
        DrillVerdict::Failed
    } else if record.succeeded {
        DrillVerdict::Succeeded
    } else {
        DrillVerdict::ObjectiveMissed
    }
}

fn summarize_drill(record: &DrillRecord) -> DrillSummary {
    let count = |status: CheckStatus| record.checks.iter().filter(|c| c.status == status).count();
    DrillSummary {
        id: record.id.clone(),
        started_at: record.started_at,
        finished_at: record.finished_at,
        hostname: record.hostname.clone(),
        snapshot: record.snapshot.clone(),
        verdict: verdict(record),
        reason: record.reason.clone(),
        rto: record.rto.into(),
        rpo: record.rpo.into(),
        checks_passed: count(CheckStatus::Pass),
        checks_warned: count(CheckStatus::Warn),
        checks_failed: count(CheckStatus::Fail),
        phases: record.phases.clone(),
        stored_bytes: record.sizes.iter().map(|s| s.stored_bytes).sum(),
        anomalies: record.anomalies.clone(),
    }
}

fn failed_checks_of(record: &DrillRecord) -> impl Iterator<Item = FailedCheck> + '_ {
    record.failed_checks().map(|check| FailedCheck {
        drill: record.id.clone(),
        drill_started_at: record.started_at,
        name: check.name.clone(),
        detail: check.detail.clone(),
        problems: check.problems.clone(),
    })
}

/// The counts, and the findings: one sentence per thing that needs a look, most serious first.
fn summarize(
    drills: &[DrillSummary],
    failed_checks: &[FailedCheck],
    backups: Attempts<'_>,
    snapshots: &[SnapshotSummary],
    worst_rpo_gap: Option<&RpoGap>,
    anomalies: &[SnapshotAnomaly],
    unreadable: &[Unreadable],
) -> Summary {
    let with_verdict = |verdict: DrillVerdict| drills.iter().filter(|d| d.verdict == verdict).count();
    let drills_failed = with_verdict(DrillVerdict::Failed);
    let rto_missed = drills.iter().filter(|d| d.rto.met == Some(false)).count();
    let rpo_missed = drills.iter().filter(|d| d.rpo.met == Some(false)).count();
    let drill_anomalies = drills.iter().map(|d| d.anomalies.len()).sum();

    let mut findings = Vec::new();
    if !backups.failed.is_empty() {
        let mut finding =
            format!("{} of {} did not commit", backups.failed.len(), plural(backups.recorded, "backup attempt"));
        if let Some(reason) = backups.failed.iter().rev().find_map(|a| a.reason.as_deref()) {
            finding.push_str(&format!(" (last reason: {reason})"));
        }
        findings.push(finding);
    }
    if drills.is_empty() {
        findings.push("no drill in this window".to_string());
    }
    if drills_failed > 0 {
        findings.push(format!("{drills_failed} of {} failed", plural(drills.len(), "drill")));
    }
    if rto_missed > 0 {
        findings.push(format!("{} missed the RTO objective", plural(rto_missed, "drill")));
    }
    if rpo_missed > 0 {
        findings.push(format!("{} missed the RPO objective", plural(rpo_missed, "drill")));
    }
    if snapshots.is_empty() {
        findings.push("no snapshot in this window".to_string());
    }
    match worst_rpo_gap {
        Some(gap) if gap.met == Some(false) => findings.push(format!(
            "worst RPO gap {} exceeds the objective {}",
            duration(gap.seconds),
            duration(gap.objective_seconds.unwrap_or_default())
        )),
        Some(_) => {}
        None => findings.push("no snapshot to measure the RPO gap from".to_string()),
    }
    if !anomalies.is_empty() {
        findings.push(format!("{} between snapshots (a source or table shrank)", plural(anomalies.len(), "anomaly")));
    }
    if drill_anomalies > 0 {
        findings.push(format!("{} recorded by drills", plural(drill_anomalies, "anomaly")));
    }
    if !unreadable.is_empty() {
        findings.push(format!("{} in the window cannot be read", plural(unreadable.len(), "record")));
    }
    let incomplete = snapshots.iter().filter(|s| !s.incomplete_files.is_empty()).count();
    if incomplete > 0 {
        findings.push(format!(
            "{} hold files stored incomplete (they changed while being read)",
            plural(incomplete, "snapshot")
        ));
    }
    Summary {
        status: if findings.is_empty() { ReportStatus::Ok } else { ReportStatus::Attention },
        findings,
        drills: drills.len(),
        drills_succeeded: with_verdict(DrillVerdict::Succeeded),
        drills_objective_missed: with_verdict(DrillVerdict::ObjectiveMissed),
        drills_failed,
        failed_checks: failed_checks.len(),
        backup_attempts: backups.recorded,
        backups_failed: backups.failed.len(),
        snapshots: snapshots.len(),
        stored_bytes: snapshots.iter().map(|s| s.stored_bytes).sum(),
        anomalies: anomalies.len(),
        drill_anomalies,
        unreadable: unreadable.len(),
    }
}
