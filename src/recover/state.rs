//! The state of a recovery, saved after every step so that `--resume` can continue an interrupted one with the
//! same snapshot. One file per runbook: `<runbook file stem>.recover-state.json`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::repo::snapshot_id::SnapshotId;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverState {
    pub runbook: String,
    pub runbook_path: PathBuf,
    pub snapshot: SnapshotId,
    /// When the snapshot's data was consistent (the earliest of its sources).
    pub snapshot_consistent_at: DateTime<Utc>,
    /// When the first run of this recovery started: the RTO clock.
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many times `dr recover` worked on this recovery (1 + resumes).
    pub runs: u32,
    /// The run went past the last step.
    pub finished: bool,
    /// One per step of the runbook, in its order.
    pub steps: Vec<StepRecord>,
    /// The databases' change streams are replayed after the snapshot (a recovery to `latest` or to a time;
    /// docs/pitr.md); false for a snapshot named by its id, and in recoveries of older dr versions.
    #[serde(default)]
    pub point_in_time: bool,
    /// The time replayed up to; `None` for `latest` (all that is stored when the step runs).
    #[serde(default)]
    pub replay_until: Option<DateTime<Utc>>,
    /// The newest commit a replay restored (the earliest over the databases): the recovery point when it is
    /// later than the snapshot's.
    #[serde(default)]
    pub recovered_to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: String,
    /// What it does, with its resolved arguments and no secret.
    pub description: String,
    pub outcome: StepOutcome,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The output of a `run` step (its last lines), or what a check found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Not run (yet).
    Pending,
    Succeeded,
    /// Failed with `on_failure = "stop"`: the run stopped here.
    Failed,
    /// Failed with `on_failure = "continue"`: the run went on.
    FailedContinued,
    /// Before `--from-step`: not run by choice.
    Skipped,
    /// Stopped by a signal while it ran.
    Interrupted,
}

impl StepOutcome {
    /// Whether a resumed run goes past this step.
    pub fn is_done(self) -> bool {
        matches!(self, StepOutcome::Succeeded | StepOutcome::FailedContinued | StepOutcome::Skipped)
    }

    pub fn label(self) -> &'static str {
        match self {
            StepOutcome::Pending => "not run",
            StepOutcome::Succeeded => "ok",
            StepOutcome::Failed => "FAILED",
            StepOutcome::FailedContinued => "FAILED (continued)",
            StepOutcome::Skipped => "skipped",
            StepOutcome::Interrupted => "interrupted",
        }
    }
}

impl RecoverState {
    pub fn load(path: &Path) -> Result<Option<RecoverState>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::io(format!("reading recovery state {}", path.display()), std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading recovery state {}", path.display()), e)),
        }
    }

    /// Writes the state atomically (temp file + rename), so a crash leaves the previous state.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.updated_at = Utc::now();
        let context = || format!("saving recovery state {}", path.display());
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::io(context(), std::io::Error::other(e)))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(context(), e))?;
        }
        write_atomically(path, &json).map_err(|e| Error::io(context(), e))
    }

    /// Where the run starts: after the last step that is done.
    pub fn resume_index(&self) -> usize {
        self.steps.iter().position(|s| !s.outcome.is_done()).unwrap_or(self.steps.len())
    }
}
