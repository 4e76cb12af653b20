//! `dr restore --to latest|ID|TIME [--only NAME]... [--into NAME=TARGET]... [--jobs N] [--force]`

use std::path::PathBuf;

use dr::{RestoreOptions, Result, Selector, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which snapshot: `latest`, an id (or unique prefix), or an RFC 3339 time (the newest at or before it).
    #[arg(long, value_name = "latest|ID|TIME", value_parser = super::parse_selector)]
    to: Selector,

    /// Restore only this source (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,

    /// Restore a source somewhere else: a connection string for a database, a directory for files.
    #[arg(long, value_name = "NAME=TARGET", value_parser = parse_into)]
    into: Vec<(String, String)>,

    /// Parallel pg_restore jobs (default: number of CPUs); 1 streams with no temporary file.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,

    /// Restore only this path of a chunked files source (relative to its root: a file, or a directory with
    /// everything below it), with the directories above it.
    #[arg(long, value_name = "PATH")]
    path: Option<String>,

    /// Restore into targets that are not empty, replacing what the snapshot holds.
    #[arg(long)]
    force: bool,

    /// Directory for the temporary archive of a parallel restore (default: [restore] temp_dir or $TMPDIR).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,

    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

/// An `--into` value that is not `NAME=TARGET`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not NAME=TARGET (e.g. uploads=/restore/uploads)")]
struct NotNameEqualsTarget(String);

fn parse_into(text: &str) -> std::result::Result<(String, String), NotNameEqualsTarget> {
    match text.split_once('=') {
        Some((name, target)) if !name.is_empty() && !target.is_empty() => Ok((name.to_string(), target.to_string())),
        _ => Err(NotNameEqualsTarget(text.to_string())),
    }
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    let config = &loaded.config;
    let identities = context.identities(config, "restore")?;
    let repo = context.open_repository(config).await?;
    let jobs = Context::restore_jobs(config, args.jobs);
    let options = RestoreOptions {
        path: args.path,
        point_in_time: !matches!(args.to, Selector::Id(_)),
        selector: args.to,
        only: args.only,
        into: args.into,
        jobs,
        force: args.force,
        temp_dir: args.temp_dir.or_else(|| config.restore.temp_dir.clone()),
        replay_until: None,
    };
    let display = if args.json { display.silent() } else { display.clone() };
    let report = dr::restore(config, &repo, identities, &options, &display).await?;
    display.clear();
    if args.json {
        return print_json(&report);
    }
    outln!(
        "restored snapshot {} in {}",
        report.snapshot,
        units::duration(std::time::Duration::from_secs_f64(report.duration_seconds))
    );
    for source in &report.sources {
        let mut detail = String::new();
        if let Some(files) = &source.files {
            detail = format!(" ({} files, {})", files.files, units::bytes(files.bytes));
        }
        if let Some(globals) = &source.globals {
            detail = format!(
                " (roles: {} created, {} kept as they were)",
                globals.created_roles.len(),
                globals.kept_roles.len()
            );
        }
        outln!("  {:<16} -> {}{detail}", source.name, source.target);
        if let Some(replay) = &source.point_in_time {
            outln!(
                "      recovered to {}: {} replayed ({}) from {}",
                replay.recovered_to.to_rfc3339(),
                units::plural(replay.transactions as usize, "transaction"),
                units::plural(replay.changes as usize, "change"),
                units::plural(replay.segments, "segment")
            );
        }
        for warning in &source.warnings {
            outln!("      warning: {warning}");
        }
    }
    Ok(())
}
