//! Running the captures of a configuration (`dr stream run`, `dr serve`), reading their state
//! (`dr stream status`), and removing what they leave on the server (`dr stream drop`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, Polled};
use super::slot;
use super::{generations, head, segments};
use crate::config::{Config, PostgresSource};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::pg::{connect, source_conninfo};
use crate::repo::Repository;

/// `[stream] interval` when unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Waits between attempts to resume a capture that failed (the server restarting, the network down).
const RETRY_WAITS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Checks `[stream]`.
pub fn validate(config: &Config) -> Result<()> {
    if let Some(interval) = config.stream.interval {
        if interval.is_zero() || interval > MAX_INTERVAL {
            return Err(Error::ConfigInvalid(format!(
                "[stream] interval = {} is out of range: from 1s to 10m",
                humantime::format_duration(interval)
            )));
        }
    }
    Ok(())
}

/// The sources with `continuous = true`, or those named in `only`.
pub fn continuous_sources<'c>(config: &'c Config, only: &[String]) -> Result<Vec<&'c PostgresSource>> {
    for name in only {
        match config.postgres.iter().find(|s| &s.name == name) {
            Some(source) if source.continuous => {}
            Some(_) => {
                return Err(Error::Usage(format!(
                    "postgres source {name:?} does not have continuous = true (docs/pitr.md)"
                )));
            }
            None => return Err(Error::Usage(format!("no postgres source is named {name:?}"))),
        }
    }
    Ok(config.postgres.iter().filter(|s| s.continuous && (only.is_empty() || only.contains(&s.name))).collect())
}

/// What happened to a capture, for the service's status, metrics and alerts.
#[derive(Debug, Clone)]
pub enum CaptureEvent<'a> {
    /// Started or resumed; `new_generation`: a new slot, which no base backup carries yet.
    Started {
        source: &'a str,
        generation: &'a str,
        new_generation: bool,
    },
    Polled {
        source: &'a str,
        polled: &'a Polled,
    },
    Failed {
        source: &'a str,
        error: &'a Error,
    },
}

