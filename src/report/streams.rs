//! The report's change streams (docs/pitr.md): for each continuous source, what its stream stored inside the
//! window and how far it reaches now: the RPO an incident would suffer, seconds where the snapshots say hours.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::repo::Repository;
use crate::stream::segment::STREAMS_PREFIX;

/// One stream generation that stored something inside the window, or is the newest of its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSummary {
    pub source: String,
    pub generation: String,
    /// When the generation (its slot) began; inside the window, the stream began or restarted after a gap.
    pub started_at: DateTime<Utc>,
    pub segments: usize,
    pub transactions: u64,
    pub changes: u64,
    pub stored_bytes: u64,
    /// How far the generation's stored stream reaches (its newest segment or head record).
    pub covered_until: Option<DateTime<Utc>>,
    /// The report's end minus `covered_until`: what an incident then would have lost.
    pub age_seconds: Option<f64>,
}

impl StreamSummary {
    /// The figures of the table's row, as both pages show them: segments, transactions, changes, stored size,
    /// stored up to, age.
    pub(super) fn figures(&self) -> [String; 6] {
        [
            self.segments.to_string(),
            self.transactions.to_string(),
            self.changes.to_string(),
            crate::units::bytes(self.stored_bytes),
            self.covered_until.map_or("-".to_string(), super::time),
            self.age_seconds.map_or("-".to_string(), super::duration),
        ]
    }

    /// Said after the generation when the stream began (or restarted) inside the window.
    pub(super) fn began_note(&self, window_start: DateTime<Utc>) -> &'static str {
        if self.started_at >= window_start { " (began in the window)" } else { "" }
    }
}

/// Reads every generation of every source: their records are small, and no key is needed.
pub(super) async fn gather(repo: &Repository, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<StreamSummary>> {
    let listed = repo.store().list(STREAMS_PREFIX).await?;
    let mut summaries = Vec::new();
    for source in crate::stream::sources_in(&listed) {
        let generations = crate::stream::generations(repo, &source).await?;
        let newest = generations.last().map(|g| g.generation.clone());
        for generation in generations {
            let segments = crate::stream::segments(repo, &source, &generation.generation).await?;
            let head = crate::stream::head(repo, &source, &generation.generation).await?;
            let covered_until = crate::stream::reach(&segments, head.as_ref());
            let inside: Vec<_> =
                segments.iter().filter(|s| s.covered_until >= start && s.covered_until <= end).collect();
            if inside.is_empty() && newest.as_ref() != Some(&generation.generation) {
                continue;
            }
            summaries.push(StreamSummary {
                source: source.clone(),
                started_at: generation.created_at,
                segments: inside.len(),
                transactions: inside.iter().map(|s| s.transactions).sum(),
                changes: inside.iter().map(|s| s.changes).sum(),
                stored_bytes: inside.iter().map(|s| s.stored_size).sum(),
                covered_until,
                age_seconds: covered_until.map(|c| (end - c).num_milliseconds().max(0) as f64 / 1000.0),
                generation: generation.generation,
            });
        }
    }
    Ok(summaries)
}
