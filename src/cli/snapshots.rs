//! `dr snapshots [--json]`

use chrono::Utc;
use dr::{Error, Result, units};
use serde::Serialize;

use super::Context;
use super::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    id: &'a dr::SnapshotId,
    time: chrono::DateTime<Utc>,
    finished_at: chrono::DateTime<Utc>,
    age_seconds: i64,
    hostname: &'a str,
    stored_size: u64,
    /// Files that changed while they were read and are stored incomplete (their paths are in the private part).
    incomplete_files: u64,
    sources: Vec<SourceRow<'a>>,
}

/// A snapshot whose manifest cannot be read: listed, not hidden, and the command fails at the end.
#[derive(Serialize)]
struct BrokenRow<'a> {
    id: &'a dr::SnapshotId,
    error: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Ok(Row<'a>),
    Broken(BrokenRow<'a>),
}

#[derive(Serialize)]
struct SourceRow<'a> {
    name: &'a str,
    kind: dr::repo::manifest::SourceKind,
    consistent_at: chrono::DateTime<Utc>,
    stored_size: u64,
    plain_size: u64,
    incomplete_files: u64,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let loaded = context.load_config()?;
    let repo = context.open_repository(&loaded.config).await?;
    let ids = repo.snapshot_ids().await?;
    let mut manifests = Vec::new();
    let mut broken = Vec::new();
    for id in &ids {
        match repo.manifest(id).await {
            Ok(manifest) => manifests.push(manifest),
            Err(e @ (Error::ObjectCorrupt { .. } | Error::ObjectMissing { .. })) => broken.push((id, e)),
            Err(e) => return Err(e),
        }
    }
    let now = Utc::now();
    if args.json {
        let mut entries: Vec<(&dr::SnapshotId, Entry)> =
            manifests.iter().map(|m| (&m.id, Entry::Ok(row(m, now)))).collect();
        entries.extend(broken.iter().map(|(id, e)| (*id, Entry::Broken(BrokenRow { id, error: e.to_string() }))));
        entries.sort_by_key(|(id, _)| *id);
        print_json(&entries.into_iter().map(|(_, entry)| entry).collect::<Vec<_>>())?;
    } else if ids.is_empty() {
        outln!("no snapshots in {}", repo.location());
    } else {
        print_table(&manifests, &broken, now);
    }
    match broken.into_iter().next() {
        None => Ok(()),
        Some((_, first)) => Err(first),
    }
}

fn row(m: &dr::Manifest, now: chrono::DateTime<Utc>) -> Row<'_> {
    Row {
        id: &m.id,
        time: m.started_at,
        finished_at: m.finished_at,
        age_seconds: (now - m.started_at).num_seconds(),
        hostname: &m.hostname,
        stored_size: m.stored_size(),
        incomplete_files: incomplete_files(m),
        sources: m
            .sources
            .iter()
            .map(|s| SourceRow {
                name: &s.name,
                kind: s.kind,
                consistent_at: s.consistent_at,
                stored_size: s.stored_size(),
                plain_size: s.plain_size(),
                incomplete_files: s.incomplete_files,
            })
            .collect(),
    }
}

fn incomplete_files(m: &dr::Manifest) -> u64 {
    m.sources.iter().map(|s| s.incomplete_files).sum()
}

fn print_table(manifests: &[dr::Manifest], broken: &[(&dr::SnapshotId, Error)], now: chrono::DateTime<Utc>) {
    outln!("{:<24} {:<20} {:<14} {:>10}  SOURCES", "ID", "TIME (UTC)", "AGE", "TOTAL");
    let mut lines: Vec<(&dr::SnapshotId, String)> = Vec::new();
    let mut total = 0;
    for m in manifests {
        let sources: Vec<String> = m
            .sources
            .iter()
            .map(|s| match s.incomplete_files {
                0 => format!("{} {}", s.name, units::bytes(s.stored_size())),
                n => format!(
                    "{} {} (INCOMPLETE: {})",
                    s.name,
                    units::bytes(s.stored_size()),
                    units::plural(n as usize, "file")
                ),
            })
            .collect();
        total += m.stored_size();
        let line = format!(
            "{:<24} {:<20} {:<14} {:>10}  {}",
            m.id.as_str(),
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            units::age(m.started_at, now),
            units::bytes(m.stored_size()),
            sources.join(", ")
        );
        lines.push((&m.id, line));
    }
    for (id, error) in broken {
        lines.push((id, format!("{:<24} UNREADABLE: {error}", id.as_str())));
    }
    lines.sort_by_key(|(id, _)| *id);
    for (_, line) in lines {
        outln!("{line}");
    }
    let count = manifests.len();
    outln!("{count} snapshot{}, {} in total", if count == 1 { "" } else { "s" }, units::bytes(total));
    let incomplete = manifests.iter().filter(|m| incomplete_files(m) > 0).count();
    if incomplete > 0 {
        outln!(
            "{} with files that changed while being read, stored incomplete (`dr verify --to ID` names them)",
            units::plural(incomplete, "snapshot")
        );
    }
    if !broken.is_empty() {
        outln!("{} snapshot{} with an unreadable manifest", broken.len(), if broken.len() == 1 { "" } else { "s" });
    }
}
