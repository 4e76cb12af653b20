//! The operations, each a function over a [`Repository`](crate::repo::Repository): what the CLI commands, the
//! service's jobs, drills and runbooks call.

mod attempt;
mod backup;
pub(crate) mod chunked;
mod prune;
pub(crate) mod restore;
mod stream_prune;
mod verify;

/// The hint of a PostgreSQL client tool that failed while dr ran it against a source (pg_dump, pg_restore).
pub(crate) const PG_TOOL_FAILED_HINT: &str =
    "the tool's own message is quoted above; check the connection and the role's privileges";

/// The hint of pg_dumpall failing: it runs only for a source's roles, which the configuration can leave out.
pub(crate) const PG_DUMPALL_FAILED_HINT: &str = "pg_dumpall backs up the roles (`globals`, on by default); its \
     message is quoted above: check the role's privileges, or set `globals = false` on this [[postgres]] source if \
     its roles come back some other way (docs/configuration.md, \"Roles: globals\")";

pub use backup::{BackupOptions, BackupReport, ChunkedReport, SourceReport, backup};
pub(crate) use chunked::chunked_reader;
pub use chunked::dedup_key_file;
pub use prune::{
    Action, DEFAULT_ORPHAN_GRACE, OrphanGroup, PruneOptions, PruneReport, SnapshotPlan, Totals, UploadPlan, prune,
};
pub(crate) use restore::restore_snapshot;
pub use restore::{RestoreOptions, RestoreReport, SourceRestore, restore, restore_sources};
pub use verify::{ObjectVerdict, ReadPacks, SnapshotVerdict, VerifyReport, VerifySelection, verify};
