//! `dr backup [--only NAME]... [--json]`
//!
//! Exit code 3: the snapshot was committed, but some files changed while they were read (stored incomplete).

use dr::{BackupOptions, Result, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Back up only this source (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,

    /// Print a JSON report instead of the snapshot id.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    let repo = context.open_repository(&loaded.config).await?;
    let display = if args.json { display.silent() } else { display.clone() };
    let options = BackupOptions { only: args.only, cancel: context.stop.token() };
    let report = dr::backup(&loaded.config, &repo, &options, &display).await?;
    display.clear();
    if args.json {
        print_json(&report)?;
        return incomplete(&report);
    }
    if !context.quiet {
        for source in &report.sources {
            errln!(
                "  {:<16} {:>10} -> {:>10} in {}{}",
                source.name,
                units::bytes(source.plain_size),
                units::bytes(source.stored_size),
                units::duration(std::time::Duration::from_secs_f64(source.duration_seconds)),
                if source.warnings.is_empty() {
                    String::new()
                } else {
                    format!("  ({} warnings)", source.warnings.len())
                }
            );
            if let Some(chunked) = &source.chunked {
                errln!(
                    "  {:<16} {} files unchanged (not read), {} new chunks in {} packs",
                    "",
                    chunked.files_unchanged,
                    chunked.chunks_added,
                    chunked.packs_written
                );
            }
        }
    }
    outln!("{}", report.snapshot);
    incomplete(&report)
}

/// A committed snapshot with files stored incomplete ends with a warning naming them and exit code 3.
fn incomplete(report: &dr::BackupReport) -> Result<()> {
    let files = report.incomplete_files();
    if files.is_empty() {
        return Ok(());
    }
    Err(dr::Error::BackupIncomplete { snapshot: report.snapshot.to_string(), files })
}
