//! `dr snapshots [--json]`

use chrono::Utc;
use dr::{Result, units};
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
    sources: Vec<SourceRow<'a>>,
}

#[derive(Serialize)]
struct SourceRow<'a> {
    name: &'a str,
    kind: dr::repo::manifest::SourceKind,
    consistent_at: chrono::DateTime<Utc>,
    stored_size: u64,
    plain_size: u64,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let loaded = context.load_config()?;
    let repo = context.open_repository(&loaded.config).await?;
    let manifests = repo.manifests().await?;
    let now = Utc::now();
    if args.json {
        let rows: Vec<Row> = manifests
            .iter()
            .map(|m| Row {
                id: &m.id,
                time: m.started_at,
                finished_at: m.finished_at,
                age_seconds: (now - m.started_at).num_seconds(),
                hostname: &m.hostname,
                stored_size: m.stored_size(),
                sources: m
                    .sources
                    .iter()
                    .map(|s| SourceRow {
                        name: &s.name,
                        kind: s.kind,
                        consistent_at: s.consistent_at,
                        stored_size: s.stored_size(),
                        plain_size: s.objects.iter().map(|o| o.plain_size).sum(),
                    })
                    .collect(),
            })
            .collect();
        return print_json(&rows);
    }
    if manifests.is_empty() {
        println!("no snapshots in {}", repo.location());
        return Ok(());
    }
    println!("{:<24} {:<20} {:<14} {:>10}  SOURCES", "ID", "TIME (UTC)", "AGE", "TOTAL");
    let mut total = 0;
    for m in &manifests {
        let sources: Vec<String> =
            m.sources.iter().map(|s| format!("{} {}", s.name, units::bytes(s.stored_size()))).collect();
        total += m.stored_size();
        println!(
            "{:<24} {:<20} {:<14} {:>10}  {}",
            m.id.as_str(),
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            units::age(m.started_at, now),
            units::bytes(m.stored_size()),
            sources.join(", ")
        );
    }
    println!("{} snapshots, {} in total", manifests.len(), units::bytes(total));
    Ok(())
}
