//! `dr prune`'s part for change streams (docs/pitr.md): the segments no kept base needs, generations with no
//! kept base, and segment data a killed capture left without its record. The rule is `stream::retention`'s.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::manifest::{Manifest, SourceDetails};
use crate::store::ObjectMeta;
use crate::stream::retention::{self, GenerationPrune, pruned_key};
use crate::stream::segment::{STREAMS_PREFIX, generation_prefix};

/// What happens to one generation, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamPrunePlan {
    pub source: String,
    pub generation: String,
    /// The whole generation goes (no kept snapshot is a base of it).
    pub whole: bool,
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct StreamsPlan {
    generations: Vec<GenerationPrune>,
    /// Every object of each generation deleted whole, its `generation.json` last.
    whole: Vec<Vec<ObjectMeta>>,
    /// Segment data without a record, older than the grace.
    orphans: Vec<ObjectMeta>,
    pub(super) report: Vec<StreamPrunePlan>,
    pub(super) bytes: u64,
    pub(super) segments: usize,
}

pub(super) async fn plan(
    repo: &Repository,
    identities: &Arc<Identities>,
    kept: &[&Manifest],
    cutoff: DateTime<Utc>,
) -> Result<StreamsPlan> {
    let listed = repo.store().list(STREAMS_PREFIX).await?;
    if listed.is_empty() {
        return Ok(StreamsPlan::default());
    }
    let sources = crate::stream::sources_in(&listed);
    let mut bases = Vec::new();
    for manifest in kept {
        for details in repo.private(manifest, identities)?.sources {
            if let SourceDetails::Postgres(postgres) = details
                && let Some(base) = postgres.stream
            {
                bases.push((postgres.name, base));
            }
        }
    }
    let mut plan = StreamsPlan::default();
    let mut referenced = HashSet::new();
    for source in &sources {
        let mut generations = Vec::new();
        for generation in crate::stream::generations(repo, source).await? {
            let segments = crate::stream::segments(repo, source, &generation.generation).await?;
            referenced.extend(segments.iter().map(|s| s.object.clone()));
            let pruned = crate::stream::pruned(repo, source, &generation.generation).await?;
            generations.push((generation, segments, pruned));
        }
        let source_bases: Vec<_> = bases.iter().filter(|(name, _)| name == source).map(|(_, b)| b.clone()).collect();
        plan.generations.extend(retention::plan(&generations, &source_bases));
    }
    for generation in &plan.generations {
        let prefix = generation_prefix(&generation.source, &generation.generation);
        let (segments, bytes) = if generation.whole {
            let mut objects: Vec<ObjectMeta> = listed.iter().filter(|o| o.key.starts_with(&prefix)).cloned().collect();
            objects.sort_by_key(|o| o.key.ends_with("/generation.json"));
            let bytes = objects.iter().map(|o| o.size).sum();
            plan.whole.push(objects);
            (generation.segments.len(), bytes)
        } else {
            let bytes = generation.segments.iter().map(|s| s.stored_size).sum();
            (generation.segments.len(), bytes)
        };
        plan.segments += segments;
        plan.bytes += bytes;
        plan.report.push(StreamPrunePlan {
            source: generation.source.clone(),
            generation: generation.generation.clone(),
            whole: generation.whole,
            segments,
            bytes,
        });
    }
    let whole: HashSet<&str> = plan.whole.iter().flatten().map(|o| o.key.as_str()).collect();
    plan.orphans = listed
        .iter()
        .filter(|o| o.key.contains("/data/") && !referenced.contains(&o.key) && !whole.contains(o.key.as_str()))
        .filter(|o| o.modified.is_some_and(|at| at < cutoff))
        .cloned()
        .collect();
    plan.bytes += plan.orphans.iter().map(|o| o.size).sum::<u64>();
    Ok(plan)
}

/// Deletes what the plan says: for a generation pruned from its start, the marker first, then each segment's
/// record before its data (a record never names missing data); whole generations with their record last.
pub(super) async fn execute(
    repo: &Repository,
    plan: &StreamsPlan,
    may_continue: &(dyn Fn() -> Result<()> + Sync),
) -> Result<()> {
    let store = repo.store();
    for generation in plan.generations.iter().filter(|g| !g.whole) {
        may_continue()?;
        if let Some(pruned) = &generation.pruned {
            let json =
                serde_json::to_vec_pretty(pruned).map_err(|e| Error::io("encoding a pruned record", e.into()))?;
            store.put(&pruned_key(&generation.source, &generation.generation), json.into()).await?;
        }
        for segment in &generation.segments {
            may_continue()?;
            store.delete(&segment.key()).await?;
            store.delete(&segment.object).await?;
        }
    }
    for objects in &plan.whole {
        for object in objects {
            may_continue()?;
            store.delete(&object.key).await?;
        }
    }
    for object in &plan.orphans {
        may_continue()?;
        store.delete(&object.key).await?;
    }
    Ok(())
}
