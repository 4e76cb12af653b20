//! The audit log: one JSON line per backup, restore, drill and prune, appended to `[audit] path`: when, who
//! (user, host, process), what, which snapshot, the outcome. The engine writes it, so a command run by hand
//! and a job of `dr serve` are recorded alike.
//!
//! Each line is one `write` to a file opened with `O_APPEND`, so concurrent writers (a cron backup and the
//! service) never interleave within a line. A log that cannot be written is a warning, never the reason an
//! operation fails: a restore during an incident must not stop because `/var/log` is full.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The effective user, and the user behind `sudo` when there is one.
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    pub host: String,
    pub pid: u32,
    /// How dr was invoked: `dr backup`, `dr serve`, ...
    pub via: String,
    /// `backup`, `restore`, `drill`, `prune`.
    pub action: &'static str,
    pub snapshot: Option<String>,
    /// `success` or `failure`.
    pub outcome: &'static str,
    pub error: Option<String>,
    /// What else says what happened: the restore's targets (never with a password), the drill's id.
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(action: &'static str, snapshot: Option<String>, error: Option<String>) -> AuditEntry {
        let user = crate::host::user_name();
        AuditEntry {
            at: Utc::now(),
            user,
            sudo_user: std::env::var("SUDO_USER").ok(),
            host: crate::host::hostname(),
            pid: std::process::id(),
            via: invocation(),
            action,
            snapshot,
            outcome: if error.is_some() { "failure" } else { "success" },
            error,
            detail: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> AuditEntry {
        self.detail = Some(detail.into());
        self
    }
}

/// `dr <command>`: the subcommand only (the rest of the command line may hold a connection string).
fn invocation() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.starts_with('-') {
            return format!("dr {arg}");
        }
    }
    "dr".to_string()
}

/// Appends `entry` to the configured audit log, if there is one.
pub fn record(config: &Config, entry: AuditEntry) {
    let Some(path) = &config.audit.path else { return };
    let result = serde_json::to_vec(&entry).map_err(std::io::Error::other).and_then(|mut line| {
        line.push(b'\n');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(&line)
    });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), "could not write the audit log: {e}");
    }
}
