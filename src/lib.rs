//! `dr`: backup and disaster recovery for a PostgreSQL-backed web site.
//!
//! The engine is this library; the `dr` binary (`src/main.rs`, `src/cli/`) is a thin command line over it. A
//! newcomer should read docs/ARCHITECTURE.md first. Every module, one line each (internal ones in plain text:
//! they are `pub(crate)`; the others are the API the binary and the integration tests use):
//!
//! - [`config`]: the TOML file as plain data: serde types, search order, environment overrides;
//! - [`settings`]: the configuration checked: each module's validation, called in one place for every command;
//! - [`store`]: object storage behind one async [`Store`] trait: a local directory, memory, S3, and the
//!   bandwidth limit wrapped around any of them;
//! - [`repo`]: the repository on a store: layout, snapshot ids, manifests, records, locks, the commit rule;
//! - [`pipeline`]: the streaming path source → zstd → age → store, and back;
//! - `crypto`: age recipients, identities and key generation (re-exported: [`Recipients`], [`Identities`],
//!   [`KeyPair`]);
//! - [`pg`]: everything PostgreSQL: connection strings, connections, pg_dump and pg_restore, scratch servers;
//! - [`files`]: files sources: a directory tree as a tar stream plus an index, and safe extraction; the chunked
//!   format's tree, metadata walk, restore and files cache;
//! - [`chunks`]: content-addressed storage: the dedup key, content-defined chunking, packs and their index;
//! - [`engine`]: backup, restore, verify and prune;
//! - [`drill`]: restore drills: restore into a scratch, check, measure RPO and RTO, record;
//! - [`recover`]: `dr recover`: executable runbooks, resumable;
//! - [`report`]: `dr report`: drills, attempts and snapshots over a window, as Markdown, HTML and JSON;
//! - [`retention`]: which snapshots a retention policy keeps (restic's `forget` rules);
//! - [`check`]: `dr check`: every problem a run would meet, found up front;
//! - [`service`]: `dr serve`: schedules, health and metrics endpoints, alerts;
//! - [`demo`]: `dr demo`: the whole round trip on scratch servers;
//! - [`error`]: the one typed [`Error`], its hints and exit codes;
//! - [`progress`]: the [`Progress`] trait the engine reports through;
//! - [`units`]: human-readable sizes and durations;
//! - `anomalies`: shrinkage of a source or a table between two snapshots;
//! - `audit`: the audit log, one JSON line per backup, restore, drill and prune;
//! - `host`: this host's name and the user dr runs as, looked up one way for locks, records and libpq;
//! - [`retry`]: the one backoff policy (S3 requests, download resumes, lock waits, alert deliveries);
//! - `run_dir`: a run's private directory for plaintext, swept after a crash.

pub(crate) mod anomalies;
pub(crate) mod audit;
pub mod check;
pub mod chunks;
pub mod config;
pub(crate) mod crypto;
pub mod demo;
pub mod drill;
pub mod engine;
pub mod error;
pub mod files;
pub(crate) mod host;
pub mod pg;
pub mod pipeline;
pub mod progress;
pub mod recover;
pub mod repo;
pub mod report;
pub mod retention;
pub mod retry;
pub(crate) mod run_dir;
pub mod service;
pub mod settings;
pub mod store;
pub mod stream;
pub mod units;

pub use config::Config;
pub use crypto::{Identities, KeyPair, Recipients};
pub use engine::{
    BackupOptions, BackupReport, RestoreOptions, RestoreReport, VerifyReport, VerifySelection, backup, restore, verify,
};
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress, ProgressTask};
pub use repo::Repository;
pub use repo::manifest::Manifest;
pub use repo::snapshot_id::{NotASelector, Selector, SnapshotId};
pub use store::Store;
