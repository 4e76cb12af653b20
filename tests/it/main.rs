//! The integration tests: ONE test binary (linked once, started once) with a module per area, each running the
//! real `dr` binary (`CARGO_BIN_EXE_dr`) against real PostgreSQL clusters, Garage and files. The shared fixtures
//! are in tests/common (its doc has the rule for tests that need an external tool).
//!
//! Adding a test file: put it here as `tests/it/NAME.rs`, add `mod NAME;` below (sorted), start it with
//! `use crate::common;` if it needs the fixtures, and run it alone with `cargo test --test it NAME::` (or
//! `tests/run NAME`). Every module shares this process: a test must not change process-wide state (environment
//! variables, the current directory, signal dispositions, the umask, resource limits); set them on the `Command`
//! of the child it starts instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod breakglass;
mod bucket_source;
mod changing_files;
mod chunked;
mod chunks;
mod cli;
mod compose_dev;
mod config_paths;
mod container;
mod conventions;
mod database_properties;
mod deploy_scripts;
mod drill;
mod files_metadata;
mod leftovers;
mod locks;
mod messages;
mod pg_archive;
mod pg_tls;
mod pitr;
mod progress;
mod prune;
mod recover;
mod report;
mod roundtrip;
mod s3;
mod s3_faults;
mod safety;
mod schedules;
mod service;
mod signals;
mod store_contract;
mod tampering;
mod throttle;
