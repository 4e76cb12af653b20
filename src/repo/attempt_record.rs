//! The record every backup attempt leaves in the repository: `attempts/<attempt id>.json.age`, the JSON below
//! encrypted to the repository's recipients (a failure's reason may name a database, a host or a path, like a
//! manifest's private half).
//!
//! Committed snapshots alone cannot tell a week of failed backups from a week of no backups, nor an hourly
//! series thinned by retention from hours that were missed. So `engine::backup` writes a record when it starts
//! (outcome `unfinished`) and overwrites it with the outcome when it ends: `ok` with the snapshot committed,
//! `failed` with the error's first line, or `interrupted`. A backup killed outright leaves the `unfinished`
//! record behind, which is exactly what the report should show. Writing a record is best effort: a failure to
//! write one is logged and never replaces the backup's own outcome. The id has the snapshot-id form (the
//! attempt's start), so `attempts/` lists as a timeline and `dr prune` can expire records by their name alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::snapshot_id::SnapshotId;

/// Version of the record layout this build writes.
pub const ATTEMPT_RECORD_FORMAT: u32 = 1;

/// How long `dr prune` keeps attempt records: long enough for any weekly or monthly report window, short
/// enough that listing `attempts/` stays cheap (90 days of hourly backups is about 2,200 small objects).
pub const ATTEMPT_HISTORY: chrono::TimeDelta = chrono::TimeDelta::days(90);

/// The attempt records `dr prune` deletes: those that started more than [`ATTEMPT_HISTORY`] before `now`.
/// Their names say when they started, so none has to be read. A backup writes its record outside the
/// repository lock, which is safe because a record this old is never one that is still being written.
pub fn expired(ids: &[SnapshotId], now: DateTime<Utc>) -> Vec<SnapshotId> {
    ids.iter().filter(|id| id.time() < now - ATTEMPT_HISTORY).cloned().collect()
}

/// The longest reason a record keeps: one line of an error, never a whole stderr.
const REASON_LIMIT: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The snapshot was committed.
    Ok,
    /// The backup stopped on an error; nothing was committed.
    Failed,
    /// Cancelled (SIGINT/SIGTERM, a service shutting down) or the repository lock was lost; nothing committed.
    Interrupted,
    /// The record written at the start and never updated: the backup is still running, or the process was
    /// killed (or the final record could not be written).
    Unfinished,
}

impl AttemptOutcome {
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Unfinished => "unfinished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub format: u32,
    /// The attempt's own id: its start time in snapshot-id form (not the snapshot's id).
    pub id: SnapshotId,
    pub started_at: DateTime<Utc>,
    /// `None` while `unfinished`.
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    /// The snapshot committed, when `ok`.
    pub snapshot: Option<SnapshotId>,
    /// When the committed snapshot's data was consistent (its oldest source's `consistent_at`): the recovery
    /// point it gave, which stays known after `dr prune` removes the snapshot.
    pub recovery_point: Option<DateTime<Utc>>,
    /// Why the attempt did not commit, on one line; `None` when it did.
    pub reason: Option<String>,
    /// The sources asked for (`--only`); empty for all.
    pub only: Vec<String>,
    pub hostname: String,
    pub dr_version: String,
}

impl AttemptRecord {
    /// The record written when an attempt starts.
    pub fn started(started_at: DateTime<Utc>, only: &[String]) -> AttemptRecord {
        AttemptRecord {
            format: ATTEMPT_RECORD_FORMAT,
            id: SnapshotId::new(started_at),
            started_at,
            finished_at: None,
            outcome: AttemptOutcome::Unfinished,
            snapshot: None,
            recovery_point: None,
            reason: None,
            only: only.to_vec(),
            hostname: crate::host::hostname(),
            dr_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The same attempt, ended with a committed snapshot.
    pub fn committed(&self, snapshot: SnapshotId, recovery_point: DateTime<Utc>) -> AttemptRecord {
        AttemptRecord {
            finished_at: Some(Utc::now()),
            outcome: AttemptOutcome::Ok,
            snapshot: Some(snapshot),
            recovery_point: Some(recovery_point),
            ..self.clone()
        }
    }

    /// The same attempt, ended without a snapshot: `interrupted` or `failed`, with the error's first line.
    pub fn not_committed(&self, interrupted: bool, error: &str) -> AttemptRecord {
        AttemptRecord {
            finished_at: Some(Utc::now()),
            outcome: if interrupted { AttemptOutcome::Interrupted } else { AttemptOutcome::Failed },
            reason: Some(one_line(error)),
            ..self.clone()
        }
    }
}

/// The first non-empty line of an error, at most [`REASON_LIMIT`] characters. `Error`'s messages never hold
/// secrets (connection strings are redacted where they are built), so the line can be kept as it is.
fn one_line(error: &str) -> String {
    let line = error.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown error");
    if line.chars().count() <= REASON_LIMIT {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(REASON_LIMIT).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_ends_in_one_of_its_outcomes() {
        let start = AttemptRecord::started(Utc::now(), &["app".into()]);
        assert_eq!((start.outcome, start.finished_at), (AttemptOutcome::Unfinished, None));
        let failed = start.not_committed(false, "\nconnection refused\nsecond line");
        assert_eq!(failed.outcome, AttemptOutcome::Failed);
        assert_eq!(failed.reason.as_deref(), Some("connection refused"));
        assert_eq!(failed.id, start.id);
        assert_eq!(start.not_committed(true, "interrupted").outcome, AttemptOutcome::Interrupted);
        let long = start.not_committed(false, &"x".repeat(2000));
        assert_eq!(long.reason.map(|r| r.chars().count()), Some(REASON_LIMIT + 3));
        let ok = start.committed(start.id.clone(), start.started_at);
        assert_eq!((ok.outcome, ok.snapshot.is_some(), ok.reason), (AttemptOutcome::Ok, true, None));
    }

    #[test]
    fn records_older_than_the_history_expire() {
        let now = Utc::now();
        let ids: Vec<SnapshotId> =
            [100, 91, 89, 1].iter().map(|days| SnapshotId::new(now - chrono::TimeDelta::days(*days))).collect();
        assert_eq!(expired(&ids, now), ids[..2]);
    }
}
