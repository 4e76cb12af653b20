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

    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    let identities = context.identities(&loaded.config, "verify")?;
    let repo = context.open_repository(&loaded.config).await?;
    let selection =
        if args.all { VerifySelection::All } else { VerifySelection::One(args.to.unwrap_or(Selector::Latest)) };
    let display = if args.json { display.silent() } else { display.clone() };
    let report = dr::verify(&loaded.config, &repo, identities, &selection, &display).await?;
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
        .unwrap_or_default();
    Err(Error::VerifyFailed {
        bad: report.snapshots.iter().filter(|s| !s.ok()).count(),
        total: report.snapshots.len(),
        bad_drills: report.bad_drills().count(),
        first,
    })
}
