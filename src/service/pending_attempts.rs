//! Backup attempts the service could not record in the repository because it could not reach it (the store
//! unreachable, the repository missing): kept in `<state_dir>/pending-attempts.json` and written into the
//! repository as attempt records (`repo::attempt_record`) by the next backup job that reaches it. So a week in
//! which the repository was down still shows in the report, as failed attempts with their reasons, once it is
//! back; until then `/status` and the alerts carry the failure.
//!
//! The file holds what a record holds (times, outcome, the error's first line, the host), in plain JSON like
//! the rest of `state_dir`: error messages never carry secrets.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::crypto::Recipients;
use crate::repo::Repository;
use crate::repo::attempt_record::AttemptRecord;

/// More than this many pending records are not kept: the oldest go first (a repository down for weeks is
/// told by the alerts, not by thousands of records).
const LIMIT: usize = 1000;

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("pending-attempts.json")
}

fn load(state_dir: &Path) -> Vec<AttemptRecord> {
    let path = path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "ignoring an unreadable file of pending attempt records: {e}");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

fn save(state_dir: &Path, records: &[AttemptRecord]) {
    let path = path(state_dir);
    let written = if records.is_empty() {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    } else {
        serde_json::to_vec_pretty(records)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::files::write_atomically(&path, &json))
    };
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), "could not save the pending attempt records: {e}");
    }
}

/// Keeps a failed attempt that could not be written to the repository.
pub(super) fn remember(state_dir: &Path, record: AttemptRecord) {
    let mut records = load(state_dir);
    records.push(record);
    let excess = records.len().saturating_sub(LIMIT);
    records.drain(..excess);
    save(state_dir, &records);
}

/// Writes the pending records into the repository; those that fail stay pending.
pub(super) async fn flush(config: &Config, repo: &Repository, state_dir: &Path) {
    let records = load(state_dir);
    if records.is_empty() {
        return;
    }
    let Ok(recipients) = Recipients::parse(&config.encryption.recipients) else {
        return;
    };
    let mut left = Vec::new();
    for record in records {
        if let Err(e) = repo.save_attempt(&recipients, &record).await {
            tracing::warn!(attempt = %record.id, error = %e, "could not record a pending backup attempt");
            left.push(record);
        }
    }
    save(state_dir, &left);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Identities, KeyPair};
    use crate::store::MemoryStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn an_attempt_that_could_not_reach_the_repository_is_recorded_later() {
        let state = tempfile::tempdir().unwrap();
        let started = AttemptRecord::started(chrono::Utc::now(), &[]);
        remember(state.path(), started.not_committed(false, "repository s3://b: unreachable"));
        assert_eq!(load(state.path()).len(), 1);

        let key = KeyPair::generate();
        let mut config = Config::default();
        config.encryption.recipients = vec![key.recipient()];
        let repo = Repository::init(Arc::new(MemoryStore::new())).await.unwrap();
        flush(&config, &repo, state.path()).await;
        assert!(!path(state.path()).exists(), "nothing left pending");
        let ids = repo.attempt_ids().await.unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0], started.id);
        let identity = state.path().join("identity.txt");
        key.write_identity_file(&identity).unwrap();
        let record = repo.attempt(&ids[0], &Identities::load(&identity).unwrap()).await.unwrap();
        assert_eq!(record.reason.as_deref(), Some("repository s3://b: unreachable"));
    }
}
