//! `dr verify [--to latest|ID|TIME | --all] [--json]`

use dr::{Error, Result, Selector, VerifySelection, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which snapshot (default: latest).
    #[arg(long, value_name = "latest|ID|TIME", value_parser = super::parse_selector, conflicts_with = "all")]
    to: Option<Selector>,

    /// Verify every snapshot, and every drill record.
    #[arg(long)]
    all: bool,

    /// Read only part of the packs of chunked files sources: `N/M` (the Nth of M parts; M runs read all) or
    /// `X%` (a random share). Every pack is still checked to exist at its size. Default: read every pack.
    #[arg(long, value_name = "N/M|X%", value_parser = parse_subset)]
    read_data_subset: Option<dr::engine::ReadPacks>,

    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

/// A `--read-data-subset` that is neither `N/M` (1 ≤ N ≤ M) nor `X%` (0 < X ≤ 100).
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither N/M (e.g. 1/5) nor X% (e.g. 10%)")]
struct NotASubset(String);

fn parse_subset(text: &str) -> std::result::Result<dr::engine::ReadPacks, NotASubset> {
    let bad = || NotASubset(text.to_string());
    if let Some(percent) = text.strip_suffix('%') {
        let share: f64 = percent.trim().parse().map_err(|_| bad())?;
        return if share > 0.0 && share <= 100.0 { Ok(dr::engine::ReadPacks::Percent(share)) } else { Err(bad()) };
    }
    let (n, m) = text.split_once('/').ok_or_else(bad)?;
    let (n, m): (u32, u32) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
    if n == 0 || m == 0 || n > m {
        return Err(bad());
    }
    Ok(dr::engine::ReadPacks::Part { n, m })
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    let identities = context.identities(&loaded.config, "verify")?;
    let repo = context.open_repository(&loaded.config).await?;
    let selection =
        if args.all { VerifySelection::All } else { VerifySelection::One(args.to.unwrap_or(Selector::Latest)) };
    let display = if args.json { display.silent() } else { display.clone() };
    let report =
        dr::verify(&loaded.config, &repo, identities, &selection, args.read_data_subset.unwrap_or_default(), &display)
            .await?;
    display.clear();
    if args.json {
        print_json(&report)?;
    } else {
        for snapshot in &report.snapshots {
            let stored: u64 = snapshot.objects.iter().map(|o| o.stored_size).sum();
            let verdict = if snapshot.ok() { "ok" } else { "BAD" };
            outln!("{} {verdict}: {} objects, {}", snapshot.snapshot, snapshot.objects.len(), units::bytes(stored));
            if let Some(error) = &snapshot.manifest_error {
                outln!("  manifest: {error}");
            }
            for error in snapshot.objects.iter().filter_map(|o| o.error.as_deref()) {
                outln!("  {error}");
            }
            for file in &snapshot.incomplete_files {
                outln!("  incomplete: {file}");
            }
        }
        if !report.drills.is_empty() {
            let bad = report.bad_drills().count();
            let verdict = if bad == 0 { "ok" } else { "BAD" };
            outln!("drill records {verdict}: {} read, {bad} damaged", report.drills.len());
            for drill in report.bad_drills() {
                outln!("  {}", drill.error.as_deref().unwrap_or_default());
            }
        }
        for stream in &report.streams {
            let verdict = if stream.errors.is_empty() { "ok" } else { "BAD" };
            outln!(
                "change stream {}/{} {verdict}: {}, {}",
                stream.source,
                stream.generation,
                units::plural(stream.segments, "segment"),
                units::bytes(stream.stored_bytes)
            );
            for error in &stream.errors {
                outln!("  {error}");
            }
        }
    }
    if report.ok() {
        return Ok(());
    }
    let first = report
        .bad_objects()
        .next()
        .and_then(|o| o.error.clone())
        .or_else(|| report.snapshots.iter().find_map(|s| s.manifest_error.clone()))
        .or_else(|| report.bad_drills().next().and_then(|d| d.error.clone()))
        .or_else(|| report.streams.iter().find_map(|s| s.errors.first().cloned()))
        .unwrap_or_default();
    Err(Error::VerifyFailed {
        bad: report.snapshots.iter().filter(|s| !s.ok()).count(),
        total: report.snapshots.len(),
        bad_drills: report.bad_drills().count(),
        bad_streams: report.streams.iter().filter(|s| !s.errors.is_empty()).count(),
        first,
    })
}
