//! Everything that talks to PostgreSQL: connection strings, dr's own connections, the tools (pg_dump,
//! pg_dumpall, pg_restore, initdb), the consistency snapshot, globals, the database's own properties, restore
//! targets, scratch servers.

pub mod archive;
mod connect;
mod conninfo;
pub(crate) mod database;
mod dump;
mod globals;
pub mod inspect;
mod restore;
pub(crate) mod scratch;
pub(crate) mod tools;

/// A `[[postgres]]` source's connection string, parsed; a bad one is a configuration error naming the source.
/// Validation, backup, its preflight and `dr check` all parse it here.
pub fn source_conninfo(source: &crate::config::PostgresSource) -> crate::Result<ConnInfo> {
    ConnInfo::parse(&source.url)
        .map_err(|e| crate::Error::ConfigInvalid(format!("postgres source {:?}: url: {e}", source.name)))
}

pub use connect::{ConnectError, connect, database_error, describe};
pub use conninfo::{ConnInfo, ConnInfoError, Resolved, looks_like_conninfo, redact_target};
pub use database::PropertiesOutcome;
pub(crate) use dump::quote_literal;
pub use dump::{ExportedSnapshot, SnapshotFacts, pg_dump_command, pg_dumpall_command, quote_ident};
pub use globals::{GlobalsOutcome, split_statements};
pub use restore::{DatabaseTarget, RestoreInput, TargetState, pg_restore_command};
pub use scratch::{ScratchOptions, ScratchPostgres};
