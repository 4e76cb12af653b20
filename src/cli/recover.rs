//! `dr recover --runbook FILE [--to latest|ID|TIME] [--dry-run] [--resume] [--from-step NAME] [--yes] [--force]`
//!
//! Exit 0 when every step succeeded; 1 when the runbook is invalid or a step failed (the state is saved for
//! `--resume`); 2 for a bad invocation, including a destructive run without `--yes` and no terminal to ask on;
//! 128 + N when stopped by signal N (the running step's process group is killed, the state saved).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use dr::recover::{self, Event, RecoverOptions, Recovery, Runbook, StepOutcome};
use dr::{Error, Result, Selector, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The runbook: a TOML file of steps (docs/runbooks.md).
    #[arg(long, value_name = "FILE")]
    runbook: PathBuf,

    /// Which snapshot the restore steps use (default: latest); a resumed recovery keeps its own.
    #[arg(long, value_name = "latest|ID|TIME", value_parser = super::parse_selector, conflicts_with = "resume")]
    to: Option<Selector>,

    /// Resolve the snapshot and print every step with its resolved arguments (secrets masked); change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Continue the interrupted recovery of this runbook after its last completed step, with its snapshot.
    #[arg(long)]
    resume: bool,

    /// Start at this step; the steps before it are not run.
    #[arg(long, value_name = "NAME")]
    from_step: Option<String>,

    /// Do not ask for confirmation (needed without a terminal when the runbook restores or runs commands).
    #[arg(long, short = 'y')]
    yes: bool,

    /// Let restore steps replace targets that are not empty.
    #[arg(long)]
    force: bool,

    /// Print the recovery report as JSON on stdout (with --dry-run, the plan); step output stays on stderr.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let runbook = Runbook::load(&args.runbook, &|key| std::env::var(key).ok())?;
    let loaded = context.load_config()?;
    let config = &loaded.config;
    let repo = context.open_repository(config).await?;
    let options = RecoverOptions {
        selector: args.to.unwrap_or(Selector::Latest),
        resume: args.resume,
        from_step: args.from_step,
        force: args.force,
        jobs: Context::restore_jobs(config, None),
        temp_dir: config.restore.temp_dir.clone(),
        cancel: context.stop.token(),
    };
    let plan = recover::prepare(config, &repo, &runbook, &options).await?;
    if args.dry_run && args.json {
        return print_json(&serde_json::json!({
            "dry_run": true,
            "runbook": runbook.name,
            "snapshot": plan.state.snapshot,
            "snapshot_consistent_at": plan.state.snapshot_consistent_at,
            "state_path": plan.state_path,
            "first_step": plan.start + 1,
            "steps": plan.state.steps,
        }));
    }
    if args.dry_run {
        out!("{}", plan.render(&runbook));
        outln!("dry run: nothing was changed");
        return Ok(());
    }
    if plan.is_destructive(&runbook) && !args.yes {
        confirm(&runbook, &plan.render(&runbook))?;
    }
    let needs_key = runbook.steps[plan.start..].iter().any(|s| matches!(s.kind, recover::StepKind::Restore { .. }));
    let identities = if needs_key { Some(context.identities(config, "recover")?) } else { None };
    let quiet = context.quiet;
    let events = |event: Event<'_>| {
        if quiet {
            return;
        }
        display.suspend(|| print_event(&event));
    };
    let recovery = recover::run(config, &repo, identities, &runbook, plan, &options, display, &events).await?;
    display.clear();
    if args.json {
        let (json_report, markdown_report) = recovery.report_paths.clone().unzip();
        print_json(&serde_json::json!({
            "report": recovery.report,
            "report_path": json_report,
            "markdown_report_path": markdown_report,
            "state_path": recovery.state_path,
        }))?;
    } else {
        print_summary(&recovery, quiet);
    }
    let resume = format!("dr recover --runbook {} --resume", args.runbook.display());
    match recovery.result {
        Err(Error::Cancelled) => match context.stop.explain(Error::Cancelled) {
            Error::Signal { name, number, .. } => Err(Error::RecoverInterrupted {
                signal: name,
                number,
                step: recovery.interrupted_step.unwrap_or_default(),
                state: recovery.state_path,
                resume,
            }),
            other => Err(other),
        },
        result => result,
    }
}

/// Asks on the terminal; without one, refuses.
fn confirm(runbook: &Runbook, plan: &str) -> Result<()> {
    let refused = |interactive| Error::RecoverNotConfirmed { runbook: runbook.name.clone(), interactive };
    if !std::io::stdin().is_terminal() {
        return Err(refused(false));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(
        stderr,
        "{plan}\nThis recovery restores data and runs commands on this host.\nType the runbook's name ({}) or \
         \"yes\" to go on: ",
        runbook.name
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::io("reading the confirmation", e))?;
    let answer = answer.trim();
    if answer == "yes" || answer == runbook.name { Ok(()) } else { Err(refused(true)) }
}

fn print_event(event: &Event<'_>) {
    match event {
        Event::StepStarted { number, total, step, description } => {
            errln!("[{number}/{total}] {} ({})\n      {description}", step.name, step.kind.name());
        }
        Event::Output { line, .. } => errln!("      | {line}"),
        Event::Retrying { attempt, error, delay, .. } => {
            errln!("      attempt {attempt} failed: {error}; trying again in {}", units::duration(*delay));
        }
        Event::StepFinished { record, .. } => {
            let attempts = if record.attempts > 1 { format!(" ({} attempts)", record.attempts) } else { String::new() };
            let error = record.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            errln!("      {} in {}{attempts}{error}", record.outcome.label(), units::seconds(record.duration_seconds));
        }
    }
}

fn print_summary(recovery: &Recovery, quiet: bool) {
    let report = &recovery.report;
    if !quiet {
        let done = report.steps.iter().filter(|s| s.outcome == StepOutcome::Succeeded).count();
        outln!("recovery {}: {done} of {} steps succeeded", report.outcome, report.steps.len());
        outln!("  snapshot       {}", report.snapshot);
        outln!("  data age       {} (the RPO suffered)", units::seconds(report.data_age_seconds));
        outln!(
            "  total time     {} (the RTO achieved, since the first run started)",
            units::seconds(report.total_seconds)
        );
    }
    if let Some((json, markdown)) = &recovery.report_paths {
        outln!("  report         {}", markdown.display());
        outln!("  report (JSON)  {}", json.display());
    }
    outln!("  state          {}", recovery.state_path.display());
}
