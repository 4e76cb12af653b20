//! `dr report`: what the backups did over a window (every restore drill with its verdict and objectives, every
//! backup attempt that did not commit with its reason, the worst RPO gap, snapshots and their sizes per day,
//! shrinkage anomalies, failed checks), read from the repository alone, so any host holding the identity can
//! make it.
//!
//! [`gather`] does all the reading and the arithmetic into a [`Report`]; the renderers ([`Report::render`]:
//! Markdown for chat and email, a self-contained HTML page, JSON for machines) are pure functions of it, so the
//! three formats always tell the same story. docs/report.md explains each section to the reader.

mod escape;
mod file;
mod gather;
mod html;
mod markdown;
mod streams;
mod svg;
mod timeline;
mod window;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::anomalies::Anomaly;
use crate::error::{Error, Result};
use crate::repo::attempt_record::AttemptOutcome;
use crate::repo::drill_record::{Measure, Phase};
use crate::repo::snapshot_id::SnapshotId;

pub use file::write_atomically;
pub use gather::gather;
pub use timeline::{RecoveryPoint, days, worst_gap};
pub use window::{NotAWindow, Since};

/// Version of the JSON layout: bumped when a field changes meaning or disappears (adding one does not).
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Json,
}

/// Everything the report says, in the order the renderers present it. Serialized as is for `--format json`:
/// field names are stable, durations are seconds (numbers), times RFC 3339 in UTC, days `YYYY-MM-DD` (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: u32,
    pub dr_version: String,
    pub generated_at: DateTime<Utc>,
    /// The repository's location (`s3://bucket/prefix at endpoint`, or a path): never a credential.
    pub repository: String,
    pub window: Window,
    /// The objectives of the current configuration; each drill carries the ones in force when it ran.
    pub objectives: ReportObjectives,
    pub summary: Summary,
    /// Drills that started inside the window, oldest first.
    pub drills: Vec<DrillSummary>,
    /// Every failed check of those drills, in drill order.
    pub failed_checks: Vec<FailedCheck>,
    /// Backup attempts that started inside the window and did not commit a snapshot (failed, interrupted or
    /// unfinished), oldest first, from the repository's attempt records.
    pub failed_backups: Vec<BackupAttempt>,
    /// `None` when no snapshot was ever taken before the report's end.
    pub worst_rpo_gap: Option<RpoGap>,
    /// Snapshots taken inside the window, oldest first.
    pub snapshots: Vec<SnapshotSummary>,
    /// One entry per UTC day the window touches, empty days included.
    pub days: Vec<Day>,
    /// Shrinkage between consecutive snapshots (including the last one before the window against the first
    /// inside it).
    pub anomalies: Vec<SnapshotAnomaly>,
    /// The fraction a source's size or a table's row count may fall by before it is an anomaly
    /// (`[drill] max_shrink`).
    pub max_shrink: f64,
    /// Drill records, attempt records and snapshots inside the window that could not be read (corrupt or
    /// vanished).
    pub unreadable: Vec<Unreadable>,
    /// The change streams of continuous sources (docs/pitr.md); empty without any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<streams::StreamSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    /// The moment the report was made.
    pub end: DateTime<Utc>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReportObjectives {
    pub rpo_seconds: Option<f64>,
    pub rto_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Nothing needs a look.
    Ok,
    /// At least one finding.
    Attention,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub status: ReportStatus,
    /// What needs a look, one sentence each, most serious first; empty when the status is `ok`.
    pub findings: Vec<String>,
    pub drills: usize,
    pub drills_succeeded: usize,
    /// Passed every check but missed the RTO or RPO objective in force.
    pub drills_objective_missed: usize,
    pub drills_failed: usize,
    pub failed_checks: usize,
    /// Backup attempts recorded in the window, whatever their outcome.
    pub backup_attempts: usize,
    /// Those that did not commit a snapshot (`failed_backups`).
    pub backups_failed: usize,
    pub snapshots: usize,
    pub stored_bytes: u64,
    /// Anomalies the report found between snapshots.
    pub anomalies: usize,
    /// Anomalies the drills recorded (often the same shrinkage, seen from the drilled snapshot).
    pub drill_anomalies: usize,
    pub unreadable: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillVerdict {
    /// Passed every check and met the objectives in force.
    Succeeded,
    /// Passed every check, but the restore took longer than the RTO or the data was older than the RPO.
    ObjectiveMissed,
    /// A check failed or the restore did not complete.
    Failed,
}

impl DrillVerdict {
    pub fn label(self) -> &'static str {
        match self {
            DrillVerdict::Succeeded => "succeeded",
            DrillVerdict::ObjectiveMissed => "objective missed",
            DrillVerdict::Failed => "failed",
        }
    }
}

/// A measured duration against its objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measured {
    /// `None` when the drill ended before it could be measured.
    pub seconds: Option<f64>,
    pub objective_seconds: Option<f64>,
    /// `None` unless both are known.
    pub met: Option<bool>,
}

impl From<Measure> for Measured {
    fn from(measure: Measure) -> Measured {
        Measured { seconds: measure.seconds, objective_seconds: measure.objective_seconds, met: measure.met() }
    }
}

