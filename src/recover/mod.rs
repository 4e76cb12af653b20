//! `dr recover`: run an executable runbook (docs/runbooks.md) step by step, with one snapshot for every
//! restore step, state saved after each step for `--resume`, and a report of the RPO suffered and the RTO
//! achieved.
//!
//! Order of work: [`Runbook::load`] validates the whole file; [`prepare`] resolves the snapshot (or takes the
//! interrupted run's), decides where to start and checks each restore step's source against the snapshot,
//! all before anything runs; the CLI then shows the plan (`--dry-run`) or asks for confirmation; [`run`] runs
//! the steps in order, saves the state after each, writes the report and the audit entry.

mod report;
pub(crate) mod runbook;
mod state;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

pub use report::RecoveryReport;
pub use runbook::{OnFailure, Runbook, Step, StepKind};
pub use state::{RecoverState, StepOutcome, StepRecord};

use crate::audit::AuditEntry;
use crate::config::Config;
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::snapshot_id::Selector;
use crate::units;
use steps::{StepAttempt, Steps};

/// Pause between two attempts of a step with `retries`.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RecoverOptions {
    /// Which snapshot a new recovery restores (a resumed one keeps its own).
    pub selector: Selector,
    /// Continue the interrupted recovery of this runbook.
    pub resume: bool,
    /// Start at this step (the earlier ones are skipped; with `resume`, they keep their recorded outcome).
    pub from_step: Option<String>,
    /// Restore steps replace non-empty targets.
    pub force: bool,
    /// pg_restore jobs of restore steps.
    pub jobs: usize,
    pub temp_dir: Option<PathBuf>,
    /// Cancelled on SIGINT/SIGTERM: the running step is stopped, the state saved.
    pub cancel: CancellationToken,
}

/// What the engine tells its watcher as the run goes.
#[derive(Debug)]
pub enum Event<'a> {
    StepStarted {
        number: usize,
        total: usize,
        step: &'a Step,
        description: &'a str,
    },
    /// One line of a `run` step's output (secrets masked).
    Output {
        step: &'a str,
        line: &'a str,
    },
    /// An attempt failed and the step will be tried again.
    Retrying {
        step: &'a str,
        attempt: u32,
        error: &'a str,
        delay: Duration,
    },
    StepFinished {
        number: usize,
        total: usize,
        record: &'a StepRecord,
    },
}

/// A recovery ready to run: its state, where the state lives, and the first step to run.
#[derive(Debug, Clone)]
pub struct RunbookPlan {
    pub state: RecoverState,
    pub state_path: PathBuf,
    /// Index of the first step to run.
    pub start: usize,
    pub resumed: bool,
}

impl RunbookPlan {
    /// Whether a step to run restores something or runs a command.
    pub fn is_destructive(&self, runbook: &Runbook) -> bool {
        runbook.steps[self.start..].iter().any(|s| s.kind.is_destructive())
    }

    /// The whole plan, one step a line, secrets masked: what `--dry-run` prints.
    pub fn render(&self, runbook: &Runbook) -> String {
        let state = &self.state;
        let mut out = format!("runbook {:?} ({})\n", runbook.name, runbook.path.display());
        out.push_str(&format!(
            "snapshot {}{}: data consistent at {} ({})\n",
            state.snapshot,
            if self.resumed { " (the interrupted recovery's)" } else { "" },
            state.snapshot_consistent_at.format("%Y-%m-%d %H:%M:%S UTC"),
            units::age(state.snapshot_consistent_at, Utc::now())
        ));
        out.push_str(&format!("state file {}\n", self.state_path.display()));
        out.push_str("steps:\n");
        for (index, (step, record)) in runbook.steps.iter().zip(&state.steps).enumerate() {
            let note = if index < self.start {
                format!("   [not run: {}]", if self.resumed { record.outcome.label() } else { "before --from-step" })
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {:>2}. {} [{}]{note}\n      {}\n",
                index + 1,
                step.name,
                step.kind.name(),
                record.description
            ));
        }
        out
    }
}

/// How a run ended. The report is written whatever the outcome; `result` is what the command ends with.
#[derive(Debug)]
pub struct Recovery {
    pub report: RecoveryReport,
    /// JSON and Markdown.
    pub report_paths: Option<(PathBuf, PathBuf)>,
    pub state_path: PathBuf,
    /// The step that was running when the run was stopped by a signal.
    pub interrupted_step: Option<String>,
    pub result: Result<()>,
}

