//! The recovery report: what was restored from which snapshot, the RPO suffered and the RTO achieved, and each
//! step's time, attempts and outcome. Written as JSON and Markdown next to the state file after every run.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::state::{RecoverState, StepOutcome, StepRecord};
use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::repo::snapshot_id::SnapshotId;
use crate::units;

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    pub runbook: String,
    pub runbook_path: PathBuf,
    /// `completed`, `completed with failures`, `failed at step "X"`, `interrupted at step "X"`.
    pub outcome: String,
    pub succeeded: bool,
    pub snapshot: SnapshotId,
    pub snapshot_consistent_at: DateTime<Utc>,
    /// The newest commit the change streams' replay restored, when the recovery replayed one (docs/pitr.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_to: Option<DateTime<Utc>>,
    /// Now minus the recovery point (the replay's, else the snapshot's consistency time): the RPO suffered.
    pub data_age_seconds: f64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Since the first run started, across resumes: the RTO actually achieved.
    pub total_seconds: f64,
    /// This invocation alone.
    pub run_seconds: f64,
    pub runs: u32,
    pub steps: Vec<StepRecord>,
}

impl RecoveryReport {
    pub fn new(state: &RecoverState, outcome: String, succeeded: bool, run_started: DateTime<Utc>) -> Self {
        let now = Utc::now();
        let seconds = |from: DateTime<Utc>| (now - from).num_milliseconds().max(0) as f64 / 1000.0;
        RecoveryReport {
            runbook: state.runbook.clone(),
            runbook_path: state.runbook_path.clone(),
            outcome,
            succeeded,
            snapshot: state.snapshot.clone(),
            snapshot_consistent_at: state.snapshot_consistent_at,
            recovered_to: state.recovered_to,
            data_age_seconds: seconds(state.recovered_to.unwrap_or(state.snapshot_consistent_at)),
            started_at: state.started_at,
            finished_at: now,
            total_seconds: seconds(state.started_at),
            run_seconds: seconds(run_started),
            runs: state.runs,
            steps: state.steps.clone(),
        }
    }

    pub fn markdown(&self) -> String {
        let d = units::seconds;
        let mut out = format!("# Recovery: {}\n\n", self.runbook);
        out.push_str(&format!("- Runbook: `{}`\n", self.runbook_path.display()));
        out.push_str(&format!("- Outcome: **{}**\n", self.outcome));
        out.push_str(&format!(
            "- Snapshot: `{}` (data consistent at {})\n",
            self.snapshot,
            self.snapshot_consistent_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        if let Some(recovered_to) = self.recovered_to {
            out.push_str(&format!(
                "- Change streams replayed up to {}\n",
                recovered_to.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        out.push_str(&format!("- Data age at recovery (RPO suffered): {}\n", d(self.data_age_seconds)));
        out.push_str(&format!(
            "- Total time (RTO achieved): {} (from {} to {}, {} run{})\n\n",
            d(self.total_seconds),
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        ));
        out.push_str("| # | Step | Kind | Outcome | Attempts | Duration |\n|---|---|---|---|---|---|\n");
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                step.name.replace('|', "\\|"),
                step.kind,
                step.outcome.label(),
                step.attempts,
                if step.outcome == StepOutcome::Pending { "-".to_string() } else { d(step.duration_seconds) }
            ));
        }
        for step in &self.steps {
            if step.outcome == StepOutcome::Pending {
                continue;
            }
            out.push_str(&format!("\n## {}\n\n{}\n", step.name, step.description));
            if let Some(error) = &step.error {
                out.push_str(&format!("\nError: {error}\n"));
            }
            if !step.output.is_empty() {
                out.push_str(&format!("\n```text\n{}\n```\n", step.output.join("\n")));
            }
        }
        out
    }

    /// Writes `<stem>.recovery-<time>.json` and `.md` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let base = format!("{stem}.recovery-{}", self.finished_at.format("%Y%m%dT%H%M%SZ"));
        let json_path = dir.join(format!("{base}.json"));
        let md_path = dir.join(format!("{base}.md"));
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io("rendering the recovery report", std::io::Error::other(e)))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        write_atomically(&json_path, &json).map_err(|e| Error::io(format!("writing {}", json_path.display()), e))?;
        write_atomically(&md_path, self.markdown().as_bytes())
            .map_err(|e| Error::io(format!("writing {}", md_path.display()), e))?;
        Ok((json_path, md_path))
    }
}
