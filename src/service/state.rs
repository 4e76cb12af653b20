//! What the service knows about itself and the repository: every job's runs, the last backup per source, the
//! last drill, the repository's RPO age. `/status`, `/metrics`, `/readyz` and `dr status` read it; the jobs and
//! the repository watcher write it. Each job's last start is also persisted, for catching up missed runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::JobKind;
use crate::error::Result;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    pub started_at: Option<DateTime<Utc>>,
    pub jobs: BTreeMap<String, JobStatus>,
    /// Per source, from the last successful backup job.
    pub backups: BTreeMap<String, SourceBackup>,
    pub last_backup: Option<BackupRun>,
    pub last_drill: Option<DrillRun>,
    pub repository: RepositoryStatus,
    /// Per continuous source: its change capture (docs/pitr.md).
    pub streams: BTreeMap<String, CaptureStatus>,
}

/// One source's change capture, as its last event left it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureStatus {
    pub generation: Option<String>,
    /// Commits up to about then are stored: a point-in-time restore reaches here. Its age is the RPO of the
    /// stream.
    pub covered_until: Option<DateTime<Utc>>,
    pub last_segment_at: Option<DateTime<Utc>>,
    /// WAL the source server keeps for the slot.
    pub slot_retained_bytes: Option<i64>,
    /// Why the capture is not running, while it is not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub kind: JobKind,
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_outcome: Option<JobOutcome>,
    pub last_error: Option<String>,
    pub last_duration_seconds: Option<f64>,
    /// Runs by outcome since the service started.
    pub runs: BTreeMap<JobOutcome, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Success,
    Failure,
    /// Skipped because the previous run of the same job was still going.
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::Failure => "failure",
            JobOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceBackup {
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub stored_bytes: u64,
    pub plain_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupRun {
    pub snapshot: String,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub stored_bytes: u64,
    /// Files that changed while being read, stored incomplete (`dr backup` would exit with 3).
    pub incomplete_files: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillRun {
    pub id: String,
    pub snapshot: Option<String>,
    pub finished_at: DateTime<Utc>,
    pub passed: bool,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepositoryStatus {
    pub location: String,
    /// When the repository was last listed successfully.
    pub checked_at: Option<DateTime<Utc>>,
    pub reachable: bool,
    pub error: Option<String>,
    pub snapshots: usize,
    pub latest_snapshot: Option<String>,
    /// The newest snapshot's consistency time: its age is the RPO an incident would suffer now.
    pub latest_consistent_at: Option<DateTime<Utc>>,
    pub rpo_objective_seconds: Option<f64>,
    /// Live locks on the repository (who holds them, since when), as of `checked_at`.
    pub locks: Vec<HeldLock>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldLock {
    pub kind: String,
    pub holder: String,
    pub since: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl RepositoryStatus {
    /// Lists `repo`: its snapshots, the newest one's consistency time and the live locks.
    pub async fn read(repo: &Repository, rpo_objective: Option<Duration>) -> Result<RepositoryStatus> {
        let ids = repo.snapshot_ids().await?;
        let latest = match ids.last() {
            Some(id) => Some(repo.manifest(id).await?),
            None => None,
        };
        let locks = repo
            .locks()
            .await?
            .into_iter()
            .filter(|l| !l.expired)
            .filter_map(|l| l.info)
            .map(|info| HeldLock {
                kind: info.kind.to_string(),
                holder: info.holder(),
                since: info.created_at,
                expires_at: info.expires_at,
            })
            .collect();
        Ok(RepositoryStatus {
            location: repo.location().to_string(),
            checked_at: Some(Utc::now()),
            reachable: true,
            error: None,
            snapshots: ids.len(),
            latest_snapshot: latest.as_ref().map(|m| m.id.to_string()),
            latest_consistent_at: latest.as_ref().and_then(Manifest::consistent_at),
            rpo_objective_seconds: rpo_objective.map(|d| d.as_secs_f64()),
            locks,
        })
    }

    pub fn rpo_age_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        self.latest_consistent_at.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// Why the service is not ready, if it is not: the repository unreachable, or the newest snapshot older
    /// than the RPO objective (or none at all while an objective is set).
    pub fn unready_reasons(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.reachable {
            reasons.push(format!(
                "repository {} unreachable: {}",
                self.location,
                self.error.as_deref().unwrap_or("not checked yet")
            ));
        }
        if let Some(objective) = self.rpo_objective_seconds {
            match self.rpo_age_seconds(now) {
                Some(age) if age > objective => reasons.push(format!(
                    "RPO objective breached: the newest snapshot's data is {age:.0}s old, the objective is {objective:.0}s"
                )),
                None if self.reachable => reasons.push("RPO objective breached: no snapshot yet".into()),
                _ => {}
            }
        }
        reasons
    }
}

/// Each job's last start, persisted in `<state_dir>/jobs.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub last_started: BTreeMap<String, DateTime<Utc>>,
}

impl Persisted {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("jobs.json")
    }

    /// A missing or unreadable file is an empty state (logged): at worst a missed run is not caught up.
    pub fn load(state_dir: &Path) -> Persisted {
        let path = Persisted::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring an unreadable state file: {e}");
                Persisted::default()
            }),
            Err(_) => Persisted::default(),
        }
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let path = Persisted::path(state_dir);
        crate::files::write_atomically(&path, &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)
    }
}
