//! Which stored changes `dr prune` may delete: those no kept base needs, and nothing else.
//!
//! A kept base of a generation needs every segment from the first one holding a transaction its snapshot does
//! not see, onwards (a restore to any later time reads them). Segments before the oldest kept base's first
//! needed one hold only what every kept base has already; they go, and `pruned.json` records how far, so that a
//! replay can tell a pruned start from a gap. A generation with no kept base is deleted whole, except the newest
//! one: its capture may be running, and its first base may be on its way.

use serde::{Deserialize, Serialize};

use super::replay::XidSnapshot;
use super::segment::{GenerationRecord, SegmentRecord, generation_prefix};
use crate::repo::manifest::StreamBase;

/// What was pruned from the start of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedRecord {
    /// The first kept segment starts here.
    #[serde(with = "super::segment::lsn_serde")]
    pub end_lsn: u64,
    /// The newest transaction id in any pruned segment: a base whose snapshot's xmin is above it lost nothing.
    pub max_xid: u64,
}

pub fn pruned_key(source: &str, generation: &str) -> String {
    format!("{}pruned.json", generation_prefix(source, generation))
}

/// One generation's part of a prune.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationPrune {
    pub source: String,
    pub generation: String,
    /// No kept base: every object of the generation goes.
    pub whole: bool,
    /// Segments to delete (their records, then their data), oldest first.
    pub segments: Vec<SegmentRecord>,
    /// The marker to write before deleting them (not for a whole generation).
    pub pruned: Option<PrunedRecord>,
}

/// Plans one source's generations (oldest first, each with its segments in stream order) against the bases
/// of the snapshots that stay.
pub fn plan(
    generations: &[(GenerationRecord, Vec<SegmentRecord>, Option<PrunedRecord>)],
    kept_bases: &[StreamBase],
) -> Vec<GenerationPrune> {
    let newest = generations.last().map(|(g, _, _)| g.generation.clone());
    let mut plans = Vec::new();
    for (generation, segments, pruned) in generations {
        let xmins: Vec<u64> = kept_bases
            .iter()
            .filter(|b| b.generation == generation.generation)
            .filter_map(|b| XidSnapshot::parse(&b.snapshot))
            .map(|s| s.xmin())
            .collect();
        let prune = |whole, segments: Vec<SegmentRecord>, pruned| GenerationPrune {
            source: generation.source.clone(),
            generation: generation.generation.clone(),
            whole,
            segments,
            pruned,
        };
        let Some(oldest_xmin) = xmins.iter().min().copied() else {
            if Some(&generation.generation) != newest.as_ref() {
                plans.push(prune(true, segments.clone(), None));
            }
            continue;
        };
        let first_needed = segments.iter().position(|s| s.max_xid >= oldest_xmin).unwrap_or(segments.len());
        if first_needed == 0 {
            continue;
        }
        let dropped = segments[..first_needed].to_vec();
        let max_xid = dropped.iter().map(|s| s.max_xid).chain(pruned.as_ref().map(|p| p.max_xid)).max().unwrap_or(0);
        let marker = PrunedRecord { end_lsn: dropped[dropped.len() - 1].end_lsn, max_xid };
        plans.push(prune(false, dropped, Some(marker)));
    }
    plans
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn generation(id: &str) -> GenerationRecord {
        GenerationRecord {
            format: 1,
            source: "app".into(),
            generation: id.into(),
            slot: "s".into(),
            publication: "p".into(),
            database: "d".into(),
            system_identifier: "1".into(),
            created_at: Utc::now(),
            start_lsn: 0,
        }
    }

    fn segment(generation: &str, start: u64, max_xid: u64) -> SegmentRecord {
        SegmentRecord {
            format: 1,
            source: "app".into(),
            generation: generation.into(),
            start_lsn: start,
            end_lsn: start + 10,
            covered_until: Utc::now(),
            first_commit: Utc::now(),
            last_commit: Utc::now(),
            transactions: 1,
            changes: 1,
            max_xid,
            schema: String::new(),
            object: format!("data/{start}"),
            stored_size: 1,
            sha256: String::new(),
            plain_size: 1,
        }
    }

    fn base(generation: &str, xmin: u64) -> StreamBase {
        StreamBase { generation: generation.into(), snapshot: format!("{xmin}:{xmin}:"), schema: String::new() }
    }

    #[test]
    fn segments_before_the_oldest_kept_base_go_and_an_old_generation_without_a_base_goes_whole() {
        let old = (generation("g1"), vec![segment("g1", 0, 5), segment("g1", 10, 9)], None);
        let current = (
            generation("g2"),
            vec![segment("g2", 0, 100), segment("g2", 10, 110), segment("g2", 20, 120), segment("g2", 30, 130)],
            None,
        );
        let plans = plan(&[old, current], &[base("g2", 115), base("g2", 125)]);
        assert_eq!(plans.len(), 2);
        assert!(plans[0].whole && plans[0].generation == "g1" && plans[0].segments.len() == 2);
        assert!(!plans[1].whole);
        // Transaction ids below the oldest kept base's xmin are in every kept base: the segments holding only
        // those go; the first one reaching 115 stays, with everything after it.
        assert_eq!(plans[1].segments.iter().map(|s| s.start_lsn).collect::<Vec<_>>(), vec![0, 10]);
        assert_eq!(plans[1].pruned, Some(PrunedRecord { end_lsn: 20, max_xid: 110 }));
    }

    #[test]
    fn the_newest_generation_without_a_base_is_kept_whole() {
        let current = (generation("g2"), vec![segment("g2", 0, 100)], None);
        assert!(plan(&[current], &[]).is_empty());
    }
}
