//! Progress reporting through a small trait, so the engine never knows whether a terminal is watching.
//!
//! The CLI picks the implementation: bars on a TTY, periodic log lines under a service manager, nothing with
//! `-q` or `--json`.

use std::sync::Arc;

/// Creates one [`ProgressTask`] per unit of work (a source being backed up, an object being restored).
pub trait Progress: Send + Sync {
    /// `total` is the expected number of bytes, when known.
    fn task(&self, name: &str, total: Option<u64>) -> Arc<dyn ProgressTask>;
}

pub trait ProgressTask: Send + Sync {
    fn advance(&self, bytes: u64);
    /// Marks the task done; `summary` is a short result such as "1.2 GiB in 14 s".
    fn finish(&self, summary: &str);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn task(&self, _name: &str, _total: Option<u64>) -> Arc<dyn ProgressTask> {
        Arc::new(NoProgress)
    }
}

impl ProgressTask for NoProgress {
    fn advance(&self, _bytes: u64) {}
    fn finish(&self, _summary: &str) {}
}
