//! Recording a backup attempt in the repository (`repo::attempt_record`): once when it starts, once when it
//! ends. Both writes are best effort: a record that cannot be written is logged and never changes what the
//! backup itself returns, and neither write may hold a backup up for long.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::attempt_record::AttemptRecord;

use super::BackupReport;

/// How long one record write may take (a store that hangs must not keep a failed backup, or a service
/// shutting down, waiting).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// An attempt in progress: its start record, and the recipients to seal the final one to (`None` when the
/// configured recipients are unusable: the backup itself then fails on them, and no record can be sealed).
pub(super) struct AttemptInProgress {
    record: AttemptRecord,
    recipients: Option<Arc<Recipients>>,
}

impl AttemptInProgress {
    /// Writes the `unfinished` record: if the process is killed, this is what the report will show.
    pub(super) async fn begin(
        recipients: Option<Arc<Recipients>>,
        repo: &Repository,
        only: &[String],
    ) -> AttemptInProgress {
        let record = AttemptRecord::started(Utc::now(), only);
        let attempt = AttemptInProgress { record, recipients };
        attempt.save(repo, &attempt.record).await;
        attempt
    }

    /// Replaces the start record with the outcome.
    pub(super) async fn finish(&self, repo: &Repository, outcome: &Result<BackupReport>) {
        let record = match outcome {
            Ok(report) => self.record.committed(report.snapshot.clone(), report.recovery_point),
            Err(e) => self.record.not_committed(matches!(e, Error::Cancelled | Error::LockLost { .. }), &e.to_string()),
        };
        self.save(repo, &record).await;
    }

    async fn save(&self, repo: &Repository, record: &AttemptRecord) {
        let Some(recipients) = &self.recipients else {
            tracing::warn!(attempt = %record.id, "the backup attempt is not recorded: no usable recipients");
            return;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, repo.save_attempt(recipients, record)).await {
            Ok(Ok(key)) => tracing::debug!(%key, outcome = record.outcome.label(), "backup attempt recorded"),
            Ok(Err(e)) => tracing::warn!(attempt = %record.id, error = %e, "could not record the backup attempt"),
            Err(_) => tracing::warn!(
                attempt = %record.id,
                "could not record the backup attempt: the repository did not answer within {}s",
                WRITE_TIMEOUT.as_secs()
            ),
        }
    }
}
