//! Progress reporting through a small trait, so the engine never knows whether a terminal is watching.
//!
//! The CLI picks the implementation: bars on a TTY, periodic log lines under a service manager, nothing with
//! `-q` or `--json`. The engine says what it knows about each task's size, and no more:
//! - [`Progress::task`] with an exact total (a restore: the plaintext size is in the manifest), shown as a bar
//!   with a percentage and an ETA;
//! - [`Progress::estimated_task`] with an estimate (a database backup: the size of the dumped tables in the
//!   exported snapshot; a files backup: the sizes found by a scan running alongside), shown as a bar marked as
//!   an estimate, which grows when the work turns out larger;
//! - [`Progress::phase`] for work whose bytes dr cannot count (pg_restore reading a staged file): its name
//!   and how long it took, never a byte counter stuck at zero.

use std::sync::Arc;

/// Creates one [`ProgressTask`] per unit of work (a source being backed up, an object being restored).
pub trait Progress: Send + Sync {
    /// A task moving bytes; `total` is the exact number expected, when known.
    fn task(&self, name: &str, total: Option<u64>) -> Arc<dyn ProgressTask>;

    /// A task moving bytes whose total is only an estimate (it may turn out larger or smaller), or not known
    /// yet (see [`ProgressTask::set_estimate`]).
    fn estimated_task(&self, name: &str, estimate: Option<u64>) -> Arc<dyn ProgressTask> {
        self.task(name, estimate)
    }

    /// A phase of work that moves no bytes dr can count: shown by its name while it runs, with its duration
    /// and the summary passed to [`ProgressTask::finish`] at the end.
    fn phase(&self, name: &str) -> Arc<dyn ProgressTask> {
        self.task(name, None)
    }
}

pub trait ProgressTask: Send + Sync {
    fn advance(&self, bytes: u64);
    /// An estimate of the total learned while the task runs (a files source's scan finishing).
    fn set_estimate(&self, _total: u64) {}
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
