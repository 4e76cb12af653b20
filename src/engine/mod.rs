//! The operations, each a function over a [`Repository`](crate::repo::Repository): what the CLI commands, the
//! service's jobs, drills and runbooks call.

mod attempt;
mod backup;
mod prune;
pub(crate) mod restore;
mod verify;

pub use backup::{BackupOptions, BackupReport, SourceReport, backup};
pub use prune::{
    Action, DEFAULT_ORPHAN_GRACE, OrphanGroup, PruneOptions, PruneReport, SnapshotPlan, Totals, UploadPlan, prune,
};
pub(crate) use restore::restore_snapshot;
pub use restore::{RestoreOptions, RestoreReport, SourceRestore, restore, restore_sources};
pub use verify::{ObjectVerdict, SnapshotVerdict, VerifyReport, VerifySelection, verify};