/// Receives every [`CaptureEvent`].
pub type Observer<'a> = &'a (dyn Fn(CaptureEvent<'_>) + Send + Sync);

/// Captures every continuous source until `stop`. With `fail_fast`, a source whose first start fails (the
/// server not set up for it) fails the whole run; otherwise, and for a capture that fails later, the capture
/// is resumed with growing waits, from where its stored stream ends, so nothing is lost or stored twice.
pub async fn run(
    config: &Config,
    repo: &Repository,
    only: &[String],
    stop: CancellationToken,
    fail_fast: bool,
    observe: Observer<'_>,
) -> Result<()> {
    let sources = continuous_sources(config, only)?;
    if sources.is_empty() {
        return Err(Error::Usage(
            "no postgres source has continuous = true: nothing to capture (docs/pitr.md)".to_string(),
        ));
    }
    let interval = config.stream.interval.unwrap_or(DEFAULT_INTERVAL);
    let recipients = std::sync::Arc::new(Recipients::parse(&config.encryption.recipients)?);
    let mut first = Vec::new();
    for source in &sources {
        first.push(if fail_fast { Some(start(repo, &recipients, source, observe).await?) } else { None });
    }
    let tasks = first
        .into_iter()
        .zip(&sources)
        .map(|(capture, source)| keep_capturing(capture, repo, &recipients, source, interval, stop.clone(), observe));
    futures::future::join_all(tasks).await;
    Ok(())
}

async fn start(
    repo: &Repository,
    recipients: &std::sync::Arc<Recipients>,
    source: &PostgresSource,
    observe: Observer<'_>,
) -> Result<Capture> {
    let conninfo = source_conninfo(source)?;
    let capture = Capture::start(repo.clone(), recipients.clone(), &source.name, &conninfo).await?;
    observe(CaptureEvent::Started {
        source: &source.name,
        generation: &capture.generation().generation,
        new_generation: capture.new_generation,
    });
    Ok(capture)
}

async fn keep_capturing(
    first: Option<Capture>,
    repo: &Repository,
    recipients: &std::sync::Arc<Recipients>,
    source: &PostgresSource,
    interval: Duration,
    stop: CancellationToken,
    observe: Observer<'_>,
) {
    let mut capture = first;
    let mut failures = 0;
    let on_poll = |source: &str, polled: &Polled| observe(CaptureEvent::Polled { source, polled });
    while !stop.is_cancelled() {
        let current = match capture.take() {
            Some(capture) => capture,
            None => match start(repo, recipients, source, observe).await {
                Ok(capture) => capture,
                Err(e) => {
                    failures += 1;
                    observe(CaptureEvent::Failed { source: &source.name, error: &e });
                    wait_after_failure(&source.name, &e, failures, &stop).await;
                    continue;
                }
            },
        };
        failures = 0;
        if let Err(e) = current.run(interval, stop.cancelled(), &on_poll).await {
            failures += 1;
            observe(CaptureEvent::Failed { source: &source.name, error: &e });
            wait_after_failure(&source.name, &e, failures, &stop).await;
        }
    }
}

async fn wait_after_failure(source: &str, error: &Error, failures: usize, stop: &CancellationToken) {
    let wait = RETRY_WAITS[failures.min(RETRY_WAITS.len()) - 1];
    tracing::error!(source, "change capture failed: {error}; resuming in {}", humantime::format_duration(wait));
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// Where one source's stream stands.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub source: String,
    pub generation: Option<String>,
    pub slot: Option<String>,
    pub segments: usize,
    pub stored_bytes: u64,
    pub newest_commit: Option<DateTime<Utc>>,
    /// How far the stored stream reaches: a point-in-time restore can go up to about here.
    pub covered_until: Option<DateTime<Utc>>,
    /// Snapshots that are bases of this generation.
    pub bases: usize,
    /// WAL the server keeps for the slot, when the server could be asked.
    pub slot_retained_bytes: Option<i64>,
    pub slot_lost: Option<bool>,
    /// Why the server could not be asked.
    pub server_error: Option<String>,
}

/// The status of every continuous source (or those in `only`).
pub async fn status(config: &Config, repo: &Repository, only: &[String]) -> Result<Vec<StreamStatus>> {
    let mut statuses = Vec::new();
    let snapshots = repo.snapshot_ids().await?;
    for source in continuous_sources(config, only)? {
        let generation = generations(repo, &source.name).await?.pop();
        let mut status = StreamStatus {
            source: source.name.clone(),
            generation: generation.as_ref().map(|g| g.generation.clone()),
            slot: generation.as_ref().map(|g| g.slot.clone()),
            segments: 0,
            stored_bytes: 0,
            newest_commit: None,
            covered_until: None,
            bases: 0,
            slot_retained_bytes: None,
            slot_lost: None,
            server_error: None,
        };
        if let Some(generation) = &generation {
            let stored = segments(repo, &source.name, &generation.generation).await?;
            status.segments = stored.len();
            status.stored_bytes = stored.iter().map(|s| s.stored_size).sum();
            status.newest_commit = stored.last().map(|s| s.last_commit);
            let head = head(repo, &source.name, &generation.generation).await?;
            status.covered_until = super::reach(&stored, head.as_ref());
            // Snapshots after the generation began are the only candidates; their manifests are public, their
            // stream facts are not, so the count is of snapshots taken since, not of verified bases.
            status.bases = snapshots
                .iter()
                .filter(|id| id.time() >= generation.created_at - chrono::TimeDelta::seconds(1))
                .count();
            match slot_facts(source, &generation.slot).await {
                Ok(Some(state)) => {
                    status.slot_retained_bytes = Some(state.retained_bytes);
                    status.slot_lost = Some(state.is_lost());
                }
                Ok(None) => status.server_error = Some(format!("replication slot {} does not exist", generation.slot)),
                Err(e) => status.server_error = Some(e.to_string()),
            }
        }
        statuses.push(status);
    }
    Ok(statuses)
}

async fn slot_facts(source: &PostgresSource, slot_name: &str) -> Result<Option<slot::SlotState>> {
    let conninfo = source_conninfo(source)?;
    let target = conninfo.redacted();
    let client = connect(&conninfo).await.map_err(|e| e.into_error(&source.name, target))?;
    slot::slot_state(&client, &source.name, slot_name).await
}

/// Drops the replication slot and publication of every generation of the named sources (any source, even
/// one no longer continuous), so that the server stops keeping WAL for them. Returns the slots dropped.
pub async fn drop_slots(config: &Config, repo: &Repository, names: &[String]) -> Result<Vec<String>> {
    let mut dropped = Vec::new();
    for name in names {
        let source = config
            .postgres
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| Error::Usage(format!("no postgres source is named {name:?}")))?;
        let conninfo = source_conninfo(source)?;
        let target = conninfo.redacted();
        let client = connect(&conninfo).await.map_err(|e| e.into_error(name, target.clone()))?;
        super::capture::take_capture_lock(&client, repo, name, &target).await?;
        for generation in generations(repo, name).await? {
            let existed = slot::slot_state(&client, name, &generation.slot).await?.is_some();
            slot::drop_stream_objects(&client, name, &generation.slot, &generation.publication).await?;
            if existed {
                dropped.push(generation.slot);
            }
        }
    }
    Ok(dropped)
}
