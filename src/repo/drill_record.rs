//! The record a restore drill leaves in the repository: `drills/<drill id>.json.age`, the JSON below encrypted
//! to the repository's recipients (it names databases, tables and roles, like a manifest's private half).
//!
//! A record is written for every drill that got as far as opening the repository, passed or failed, so the
//! weekly report sees the failures too. The drill id has the snapshot-id form (`20261125T040000Z-1a2b3c`, the
//! drill's start), so a listing of `drills/` is already a timeline and a report window needs no decryption of
//! the records outside it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::snapshot_id::SnapshotId;

/// Version of the record layout this build writes.
pub const DRILL_RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub format: u32,
    /// The drill's own id: its start time in snapshot-id form.
    pub id: SnapshotId,
    /// The snapshot drilled; `None` when the drill failed before one was chosen (an empty repository).
    pub snapshot: Option<SnapshotId>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub hostname: String,
    pub dr_version: String,
    /// True when the restore completed and no check failed (warnings allowed). Objectives are judged apart.
    pub passed: bool,
    /// True when the drill passed and neither objective was breached: the condition for exit code 0.
    pub succeeded: bool,
    /// Why the drill did not succeed, on one line; `None` when it did.
    pub reason: Option<String>,
    /// When the snapshot's data was consistent (the oldest source's `consistent_at`).
    pub snapshot_consistent_at: Option<DateTime<Utc>>,
    /// Where the restore went.
    pub scratch: ScratchDescription,
    /// Wall time of each phase, in order.
    pub phases: Vec<Phase>,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
    /// Age of the snapshot's data when the drill started: the data an incident at that moment would have lost.
    pub rpo: Measure,
    /// Wall time from the start of the fetch to the end of verification.
    pub rto: Measure,
    pub sizes: Vec<SourceSize>,
    /// Shrinkage against the previous snapshot beyond the configured fraction.
    pub anomalies: Vec<String>,
    pub tools: Tools,
    /// For a snapshot that is a base of its source's change stream: the stream replayed on top of it to the
    /// newest stored change (docs/pitr.md). `rpo` is then the stream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamDrill>,
}

/// What a drill's replay of a change stream did and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDrill {
    pub source: String,
    pub generation: String,
    /// How far the stored stream reached when the drill planned its replay.
    pub covered_until: DateTime<Utc>,
    /// The newest commit restored.
    pub recovered_to: DateTime<Utc>,
    pub segments: usize,
    pub transactions: u64,
    pub changes: u64,
    pub replay_seconds: f64,
}

impl DrillRecord {
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScratchDescription {
    /// `embedded` (a throw-away cluster dr started) or `server` (`scratch_url`).
    pub kind: String,
    /// Connection string without password, for `server`; the socket directory for `embedded`.
    pub location: String,
    /// The scratch server's version, when it was reached.
    pub server_version: Option<String>,
    /// Time to start the embedded cluster (not part of the RTO: in an incident the target server exists).
    pub start_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// One of [`PHASE_FETCH`], [`PHASE_PG_RESTORE`], [`PHASE_FILES`], [`PHASE_CHECKS`], or a combined name such
    /// as `download+decrypt+pg_restore` when a streamed restore does both at once.
    pub name: String,
    pub seconds: f64,
}

pub const PHASE_FETCH: &str = "download+decrypt";
pub const PHASE_PG_RESTORE: &str = "pg_restore";
pub const PHASE_STREAMED: &str = "download+decrypt+pg_restore";
pub const PHASE_FILES: &str = "files";
pub const PHASE_CHECKS: &str = "checks";
/// A restore into a bucket: the objects uploaded from the staged, checked copy.
pub const PHASE_UPLOAD: &str = "upload";
/// A point-in-time restore's replay of the change stream after the base.
pub const PHASE_REPLAY: &str = "replay";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    /// Worth a look, not a failure (pg_restore warnings, shrinkage).
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `objects`, `pg_restore app`, `row counts app`, `roles`, `files uploads`, or a user
    /// check's `name`.
    pub name: String,
    pub status: CheckStatus,
    /// One line: what was found.
    pub detail: String,
    /// Each mismatch or warning, one per line (every one, not just the first).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// The measured value, in seconds; `None` when the drill ended before it could be measured.
    pub seconds: Option<f64>,
    /// The objective from `[objectives]`, in seconds; `None` when none is set.
    pub objective_seconds: Option<f64>,
}

impl Measure {
    /// `Some(false)` when both are known and the value exceeds the objective.
    pub fn met(&self) -> Option<bool> {
        Some(self.seconds? <= self.objective_seconds?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSize {
    pub name: String,
    pub kind: super::manifest::SourceKind,
    pub stored_bytes: u64,
    pub plain_bytes: u64,
}

impl From<&super::manifest::SourceEntry> for SourceSize {
    fn from(source: &super::manifest::SourceEntry) -> SourceSize {
        SourceSize {
            name: source.name.clone(),
            kind: source.kind,
            stored_bytes: source.stored_size(),
            plain_bytes: source.plain_size(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tools {
    pub pg_restore: Option<String>,
    /// The scratch server's major version.
    pub scratch_postgres: Option<String>,
}
