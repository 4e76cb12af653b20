//! `dr`: backup and disaster recovery for a PostgreSQL-backed web site.
//!
//! The engine is this library; the `dr` binary (`src/main.rs`, `src/cli/`) is a thin command line over it. A
//! newcomer should read docs/ARCHITECTURE.md first. Below, every module with one line each: the `pub` ones are
//! the API the binary and the integration tests use, the `pub(crate)` ones are internal.

// The configuration.
pub mod config; // the TOML file as plain data: serde types, search order, environment overrides
pub mod settings; // the configuration checked: each module's validation, called in one place for every command

// Storage.
pub(crate) mod crypto;
pub mod pipeline; // the streaming path source -> zstd -> age -> store, and back
pub mod repo; // the repository on a store: layout, snapshot ids, manifests, records, locks, the commit rule
pub mod store; // object storage behind one async `Store` trait: local directory, memory, S3 // age recipients, identities and key generation (re-exported below)

// Sources.
pub mod files;
pub mod pg; // everything PostgreSQL: connection strings, connections, pg_dump/pg_restore, scratch servers // files sources: a directory tree as a tar stream plus an index, and safe extraction

// Operations.
pub mod check; // `dr check`: every problem a run would meet, found up front
pub mod demo;
pub mod drill; // restore drills: restore into a scratch, check, measure RPO/RTO, record
pub mod engine; // backup, restore, verify and prune
pub mod recover; // `dr recover`: executable runbooks, resumable
pub mod report; // `dr report`: drills, attempts and snapshots over a window, as Markdown, HTML and JSON
pub mod retention; // which snapshots a retention policy keeps (restic's forget rules)
pub mod service; // `dr serve`: schedules, health and metrics endpoints, alerts // `dr demo`: the whole round trip on scratch servers

// Shared pieces.
pub(crate) mod anomalies; // shrinkage of a source or a table between two snapshots
pub(crate) mod audit; // the audit log: one JSON line per backup, restore, drill and prune
pub mod error; // the one typed `Error`, its hints and exit codes
pub mod progress; // the `Progress` trait the engine reports through
pub(crate) mod run_dir;
pub mod units; // human-readable sizes and durations // a run's private directory for plaintext, swept after a crash

pub use config::Config;
pub use crypto::{Identities, KeyPair, Recipients};
pub use engine::{
    BackupOptions, BackupReport, RestoreOptions, RestoreReport, VerifyReport, VerifySelection, backup, restore, verify,
};
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress, ProgressTask};
pub use repo::Repository;
pub use repo::manifest::Manifest;
pub use repo::snapshot_id::{Selector, SnapshotId};
pub use store::Store;