/// Where the state (and the reports) of a runbook live: next to the audit log, else in `[service] state_dir`,
/// else beside the runbook.
pub fn state_dir(config: &Config, runbook: &Runbook) -> PathBuf {
    config
        .audit
        .path
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| config.service.state_dir.clone())
        .or_else(|| runbook.path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn stem(runbook: &Runbook) -> String {
    runbook.path.file_stem().map_or_else(|| "runbook".to_string(), |s| s.to_string_lossy().into_owned())
}

pub fn state_path(config: &Config, runbook: &Runbook) -> PathBuf {
    state_dir(config, runbook).join(format!("{}.recover-state.json", stem(runbook)))
}

fn pending(runbook: &Runbook, step: &Step) -> StepRecord {
    StepRecord {
        name: step.name.clone(),
        kind: step.kind.name().to_string(),
        description: runbook.describe(step),
        outcome: StepOutcome::Pending,
        attempts: 0,
        started_at: None,
        duration_seconds: 0.0,
        error: None,
        output: Vec::new(),
    }
}

/// Resolves the snapshot (or loads the interrupted recovery), decides the first step, and checks that every
/// restore step's source is in the snapshot. Changes nothing.
pub async fn prepare(
    config: &Config,
    repo: &Repository,
    runbook: &Runbook,
    options: &RecoverOptions,
) -> Result<RunbookPlan> {
    let state_path = state_path(config, runbook);
    let saved = RecoverState::load(&state_path)?;
    let from = options.from_step.as_deref().map(|name| runbook.step_index(name)).transpose()?;
    let now = Utc::now();
    let (state, start, manifest) = if options.resume {
        let saved = saved.ok_or_else(|| {
            Error::Usage(format!(
                "there is no recovery of runbook {:?} to resume: {} does not exist",
                runbook.name,
                state_path.display()
            ))
        })?;
        let manifest = repo.manifest(&saved.snapshot).await?;
        let steps: Vec<StepRecord> = runbook
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| match saved.steps.iter().find(|r| r.name == step.name) {
                Some(record) if from.is_none_or(|from| index < from) => {
                    StepRecord { description: runbook.describe(step), ..record.clone() }
                }
                _ => pending(runbook, step),
            })
            .collect();
        let mut state = RecoverState { steps, finished: false, runs: saved.runs + 1, ..saved };
        let start = from.unwrap_or_else(|| state.resume_index());
        if start == runbook.steps.len() {
            return Err(Error::Usage(format!(
                "the recovery of runbook {:?} finished at {}: there is nothing to resume (run it again without \
                 --resume, or pick a step with --from-step)",
                runbook.name,
                state.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        state.runbook = runbook.name.clone();
        (state, start, manifest)
    } else {
        if let Some(saved) = saved.filter(|s| !s.finished) {
            tracing::warn!(
                "the recovery of snapshot {} started {} was not finished; starting a new one (--resume would \
                 continue it)",
                saved.snapshot,
                saved.started_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let id = repo.resolve(&options.selector).await?;
        let manifest = match options.selector {
            // With change streams, the base is the newest snapshot consistent by then (as for dr restore).
            Selector::AtOrBefore(time) => crate::engine::restore::point_in_time::base_at(repo, id, time).await?,
            _ => repo.manifest(&id).await?,
        };
        let id = manifest.id.clone();
        let start = from.unwrap_or(0);
        let steps = runbook
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let record = pending(runbook, step);
                if index < start { StepRecord { outcome: StepOutcome::Skipped, ..record } } else { record }
            })
            .collect();
        let state = RecoverState {
            runbook: runbook.name.clone(),
            runbook_path: runbook.path.clone(),
            snapshot: id,
            snapshot_consistent_at: manifest.consistent_at().unwrap_or(manifest.started_at),
            started_at: now,
            updated_at: now,
            runs: 1,
            finished: false,
            steps,
            recovered_to: None,
            point_in_time: !matches!(options.selector, Selector::Id(_)),
            replay_until: match options.selector {
                Selector::AtOrBefore(time) => Some(time),
                _ => None,
            },
        };
        (state, start, manifest)
    };
    let mut problems = Vec::new();
    for step in &runbook.steps[start..] {
        if let StepKind::Restore { source, .. } = &step.kind
            && manifest.source(source).is_none()
        {
            let names: Vec<&str> = manifest.sources.iter().map(|s| s.name.as_str()).collect();
            problems.push(format!(
                "step {:?}: snapshot {} has no source {source:?} (it has: {})",
                step.name,
                manifest.id,
                names.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::RunbookInvalid { path: runbook.path.clone(), problems });
    }
    Ok(RunbookPlan { state, state_path, start, resumed: options.resume })
}

/// Runs the plan's steps in order. Errors before the first step (the state cannot be written) are errors; how
/// the steps went is in the returned [`Recovery`].
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: &Config,
    repo: &Repository,
    identities: Option<Arc<Identities>>,
    runbook: &Runbook,
    plan: RunbookPlan,
    options: &RecoverOptions,
    progress: &dyn Progress,
    events: &dyn Fn(Event<'_>),
) -> Result<Recovery> {
    let RunbookPlan { mut state, state_path, start, .. } = plan;
    let run_started = Utc::now();
    state.save(&state_path)?;
    let snapshot = state.snapshot.clone();
    let replay = state.point_in_time.then_some(state.replay_until);
    let steps = Steps {
        config,
        repo,
        identities,
        snapshot: &snapshot,
        replay,
        recovered_to: std::sync::Mutex::new(None),
        options,
        progress,
        runbook,
        events,
    };
    let total = runbook.steps.len();
    let mut result = Ok(());
    let mut interrupted_step = None;
    let mut continued = Vec::new();
    let mut outcome = "completed".to_string();
    for (index, step) in runbook.steps.iter().enumerate().skip(start) {
        let description = state.steps[index].description.clone();
        events(Event::StepStarted { number: index + 1, total, step, description: &description });
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut attempts = 0;
        let attempt = loop {
            attempts += 1;
            let attempt = steps.attempt(step).await;
            match &attempt {
                StepAttempt::Failed { message, refused: false, .. } if attempts <= step.retries => {
                    let message = runbook.mask(message);
                    events(Event::Retrying {
                        step: &step.name,
                        attempt: attempts,
                        error: &message,
                        delay: RETRY_DELAY,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        _ = options.cancel.cancelled() => break StepAttempt::Interrupted { output: Vec::new() },
                    }
                }
                _ => break attempt,
            }
        };
        let record = &mut state.steps[index];
        record.attempts = attempts;
        record.started_at = Some(started_at);
        record.duration_seconds = clock.elapsed().as_secs_f64();
        record.error = None;
        let mut stop = None;
        match attempt {
            StepAttempt::Succeeded { output } => {
                record.outcome = StepOutcome::Succeeded;
                record.output = output;
                if let Some(replayed) = steps.take_recovered_to() {
                    state.recovered_to = Some(state.recovered_to.map_or(replayed, |t| t.min(replayed)));
                }
            }
            StepAttempt::Failed { message, hint, output, refused } => {
                let message = runbook.mask(&message);
                record.error = Some(message.clone());
                record.output = output;
                if step.on_failure == OnFailure::Continue && !refused {
                    record.outcome = StepOutcome::FailedContinued;
                    continued.push(step.name.clone());
                } else {
                    record.outcome = StepOutcome::Failed;
                    outcome = format!("failed at step {:?}", step.name);
                    stop = Some(Error::RecoverStepFailed {
                        step: step.name.clone(),
                        reason: message,
                        hint: hint.map(|h| runbook.mask(&h)),
                        runbook: runbook.path.clone(),
                    });
                }
            }
            StepAttempt::Interrupted { output } => {
                record.outcome = StepOutcome::Interrupted;
                record.output = output;
                outcome = format!("interrupted at step {:?}", step.name);
                interrupted_step = Some(step.name.clone());
                stop = Some(Error::Cancelled);
            }
        }
        let saved = state.save(&state_path);
        events(Event::StepFinished { number: index + 1, total, record: &state.steps[index] });
        if let Some(error) = stop {
            result = Err(error);
            break;
        }
        if let Err(e) = saved {
            // Going on without a state would make a later --resume start from the wrong place.
            outcome = format!("stopped after step {:?}: the state could not be saved", step.name);
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        state.finished = true;
        let _ = state.save(&state_path);
        if !continued.is_empty() {
            outcome = format!("completed with {} failed step(s)", continued.len());
            result = Err(Error::RecoverIncomplete { failed: continued, runbook: runbook.path.clone() });
        }
    }
    let report = RecoveryReport::new(&state, outcome.clone(), result.is_ok(), run_started);
    let report_paths = match report.write(state_path.parent().unwrap_or(Path::new(".")), &stem(runbook)) {
        Ok(paths) => Some(paths),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let error = result.as_ref().err().map(|e| match e {
        Error::Cancelled => "stopped by a signal".to_string(),
        e => runbook.mask(&e.to_string()),
    });
    crate::audit::record(
        config,
        AuditEntry::new("recover", Some(snapshot.to_string()), error).detail(format!(
            "runbook {:?} ({}): {outcome}",
            runbook.name,
            runbook.path.display()
        )),
    );
    Ok(Recovery { report, report_paths, state_path, interrupted_step, result })
}
