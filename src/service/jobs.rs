//! Running one scheduled job: the same engine functions as the commands, with the service's cancellation
//! token, and what they report folded into the service's status.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::pending_attempts;
use super::state::{BackupRun, DrillRun, SourceBackup};
use crate::config::{Config, JobKind};
use crate::error::{Error, Result};
use crate::progress::NoProgress;
use crate::repo::Repository;
use crate::repo::attempt_record::AttemptRecord;
use crate::repo::snapshot_id::Selector;
use crate::{drill, engine, report, store};

/// The default window of a scheduled report.
const REPORT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a finished job says about itself, in one line, for the log and `/status`.
pub type JobSummary = String;

pub(super) async fn run(
    kind: JobKind,
    config: &Config,
    shared: &Shared,
    cancel: CancellationToken,
) -> Result<JobSummary> {
    let started_at = Utc::now();
    let repo = match open(config).await {
        Ok(repo) => repo,
        Err(e) => {
            // engine::backup records its own attempts in the repository; this one never got there.
            if kind == JobKind::Backup {
                let record = AttemptRecord::started(started_at, &[]).not_committed(false, &e.to_string());
                pending_attempts::remember(&super::state_dir(config), record);
            }
            return Err(e);
        }
    };
    if kind == JobKind::Backup {
        pending_attempts::flush(config, &repo, &super::state_dir(config)).await;
    }
    match kind {
        JobKind::Backup => backup(config, &repo, shared, cancel).await,
        JobKind::Drill => drill(config, &repo, shared, cancel).await,
        JobKind::Report => report(config, &repo, shared).await,
        JobKind::Prune => prune(config, &repo, shared, cancel).await,
    }
}

async fn open(config: &Config) -> Result<Repository> {
    let store = store::open(&config.repository).await?;
    Repository::open(Arc::from(store)).await
}

async fn backup(config: &Config, repo: &Repository, shared: &Shared, cancel: CancellationToken) -> Result<JobSummary> {
    backup_sources(config, repo, shared, Vec::new(), cancel).await
}

/// A backup of `only` (every source when empty), folded into the service's status.
pub(super) async fn backup_sources(
    config: &Config,
    repo: &Repository,
    shared: &Shared,
    only: Vec<String>,
    cancel: CancellationToken,
) -> Result<JobSummary> {
    let options = engine::BackupOptions { only, cancel };
    let report = engine::backup(config, repo, &options, &NoProgress).await?;
    let mut status = shared.status();
    for source in &report.sources {
        status.backups.insert(
            source.name.clone(),
            SourceBackup {
                finished_at: report.finished_at,
                duration_seconds: source.duration_seconds,
                stored_bytes: source.stored_size,
                plain_bytes: source.plain_size,
            },
        );
    }
    status.last_backup = Some(BackupRun {
        snapshot: report.snapshot.to_string(),
        finished_at: report.finished_at,
        duration_seconds: report.duration_seconds,
        stored_bytes: report.stored_size,
        incomplete_files: report.incomplete_files().len(),
    });
    let mut summary = format!("snapshot {} ({})", report.snapshot, crate::units::bytes(report.stored_size));
    if !report.anomalies.is_empty() {
        summary.push_str(&format!("; warning: {}", report.anomalies.join("; ")));
    }
    // Committed, but not whole: said as a warning of its own (the engine already logged each file), and in the
    // summary that /status shows.
    let incomplete = report.incomplete_files();
    if !incomplete.is_empty() {
        let warning = format!(
            "{} changed while being read and {} stored incomplete: {}",
            crate::units::plural(incomplete.len(), "file"),
            if incomplete.len() == 1 { "is" } else { "are" },
            incomplete.join("; ")
        );
        tracing::warn!(snapshot = %report.snapshot, "backup committed with incomplete files: {warning}");
        summary.push_str(&format!("; warning: {warning}"));
    }
    Ok(summary)
}

async fn drill(config: &Config, repo: &Repository, shared: &Shared, cancel: CancellationToken) -> Result<JobSummary> {
    let identities = crate::crypto::Identities::load_configured(&config.encryption, "drill")?;
    let options = drill::DrillOptions {
        selector: Selector::Latest,
        scratch_url: config.drill.scratch_url.clone(),
        keep: false,
        jobs: config.restore_jobs(None),
        temp_dir: config.restore.temp_dir.clone(),
        cancel,
    };
    let outcome = drill::drill(config, repo, identities, &options, &NoProgress).await?;
    let record = &outcome.record;
    shared.status().last_drill = Some(DrillRun {
        id: record.id.to_string(),
        snapshot: record.snapshot.as_ref().map(ToString::to_string),
        finished_at: record.finished_at,
        passed: record.passed,
        succeeded: record.succeeded,
        reason: record.reason.clone(),
        rto_seconds: record.rto.seconds,
        rpo_seconds: record.rpo.seconds,
    });
    if let Err(e) = outcome.stored {
        return Err(Error::io("storing the drill record", std::io::Error::other(e)));
    }
    match &record.reason {
        None => Ok(format!("drill {} passed, objectives met", record.id)),
        Some(reason) => Err(Error::DrillFailed {
            outcome: if record.passed { "passed its checks but missed an objective" } else { "failed" },
            reason: reason.clone(),
            hint: outcome.hint.clone(),
        }),
    }
}

async fn prune(config: &Config, repo: &Repository, shared: &Shared, cancel: CancellationToken) -> Result<JobSummary> {
    let identities = crate::crypto::Identities::load_configured(&config.encryption, "prune")?;
    let options = engine::PruneOptions { dry_run: false, cancel };
    let report = engine::prune(config, repo, &identities, &options, &NoProgress).await?;
    let totals = report.totals;
    {
        let mut counters = shared.counters();
        counters.pruned_snapshots += totals.snapshots_removed as u64;
        counters.pruned_objects += totals.objects_deleted as u64;
    }
    Ok(format!(
        "{} snapshots kept, {} removed, {} objects deleted ({} freed)",
        totals.snapshots_kept,
        totals.snapshots_removed,
        totals.objects_deleted,
        crate::units::bytes(totals.bytes_freed)
    ))
}

/// Writes `report-<date>.md`, `.html` and `.json` into `[report] output_dir`.
async fn report(config: &Config, repo: &Repository, shared: &Shared) -> Result<JobSummary> {
    let identities = crate::crypto::Identities::load_configured(&config.encryption, "report")?;
    let now = Utc::now();
    let window = config.report.window.unwrap_or(REPORT_WINDOW);
    let start = now - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::days(7));
    let gathered = report::gather(repo, &identities, start, now, config).await?;
    let dir = report_dir(config);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let stem = format!("report-{}", now.format("%Y-%m-%d"));
    for (format, extension) in
        [(report::Format::Markdown, "md"), (report::Format::Html, "html"), (report::Format::Json, "json")]
    {
        let text = gathered.render(format)?;
        report::write_atomically(&dir.join(format!("{stem}.{extension}")), text.as_bytes())?;
        if format == report::Format::Markdown {
            super::alerts::report(&shared.sinks(), &gathered.headline(), &text);
        }
    }
    Ok(format!("{} in {}/{stem}.{{md,html,json}}", gathered.headline(), dir.display()))
}

pub fn report_dir(config: &Config) -> std::path::PathBuf {
    config.report.output_dir.clone().unwrap_or_else(|| super::state_dir(config).join("reports"))
}