impl Measured {
    /// `12m 00s (objective 1h 00m, met)`, `n/a`.
    pub fn describe(&self) -> String {
        let Some(seconds) = self.seconds else {
            return "not measured".to_string();
        };
        match (self.objective_seconds, self.met) {
            (Some(objective), Some(met)) => {
                format!(
                    "{} (objective {}, {})",
                    duration(seconds),
                    duration(objective),
                    if met { "met" } else { "MISSED" }
                )
            }
            _ => format!("{} (no objective)", duration(seconds)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSummary {
    pub id: SnapshotId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub hostname: String,
    /// The snapshot restored; `None` when the drill failed before choosing one.
    pub snapshot: Option<SnapshotId>,
    pub verdict: DrillVerdict,
    /// Why the drill did not succeed, on one line.
    pub reason: Option<String>,
    /// From the start of the fetch to the end of verification.
    pub rto: Measured,
    /// Age of the restored data when the drill started.
    pub rpo: Measured,
    pub checks_passed: usize,
    pub checks_warned: usize,
    pub checks_failed: usize,
    pub phases: Vec<Phase>,
    /// Stored size of the drilled snapshot's sources.
    pub stored_bytes: u64,
    /// Shrinkage the drill recorded against the snapshot before the one it restored.
    pub anomalies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedCheck {
    pub drill: SnapshotId,
    pub drill_started_at: DateTime<Utc>,
    pub name: String,
    pub detail: String,
    /// Every mismatch, one per entry.
    pub problems: Vec<String>,
}

/// A backup attempt that did not commit a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupAttempt {
    /// The attempt's id (its start), not a snapshot id.
    pub id: SnapshotId,
    pub started_at: DateTime<Utc>,
    /// `None` when `unfinished`.
    pub finished_at: Option<DateTime<Utc>>,
    /// `failed`, `interrupted` or `unfinished` (still running when the report was made, or killed).
    pub outcome: AttemptOutcome,
    /// The error's first line; `None` for `unfinished`.
    pub reason: Option<String>,
    /// The sources asked for with `--only`; empty for all.
    pub only: Vec<String>,
    pub hostname: String,
}

/// What the RPO gap was counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapBasis {
    /// The backup attempt records (every successful backup, including snapshots retention removed since) and
    /// the snapshots in the repository.
    Attempts,
    /// The snapshots in the repository only: no attempt record covers the window (they were written by an older
    /// dr, or could not be written), so snapshots that `dr prune` removed are not seen and their time counts as
    /// a gap.
    Snapshots,
}

/// The longest time without a newer recovery point; see [`worst_gap`] for what counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpoGap {
    pub seconds: f64,
    pub from_snapshot: SnapshotId,
    /// The recovery point of `from_snapshot`.
    pub from: DateTime<Utc>,
    /// `None` when the gap is still open: no snapshot since `from_snapshot` up to the report's end.
    pub to_snapshot: Option<SnapshotId>,
    pub to: DateTime<Utc>,
    /// The current configuration's RPO.
    pub objective_seconds: Option<f64>,
    pub met: Option<bool>,
    pub basis: GapBasis,
    /// Recovery points known only from attempt records: snapshots that no longer exist (removed by prune).
    pub removed_snapshots: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotSummary {
    pub id: SnapshotId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// When its data was consistent: the oldest source's `consistent_at` (what a restore gets back to).
    pub recovery_point: DateTime<Utc>,
    pub hostname: String,
    pub stored_bytes: u64,
    pub plain_bytes: u64,
    /// Files that changed while they were read and are stored incomplete, as `source: path what happened`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    /// False for a day that ended before the repository's history began (its creation, its first snapshot or
    /// its first recorded backup attempt, whichever came first): there was nothing to back up into yet, so the
    /// day is shown as not applicable rather than as a day without backups.
    pub applicable: bool,
    pub snapshots: usize,
    /// Backup attempts that started that day and did not commit.
    pub backups_failed: usize,
    pub stored_bytes: u64,
    pub plain_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotAnomaly {
    /// The earlier snapshot of the pair.
    pub previous_snapshot: SnapshotId,
    /// The snapshot in which the source or table shrank.
    pub snapshot: SnapshotId,
    pub snapshot_started_at: DateTime<Utc>,
    /// `subject`, `before`, `after`, `unit` (`bytes` or `rows`).
    #[serde(flatten)]
    pub anomaly: Anomaly,
    /// The sentence the other formats show, e.g. `source uploads shrank by 60%: 10.0 MiB -> 4.0 MiB`.
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Snapshot,
    Drill,
    Attempt,
}

impl RecordKind {
    pub fn label(self) -> &'static str {
        match self {
            RecordKind::Snapshot => "Snapshot",
            RecordKind::Drill => "Drill",
            RecordKind::Attempt => "Backup attempt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreadable {
    pub kind: RecordKind,
    pub id: SnapshotId,
    pub error: String,
}

impl Report {
    pub fn render(&self, format: Format) -> Result<String> {
        match format {
            Format::Markdown => Ok(markdown::render(self)),
            Format::Html => Ok(html::render(self)),
            Format::Json => {
                let mut json =
                    serde_json::to_string_pretty(self).map_err(|e| Error::io("encoding the report", e.into()))?;
                json.push('\n');
                Ok(json)
            }
        }
    }

    /// The one-line headline every format opens with.
    pub fn headline(&self) -> String {
        match self.summary.findings.len() {
            0 => "all clear".to_string(),
            1 => "1 finding".to_string(),
            n => format!("{n} findings"),
        }
    }
}

/// Seconds as the report shows them (`12m 00s`, `1d 06h`); negative or absurd values read as `0ms`.
pub use crate::units::seconds as duration;

/// A time as the report shows it: `2026-11-25 04:00 UTC`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}
