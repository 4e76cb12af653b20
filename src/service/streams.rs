//! `dr serve`'s change capture (docs/pitr.md): the `continuous = true` sources are captured for as long as the
//! service runs. A capture that fails is resumed (the stream continues where its stored part ends); while it
//! fails, or while its slot makes the server keep more WAL than `[stream] max_retained_wal`, an incident is
//! open. A new stream generation (a first start, or a lost slot) and a schema change get a base backup at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Config;
use crate::repo::Repository;
use crate::stream::run::{CaptureEvent, DEFAULT_INTERVAL};

/// `[stream] max_retained_wal` when unset.
pub const DEFAULT_MAX_RETAINED_WAL: u64 = 1 << 30;
/// A stream whose stored part is older than this many intervals (and at least a minute) is behind.
const BEHIND_INTERVALS: u32 = 6;
const RETRY: Duration = Duration::from_secs(30);

/// Captures until `stop`, restarting on failures of its own (the repository unreachable at start).
pub(super) async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let config = shared.config();
        if !config.postgres.iter().any(|s| s.continuous) {
            return;
        }
        if let Err(e) = capture(&shared, &config, &stop).await {
            tracing::error!("change capture cannot start: {e}");
            shared.incident("stream", true, "change capture cannot start", &e.to_string());
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

async fn capture(shared: &Arc<Shared>, config: &Config, stop: &CancellationToken) -> crate::Result<()> {
    let store = crate::store::open(&config.repository).await?;
    let repo = Repository::open(Arc::from(store)).await?;
    shared.incident("stream", false, "change capture started", "");
    let (bases, mut requests) = mpsc::unbounded_channel::<String>();
    let observe = |event: CaptureEvent<'_>| on_event(shared, config, event, &bases);
    let captures = crate::stream::run::run(config, &repo, &[], stop.clone(), false, &observe);
    let base_backups = async {
        while let Some(source) = requests.recv().await {
            tracing::info!(source = %source, "taking a base backup for the new change stream generation");
            match super::jobs::backup_sources(config, &repo, shared, vec![source.clone()], stop.clone()).await {
                Ok(summary) => tracing::info!(source = %source, "base backup done: {summary}"),
                Err(e) => {
                    tracing::error!(source = %source, "base backup failed: {e}");
                    shared.incident(&format!("stream-base:{source}"), true, "base backup failed", &e.to_string());
                    continue;
                }
            }
            shared.incident(&format!("stream-base:{source}"), false, "base backup done", "");
        }
    };
    tokio::select! {
        result = captures => result,
        () = base_backups => Ok(()),
    }
}

fn on_event(shared: &Shared, config: &Config, event: CaptureEvent<'_>, bases: &mpsc::UnboundedSender<String>) {
    let max_retained = config.stream.max_retained_wal.map_or(DEFAULT_MAX_RETAINED_WAL, |b| b.as_u64());
    match event {
        CaptureEvent::Started { source, generation, new_generation } => {
            let mut status = shared.status();
            let entry = status.streams.entry(source.to_string()).or_default();
            entry.generation = Some(generation.to_string());
            entry.error = None;
            drop(status);
            shared.incident(&format!("stream:{source}"), false, "change capture running", "");
            if new_generation {
                let _ = bases.send(source.to_string());
            }
        }
        CaptureEvent::Polled { source, polled } => {
            let mut status = shared.status();
            let entry = status.streams.entry(source.to_string()).or_default();
            entry.covered_until = Some(polled.covered_until);
            entry.slot_retained_bytes = Some(polled.slot_retained_bytes);
            entry.error = None;
            if polled.stored.is_some() {
                entry.last_segment_at = Some(Utc::now());
            }
            drop(status);
            if polled.schema_changed {
                let _ = bases.send(source.to_string());
            }
            let retained = polled.slot_retained_bytes.max(0) as u64;
            shared.incident(
                &format!("slot:{source}"),
                retained > max_retained,
                &format!("replication slot of {source} keeps {} of WAL", crate::units::bytes(retained)),
                "the server keeps WAL until dr confirms it: check that the capture can store segments \
                 (repository reachable), or raise [stream] max_retained_wal",
            );
        }
        CaptureEvent::Failed { source, error } => {
            let mut status = shared.status();
            status.streams.entry(source.to_string()).or_default().error = Some(error.to_string());
            drop(status);
            shared.incident(
                &format!("stream:{source}"),
                true,
                &format!("change capture of {source} failing"),
                &error.to_string(),
            );
        }
    }
}

/// Sources whose stored stream is older than it should be: called by the repository watcher, so that a capture
/// that hangs (rather than fails) still raises the alarm. Returns `(source, age in seconds)`.
pub(super) fn behind(shared: &Shared, config: &Config) -> Vec<(String, i64)> {
    let interval = config.stream.interval.unwrap_or(DEFAULT_INTERVAL);
    let limit = (interval * BEHIND_INTERVALS).max(Duration::from_secs(60));
    let now = Utc::now();
    let status = shared.status();
    let started = status.started_at.unwrap_or(now);
    config
        .postgres
        .iter()
        .filter(|s| s.continuous)
        .filter_map(|source| {
            let since = status.streams.get(&source.name).and_then(|s| s.covered_until).unwrap_or(started);
            let age = (now - since).num_seconds();
            (age > limit.as_secs() as i64).then(|| (source.name.clone(), age))
        })
        .collect()
}
