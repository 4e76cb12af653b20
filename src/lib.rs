//! `dr`: backup and disaster recovery for a PostgreSQL-backed web site.
//!
//! The engine is this library; the `dr` binary is a thin command line over it. A newcomer should read
//! docs/ARCHITECTURE.md first. The main pieces:
//!
//! - [`config`]: the TOML configuration and its environment overrides;
//! - [`store`]: object storage behind one async [`Store`] trait;
//! - [`repo`]: the repository layout, snapshot ids and manifests on top of a store;
//! - [`pipeline`]: the streaming path source → zstd → age → store, and back;
//! - [`pg`] and [`files`]: the two kinds of sources;
//! - [`engine`]: backup, restore and verify;
//! - [`demo`]: the end-to-end demonstration behind `dr demo`.

pub mod anomalies;
pub mod audit;
pub mod check;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod drill;
pub mod engine;
pub mod error;
pub mod files;
pub mod pg;
pub mod pipeline;
pub mod progress;
pub mod recover;
pub mod repo;
pub mod report;
pub mod retention;
pub mod retry;
pub mod run_dir;
pub mod service;
pub mod store;
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
pub use repo::snapshot_id::{Selector, SnapshotId};
pub use store::Store;
