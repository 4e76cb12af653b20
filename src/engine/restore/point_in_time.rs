//! A point-in-time restore of a database source with a change stream (docs/pitr.md): the newest base snapshot
//! consistent at or before the time, restored as usual, then the stream's transactions that the base does not
//! hold, up to the time, replayed into it.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Restorer, SourcePlan};
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::pg::{DatabaseTarget, connect};
use crate::repo::Repository;
use crate::repo::drill_record::{PHASE_REPLAY, Phase};
use crate::repo::manifest::{Manifest, PostgresDetails, SourceKind};
use crate::repo::snapshot_id::{Selector, SnapshotId};
use crate::stream::segment::GenerationRecord;
use crate::stream::{self, replay, slot::stream_error};

/// What the replay of one source did.
#[derive(Debug, Clone, Serialize)]
pub struct PointInTime {
    /// The time asked for; `None` for `latest`.
    pub target_time: Option<DateTime<Utc>>,
    /// The newest transaction the database now holds (the base's instant when the replay applied none).
    pub recovered_to: DateTime<Utc>,
    pub generation: String,
    pub segments: usize,
    pub transactions: u64,
    pub changes: u64,
    pub sequences: usize,
    /// How far the stored stream reaches.
    pub stream_covered_until: DateTime<Utc>,
    /// How long the replay took.
    pub seconds: f64,
}

/// For a repository with change streams: the newest snapshot consistent at or before `time`, starting from
/// `id` (the newest *started* by then, which may have taken its snapshot a moment after `time`, and would then
/// hold changes from after it). Without streams, `id`'s: `--to TIME` keeps meaning the snapshot taken by then.
pub(crate) async fn base_at(repo: &Repository, id: SnapshotId, time: DateTime<Utc>) -> Result<Manifest> {
    let manifest = repo.manifest(&id).await?;
    if manifest.consistent_at().is_none_or(|at| at <= time) {
        return Ok(manifest);
    }
    let mut streamed = false;
    for source in manifest.sources.iter().filter(|s| s.kind == SourceKind::Postgres) {
        streamed |= !stream::generations(repo, &source.name).await?.is_empty();
    }
    if !streamed {
        return Ok(manifest);
    }
    let ids = repo.snapshot_ids().await?;
    for earlier in ids.iter().rev().filter(|other| **other < id) {
        let manifest = repo.manifest(earlier).await?;
        if manifest.consistent_at().is_none_or(|at| at <= time) {
            return Ok(manifest);
        }
    }
    let oldest = ids.first().cloned().unwrap_or(id);
    Err(Error::SnapshotTooEarly { time, oldest_time: oldest.time(), oldest: oldest.to_string() })
}

/// The replay a point-in-time restore of `source` (restored from a snapshot with `details`) makes up to `to`
/// (`None`: all that is stored), planned and checked (gaps, reach, schema) before any target is touched; `None`
/// when the snapshot is not a base of a stream. `generations` are the source's (`stream::generations`).
pub(crate) async fn plan_replay(
    repo: &Repository,
    source: &str,
    details: Option<&PostgresDetails>,
    to: Option<DateTime<Utc>>,
    generations: &[GenerationRecord],
) -> Result<Option<(String, replay::ReplayPlan)>> {
    let Some(base) = details.and_then(|d| d.stream.as_ref()) else { return Ok(None) };
    let generation = generations.iter().find(|g| g.generation == base.generation).cloned();
    let generation = generation.ok_or_else(|| {
        stream_error(
            source,
            format!("the snapshot's stream generation {} is not in the repository", base.generation),
            "restore the snapshot by its id (no replay), or another snapshot",
        )
    })?;
    let segments = stream::segments(repo, source, &generation.generation).await?;
    let head = stream::head(repo, source, &generation.generation).await?;
    let pruned = stream::pruned(repo, source, &generation.generation).await?;
    let replay_plan = replay::plan(source, &generation, segments, head, pruned, base, to)?;
    Ok(Some((generation.generation, replay_plan)))
}

/// Replays a planned stream into `db`, just restored from the base (consistent at `consistent_at`).
pub(crate) async fn replay_into(
    repo: &Repository,
    identities: Arc<Identities>,
    source: &str,
    db: &DatabaseTarget,
    consistent_at: DateTime<Utc>,
    (generation, replay_plan): (String, replay::ReplayPlan),
) -> Result<PointInTime> {
    let target = db.redacted();
    let client = connect(&db.conninfo).await.map_err(|e| e.into_error(source, target.clone()))?;
    tracing::info!(
        source, segments = replay_plan.segments.len(),
        to = %replay_plan.to.map_or("latest".to_string(), |t| t.to_rfc3339()), "replaying the change stream"
    );
    let clock = Instant::now();
    let done = replay::replay(repo, identities, &client, &target, &replay_plan).await?;
    Ok(PointInTime {
        target_time: replay_plan.to,
        recovered_to: done.last_commit.unwrap_or(consistent_at),
        generation,
        segments: done.segments,
        transactions: done.transactions,
        changes: done.changes,
        sequences: done.sequences,
        stream_covered_until: replay_plan.covered_until,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

impl Restorer<'_> {
    /// [`plan_replay`] for a restore that asked for a point in time, warning when the snapshot is no base of
    /// the source's stream.
    pub(super) async fn plan_replay(
        &self,
        plan: &SourcePlan<'_>,
        details: Option<&PostgresDetails>,
        report: &mut super::SourceRestore,
    ) -> Result<Option<(String, replay::ReplayPlan)>> {
        if !self.options.point_in_time {
            return Ok(None);
        }
        let to = match &self.options.selector {
            Selector::AtOrBefore(time) => Some(*time),
            _ => self.options.replay_until,
        };
        let generations = stream::generations(self.repo, &plan.name).await?;
        let planned = plan_replay(self.repo, &plan.name, details, to, &generations).await?;
        let newest = generations.last().map(|g| g.generation.clone());
        let warning = match (&planned, newest) {
            (None, Some(_)) => Some(
                "this snapshot is not a base of the change stream (no slot when it was taken): restored to the \
                 snapshot's own time, without the changes after it"
                    .to_string(),
            ),
            // `latest` from a base of an older generation: the stream it continues ended (a lost or dropped slot),
            // and what came after is in a generation no kept snapshot is a base of yet.
            (Some((generation, replay)), Some(newest)) if to.is_none() && *generation != newest => Some(format!(
                "the change stream of this base ends at {}: later changes are in stream generation {newest}, which \
                 needs a base backup taken after it (dr backup; dr serve takes one by itself)",
                replay.covered_until.to_rfc3339()
            )),
            _ => None,
        };
        if let Some(warning) = warning {
            tracing::warn!(source = %plan.name, "{warning}");
            report.warnings.push(warning);
        }
        Ok(planned)
    }

    /// Replays the planned changes into the database just restored from the base.
    pub(super) async fn replay_changes(
        &self,
        plan: &SourcePlan<'_>,
        db: &DatabaseTarget,
        planned: (String, replay::ReplayPlan),
        report: &mut super::SourceRestore,
    ) -> Result<()> {
        let clock = Instant::now();
        let done = replay_into(self.repo, self.identities.clone(), &plan.name, db, plan.consistent_at, planned).await;
        report.phases.push(Phase { name: PHASE_REPLAY.into(), seconds: clock.elapsed().as_secs_f64() });
        report.point_in_time = Some(done?);
        Ok(())
    }
}
