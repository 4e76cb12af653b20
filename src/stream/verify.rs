//! `dr verify --all` for change streams: every segment read back whole (size, SHA-256, age, zstd), its framing
//! and every pgoutput message parsed, its counts compared with its record, and the chain checked for gaps.

use std::sync::Arc;

use serde::Serialize;

use super::pgoutput::Message;
use super::segment::{STREAMS_PREFIX, SegmentItem, SegmentReader, SegmentRecord, lsn_text};
use super::{gaps, generations, pruned, segments, sources_in};
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::progress::NoProgress;
use crate::repo::Repository;

/// One stream generation's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct StreamVerdict {
    pub source: String,
    pub generation: String,
    pub segments: usize,
    pub stored_bytes: u64,
    /// Every problem found, each naming its object.
    pub errors: Vec<String>,
}

/// Verifies every generation of every source in the repository.
pub async fn verify(repo: &Repository, identities: &Arc<Identities>) -> Result<Vec<StreamVerdict>> {
    let listed = repo.store().list(STREAMS_PREFIX).await?;
    let mut verdicts = Vec::new();
    for source in &sources_in(&listed) {
        for generation in generations(repo, source).await? {
            let stored = segments(repo, source, &generation.generation).await?;
            let pruned = pruned(repo, source, &generation.generation).await?;
            let start_lsn = pruned.as_ref().map_or(generation.start_lsn, |p| p.end_lsn);
            let live: Vec<SegmentRecord> = stored.iter().filter(|s| s.start_lsn >= start_lsn).cloned().collect();
            let mut errors: Vec<String> = gaps(start_lsn, &live)
                .into_iter()
                .map(|(segment, expected)| {
                    format!(
                        "{}: starts at {} where the stream reached {}: segments are missing",
                        segment.key(),
                        lsn_text(segment.start_lsn),
                        lsn_text(expected)
                    )
                })
                .collect();
            for segment in &live {
                if let Err(e) = read_segment(repo, identities, segment).await {
                    errors.push(e.to_string());
                }
            }
            verdicts.push(StreamVerdict {
                source: source.clone(),
                generation: generation.generation.clone(),
                segments: stored.len(),
                stored_bytes: stored.iter().map(|s| s.stored_size).sum(),
                errors,
            });
        }
    }
    Ok(verdicts)
}

/// Reads one segment through, parsing every message; its counts must be its record's.
async fn read_segment(repo: &Repository, identities: &Arc<Identities>, segment: &SegmentRecord) -> Result<()> {
    let key = segment.object.clone();
    let (transactions, changes) =
        crate::pipeline::download(repo.store(), &key, identities.clone(), segment.expected(), Arc::new(NoProgress), {
            let key = key.clone();
            move |reader| {
                let corrupt = |reason: String| Error::ObjectCorrupt { key: key.clone(), reason };
                let mut items = SegmentReader::new(reader);
                let (mut transactions, mut changes) = (0u64, 0u64);
                while let Some(item) = items.next_item().map_err(|e| Error::io(format!("reading {key}"), e))? {
                    if let SegmentItem::Message(bytes) = item {
                        match Message::parse(&bytes).map_err(|e| corrupt(e.to_string()))? {
                            Message::Commit { .. } => transactions += 1,
                            Message::Insert { .. }
                            | Message::Update { .. }
                            | Message::Delete { .. }
                            | Message::Truncate { .. } => changes += 1,
                            _ => {}
                        }
                    }
                }
                Ok((transactions, changes))
            }
        })
        .await?;
    if (transactions, changes) != (segment.transactions, segment.changes) {
        return Err(Error::ObjectCorrupt {
            key,
            reason: format!(
                "it holds {transactions} transactions and {changes} changes, its record says {} and {}",
                segment.transactions, segment.changes
            ),
        });
    }
    Ok(())
}
