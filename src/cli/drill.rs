//! `dr drill [--to latest|ID|TIME] [--scratch-url URL] [--keep] [--jobs N] [--json]`
//!
//! Exit 0 only when the drill passed and both objectives were met; otherwise 1, with the reason on the
//! `error:` line (the record is stored either way).

use dr::drill::{DrillOptions, DrillOutcome};
use dr::repo::drill_record::{CheckStatus, DrillRecord, Measure};
use dr::{Error, Result, Selector, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which snapshot (default: latest).
    #[arg(long, value_name = "latest|ID|TIME", value_parser = super::parse_selector)]
    to: Option<Selector>,

    /// A PostgreSQL server to restore into (as `dr_drill_*` databases, dropped afterwards) instead of an
    /// embedded scratch cluster; never a server a configured source lives on.
    #[arg(long, value_name = "URL")]
    scratch_url: Option<String>,

    /// Leave the scratch server, databases and restored files in place, and print how to reach them.
    #[arg(long)]
    keep: bool,

    /// Parallel pg_restore jobs (default: [restore] jobs, else the number of CPUs); 1 streams.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,

    /// Print the drill record as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    let config = &loaded.config;
    let identities = context.identities(config, "drill")?;
    let repo = context.open_repository(config).await?;
    let jobs = Context::restore_jobs(config, args.jobs);
    let options = DrillOptions {
        selector: args.to.unwrap_or(Selector::Latest),
        scratch_url: args.scratch_url.or_else(|| config.drill.scratch_url.clone()),
        keep: args.keep,
        jobs,
        temp_dir: config.restore.temp_dir.clone(),
        cancel: context.stop.token(),
    };
    let display = if args.json || context.quiet { display.silent() } else { display.clone() };
    let outcome = dr::drill::drill(config, &repo, identities, &options, &display).await?;
    display.clear();
    if args.json {
        print_json(&outcome.record)?;
    } else if !context.quiet {
        print_outcome(&outcome);
    }
    if let Err(e) = outcome.stored {
        return Err(Error::io("storing the drill record", std::io::Error::other(e)));
    }
    let record = &outcome.record;
    match (&record.reason, record.passed) {
        (None, _) => Ok(()),
        (Some(reason), passed) => Err(Error::DrillFailed {
            outcome: if passed { "passed its checks but missed an objective" } else { "failed" },
            reason: reason.clone(),
            hint: outcome.hint.clone(),
        }),
    }
}

fn print_outcome(outcome: &DrillOutcome) {
    let record = &outcome.record;
    let verdict = match (record.passed, record.succeeded) {
        (true, true) => "PASSED, objectives met",
        (true, false) => "PASSED its checks, but MISSED an objective",
        _ => "FAILED",
    };
    let snapshot = record.snapshot.as_ref().map_or("no snapshot".to_string(), |s| format!("snapshot {s}"));
    outln!("drill {} of {snapshot}: {verdict}", record.id);
    if record.scratch.kind != "none" {
        outln!(
            "  scratch:  {} {} ({}, started in {})",
            record.scratch.kind,
            record.scratch.server_version.as_deref().unwrap_or("PostgreSQL"),
            record.scratch.location,
            units::seconds(record.scratch.start_seconds)
        );
    }
    if !record.phases.is_empty() {
        let phases: Vec<String> =
            record.phases.iter().map(|p| format!("{} {}", p.name, units::seconds(p.seconds))).collect();
        outln!("  phases:   {}", phases.join(", "));
    }
    outln!("  RTO:      {}", measure(&record.rto));
    outln!("  RPO:      {}", measure(&record.rpo));
    if let Some(stream) = &record.stream {
        outln!(
            "  stream:   {} stored up to {} (the RPO above is its age); {} replayed in {}",
            stream.source,
            stream.covered_until.to_rfc3339(),
            units::plural(stream.transactions as usize, "transaction"),
            units::seconds(stream.replay_seconds)
        );
    }
    for check in &record.checks {
        let status = match check.status {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        };
        outln!("  {status}  {:<24} {}", check.name, check.detail);
        for problem in &check.problems {
            outln!("          - {problem}");
        }
    }
    print_sizes(record);
    match &outcome.stored {
        Ok(key) => outln!("  record:   {key}"),
        Err(e) => outln!("  record:   NOT STORED: {e}"),
    }
    for line in &outcome.kept {
        outln!("  kept:     {line}");
    }
}

fn print_sizes(record: &DrillRecord) {
    let sizes: Vec<String> = record
        .sizes
        .iter()
        .map(|s| format!("{} {} ({} stored)", s.name, units::bytes(s.plain_bytes), units::bytes(s.stored_bytes)))
        .collect();
    if !sizes.is_empty() {
        outln!("  sizes:    {}", sizes.join(", "));
    }
}

fn measure(measure: &Measure) -> String {
    let value = measure.seconds.map_or("not measured".to_string(), units::seconds);
    match (measure.objective_seconds, measure.met()) {
        (None, _) => format!("{value} (no objective set)"),
        (Some(objective), Some(true)) => format!("{value} (objective {}: met)", units::seconds(objective)),
        (Some(objective), None) => format!("{value} (objective {})", units::seconds(objective)),
        (Some(objective), Some(false)) => format!("{value} (objective {}: MISSED)", units::seconds(objective)),
    }
}
