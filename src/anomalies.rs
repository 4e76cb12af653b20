//! Shrinkage between consecutive snapshots: the classic sign of a backup that silently stopped capturing data
//! (a dump of the wrong database, an uploads mount that came up empty, a table truncated by a bad deploy).
//!
//! Sizes are public in the manifest, so a backup host without the identity can compare them; row counts are in
//! the private half, so only drills and reports (which hold the identity) compare those.

use serde::Serialize;

use crate::repo::manifest::{Manifest, PrivateManifest};
use crate::units;

/// Sizes below this are too small for a fraction to mean anything (an empty test table, a tiny config dir).
const MIN_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// `source app`, or `table app public.posts`.
    pub subject: String,
    pub before: u64,
    pub after: u64,
    /// What the numbers count: `bytes` or `rows`.
    pub unit: &'static str,
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (before, after) = match self.unit {
            "bytes" => (units::bytes(self.before), units::bytes(self.after)),
            _ => (format!("{} {}", self.before, self.unit), format!("{} {}", self.after, self.unit)),
        };
        let percent = 100.0 * (1.0 - self.after as f64 / self.before as f64);
        write!(f, "{} shrank by {percent:.0}%: {before} -> {after}", self.subject)
    }
}

/// Fell by more than `max_shrink` of `before` (0.5: to less than half).
fn shrank(before: u64, after: u64, max_shrink: f64) -> bool {
    before > 0 && (after as f64) < before as f64 * (1.0 - max_shrink)
}

/// Sources whose plaintext size fell by more than `max_shrink` since `previous`, and, when both private halves
/// are given, tables whose row count did. A table that disappeared counts as shrunk to zero; a source absent
/// from `current` is not compared (a `--only` backup, or a source taken out of the configuration).
pub fn compare(
    previous: &Manifest,
    previous_private: Option<&PrivateManifest>,
    current: &Manifest,
    current_private: Option<&PrivateManifest>,
    max_shrink: f64,
) -> Vec<Anomaly> {
    let mut found = Vec::new();
    for before in &previous.sources {
        let Some(after) = current.source(&before.name) else { continue };
        let (before_bytes, after_bytes) = (before.plain_size(), after.plain_size());
        if before_bytes >= MIN_BYTES && shrank(before_bytes, after_bytes, max_shrink) {
            found.push(Anomaly {
                subject: format!("source {}", before.name),
                before: before_bytes,
                after: after_bytes,
                unit: "bytes",
            });
        }
    }
    let (Some(previous_private), Some(current_private)) = (previous_private, current_private) else {
        return found;
    };
    for source in &previous.sources {
        let (Some(before), Some(after)) =
            (previous_private.postgres(&source.name), current_private.postgres(&source.name))
        else {
            continue;
        };
        for table in &before.tables {
            let rows_after = after
                .tables
                .iter()
                .find(|t| t.schema == table.schema && t.table == table.table)
                .map_or(0, |t| t.rows.max(0) as u64);
            let rows_before = table.rows.max(0) as u64;
            if shrank(rows_before, rows_after, max_shrink) {
                found.push(Anomaly {
                    subject: format!("table {} {}.{}", source.name, table.schema, table.table),
                    before: rows_before,
                    after: rows_after,
                    unit: "rows",
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::{
        ObjectEntry, ObjectRole, PostgresDetails, SourceDetails, SourceEntry, SourceKind, TableRows,
    };
    use crate::repo::snapshot_id::SnapshotId;

    fn manifest(sizes: &[(&str, u64)]) -> Manifest {
        let now = chrono::Utc::now();
        Manifest {
            format: 1,
            id: SnapshotId::new(now),
            started_at: now,
            finished_at: now,
            hostname: "h".into(),
            dr_version: "0".into(),
            private: String::new(),
            sources: sizes
                .iter()
                .map(|(name, size)| SourceEntry {
                    format: None,
                    chunked: None,
                    name: name.to_string(),
                    kind: SourceKind::Files,
                    consistent_at: now,
                    objects: vec![ObjectEntry {
                        key: format!("objects/x/{name}"),
                        role: ObjectRole::Tar,
                        stored_size: size / 2,
                        sha256: String::new(),
                        plain_size: *size,
                    }],
                    incomplete_files: 0,
                })
                .collect(),
        }
    }

    fn private(rows: &[(&str, i64)]) -> PrivateManifest {
        PrivateManifest {
            sources: vec![SourceDetails::Postgres(PostgresDetails {
                name: "app".into(),
                database: "db".into(),
                server_version: "15".into(),
                server_version_num: 150000,
                encoding: "UTF8".into(),
                collate: "C".into(),
                ctype: "C".into(),
                pg_dump_version: "15".into(),
                tables: rows
                    .iter()
                    .map(|(t, r)| TableRows { schema: "public".into(), table: t.to_string(), rows: *r })
                    .collect(),
                globals: None,
                database_properties: None,
                stream: None,
            })],
        }
    }

    #[test]
    fn a_source_that_lost_more_than_the_fraction_is_reported_and_small_ones_are_not() {
        let before = manifest(&[("app", 10 << 20), ("uploads", 10 << 20), ("config", 4 << 10)]);
        let after = manifest(&[("app", 6 << 20), ("uploads", 4 << 20), ("config", 0)]);
        let found = compare(&before, None, &after, None, 0.5);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].subject, "source uploads");
        assert_eq!(found[0].to_string(), "source uploads shrank by 60%: 10.0 MiB -> 4.0 MiB");
        let partial = compare(&before, None, &manifest(&[("app", 10 << 20)]), None, 0.5);
        assert!(partial.is_empty(), "a source left out of a backup is not a shrunken one: {partial:?}");
    }

    #[test]
    fn tables_are_compared_only_with_both_private_halves() {
        let m = manifest(&[("app", 1 << 20)]);
        let before = private(&[("posts", 1000), ("users", 10), ("tags", 3)]);
        let after = private(&[("posts", 400), ("users", 6)]);
        let found = compare(&m, Some(&before), &m, Some(&after), 0.5);
        let subjects: Vec<String> = found.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            subjects,
            [
                "table app public.posts shrank by 60%: 1000 rows -> 400 rows",
                "table app public.tags shrank by 100%: 3 rows -> 0 rows"
            ]
        );
        assert!(compare(&m, Some(&before), &m, None, 0.5).is_empty());
    }
}
