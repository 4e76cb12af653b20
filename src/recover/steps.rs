//! One attempt at one step, of each kind. An attempt never returns an error: it says how it went, with the
//! output or detail that the report keeps.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::runbook::{Runbook, Step, StepKind};
use super::{Event, RecoverOptions};
use crate::config::{Config, DrillCheck};
use crate::crypto::Identities;
use crate::drill::checks;
use crate::drill::expect::Expectation;
use crate::engine::{self, RestoreOptions};
use crate::error::Error;
use crate::pg::{ConnInfo, connect};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::drill_record::CheckStatus;
use crate::repo::snapshot_id::{Selector, SnapshotId};
use crate::units;

/// The report keeps this many of a `run` step's last output lines.
const MAX_OUTPUT_LINES: usize = 200;
/// A `sql` step's statement timeout when the step sets no `timeout`.
const SQL_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two polls of an `http` step; also the longest a single request may take.
const HTTP_POLL: Duration = Duration::from_secs(1);
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM, how long a step's process group has before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// After the shell exited, how long its output is still read: a process it left in the background may hold
/// the pipes open for ever.
const DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) enum StepAttempt {
    Succeeded {
        output: Vec<String>,
    },
    Failed {
        message: String,
        hint: Option<String>,
        output: Vec<String>,
        /// A refusal (a non-empty restore target): not retried, and the run stops whatever `on_failure` says.
        refused: bool,
    },
    Interrupted {
        output: Vec<String>,
    },
}

impl StepAttempt {
    fn failed(message: impl Into<String>) -> StepAttempt {
        StepAttempt::Failed { message: message.into(), hint: None, output: Vec::new(), refused: false }
    }
}

/// What every step of one run shares.
pub(super) struct Steps<'a> {
    pub config: &'a Config,
    pub repo: &'a Repository,
    pub identities: Option<Arc<Identities>>,
    pub snapshot: &'a SnapshotId,
    /// Replay the databases' change streams after the snapshot, up to this time (`Some(None)`: all stored).
    pub replay: Option<Option<chrono::DateTime<chrono::Utc>>>,
    /// What the last restore step's replay reached, for the recovery's RPO.
    pub recovered_to: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    pub options: &'a RecoverOptions,
    pub progress: &'a dyn Progress,
    pub runbook: &'a Runbook,
    pub events: &'a dyn Fn(Event<'_>),
}

impl Steps<'_> {
    /// What the restore step that just succeeded replayed up to, if it replayed a change stream.
    pub fn take_recovered_to(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.recovered_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    pub async fn attempt(&self, step: &Step) -> StepAttempt {
        let cancel = &self.options.cancel;
        if let StepKind::Run { command, env, dir } = &step.kind {
            return self.run(step, command, env, dir, cancel).await;
        }
        let work = async {
            match &step.kind {
                StepKind::Restore { source, into } => self.restore(source, into.as_deref()).await,
                StepKind::Http { url, expect_status, within } => http(url, *expect_status, *within).await,
                StepKind::Sql { database, query, expect } => sql(step, database, query, expect).await,
                StepKind::Wait(duration) => {
                    tokio::time::sleep(*duration).await;
                    StepAttempt::Succeeded { output: Vec::new() }
                }
                StepKind::Run { .. } => unreachable!("handled above"),
            }
        };
        let timed = async {
            match step.timeout {
                Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    StepAttempt::failed(format!("timed out after {}", humantime::format_duration(limit)))
                }),
                None => work.await,
            }
        };
        tokio::select! {
            attempt = timed => attempt,
            _ = cancel.cancelled() => StepAttempt::Interrupted { output: Vec::new() },
        }
    }

    async fn restore(&self, source: &str, into: Option<&str>) -> StepAttempt {
        let Some(identities) = self.identities.clone() else {
            return StepAttempt::failed("no identity to decrypt the snapshot");
        };
        let options = RestoreOptions {
            path: None,
            selector: Selector::Id(self.snapshot.to_string()),
            only: vec![source.to_string()],
            into: into.map(|i| vec![(source.to_string(), i.to_string())]).unwrap_or_default(),
            jobs: self.options.jobs,
            force: self.options.force,
            temp_dir: self.options.temp_dir.clone(),
            point_in_time: self.replay.is_some(),
            replay_until: self.replay.flatten(),
        };
        match engine::restore(self.config, self.repo, identities, &options, self.progress).await {
            Ok(report) => StepAttempt::Succeeded {
                output: report
                    .sources
                    .iter()
                    .map(|s| {
                        let replayed = s.point_in_time.as_ref().map_or(String::new(), |p| {
                            *self.recovered_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(p.recovered_to);
                            format!(
                                "; {} replayed, recovered to {}",
                                units::plural(p.transactions as usize, "transaction"),
                                p.recovered_to.to_rfc3339()
                            )
                        });
                        format!(
                            "restored {} into {} in {}{replayed}",
                            s.name,
                            s.target,
                            units::duration(Duration::from_secs_f64(s.duration_seconds))
                        )
                    })
                    .chain(report.sources.iter().flat_map(|s| s.warnings.iter().map(|w| format!("warning: {w}"))))
                    .collect(),
            },
            Err(e @ Error::TargetNotEmpty { .. }) => StepAttempt::Failed {
                message: e.to_string(),
                hint: Some(
                    "nothing was written to it; empty the target, or pass --force to restore over it (with \
                     --resume to keep the interrupted recovery's snapshot)"
                        .to_string(),
                ),
                output: Vec::new(),
                refused: true,
            },
            Err(e) => {
                StepAttempt::Failed { message: e.to_string(), hint: e.hint(), output: Vec::new(), refused: false }
            }
        }
    }

    /// `sh -c COMMAND` in a process group of its own, so that a timeout or a signal stops everything it
    /// started; its output goes line by line to the events and the report.
    async fn run(
        &self,
        step: &Step,
        command: &str,
        env: &std::collections::BTreeMap<String, String>,
        dir: &Path,
        cancel: &CancellationToken,
    ) -> StepAttempt {
        let mut child = match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return StepAttempt::failed(format!("cannot start sh in {}: {e}", dir.display())),
        };
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return StepAttempt::failed("sh started without its pipes");
        };
        let mut pipes =
            Pipes { stdout: Some(BufReader::new(stdout).lines()), stderr: Some(BufReader::new(stderr).lines()) };
        let mut output = VecDeque::new();
        let line = |text: String, output: &mut VecDeque<String>| {
            let text = self.runbook.mask(&text);
            (self.events)(Event::Output { step: &step.name, line: &text });
            if output.len() == MAX_OUTPUT_LINES {
                output.pop_front();
            }
            output.push_back(text);
        };
        let deadline = step.timeout.map(|t| Instant::now() + t);
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let status = loop {
            tokio::select! {
                Some(text) = pipes.next_line() => line(text, &mut output),
                status = child.wait() => break status,
                _ = &mut expired => {
                    stop_group(group, &mut child).await;
                    let limit = step.timeout.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default();
                    return StepAttempt::Failed {
                        message: format!("timed out after {limit}; its process group was killed"),
                        hint: None,
                        output: output.into(),
                        refused: false,
                    };
                }
                _ = cancel.cancelled() => {
                    stop_group(group, &mut child).await;
                    return StepAttempt::Interrupted { output: output.into() };
                }
            }
        };
        let drain = async {
            while let Some(text) = pipes.next_line().await {
                line(text, &mut output);
            }
        };
        let _ = tokio::time::timeout(DRAIN, drain).await;
        match status {
            Ok(status) if status.success() => StepAttempt::Succeeded { output: output.into() },
            Ok(status) => StepAttempt::Failed {
                message: format!("the command failed ({status})"),
                hint: None,
                output: output.into(),
                refused: false,
            },
            Err(e) => StepAttempt::failed(format!("waiting for sh: {e}")),
        }
    }
}

type PipeLines<R> = Option<Lines<BufReader<R>>>;

/// A step's stdout and stderr, read line by line as the lines come; a pipe is dropped at its end (or on a read
/// error).
struct Pipes {
    stdout: PipeLines<ChildStdout>,
    stderr: PipeLines<ChildStderr>,
}

impl Pipes {
    /// The next line from either pipe; `None` once both are closed. Cancel-safe: no line is lost when the
    /// future is dropped.
    async fn next_line(&mut self) -> Option<String> {
        loop {
            let (out, err) = (self.stdout.as_mut(), self.stderr.as_mut());
            let (read, from_stdout) = match (out, err) {
                (None, None) => return None,
                (Some(out), None) => (out.next_line().await, true),
                (None, Some(err)) => (err.next_line().await, false),
                (Some(out), Some(err)) => tokio::select! {
                    read = out.next_line() => (read, true),
                    read = err.next_line() => (read, false),
                },
            };
            match read {
                Ok(Some(text)) => return Some(text),
                _ if from_stdout => self.stdout = None,
                _ => self.stderr = None,
            }
        }
    }
}

/// SIGTERM to the whole group, then SIGKILL to whatever is left of it after [`KILL_GRACE`].
async fn stop_group(group: Option<Pid>, child: &mut tokio::process::Child) {
    let Some(group) = group else {
        let _ = child.kill().await;
        return;
    };
    let _ = killpg(group, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

async fn http(url: &str, expect_status: u16, within: Duration) -> StepAttempt {
    let client = match reqwest::Client::builder().timeout(HTTP_REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => return StepAttempt::failed(format!("cannot make an HTTP client: {e}")),
    };
    let deadline = Instant::now() + within;
    let mut polls = 0u32;
    loop {
        polls += 1;
        let last = match client.get(url).send().await {
            Ok(response) if response.status().as_u16() == expect_status => {
                return StepAttempt::Succeeded {
                    output: vec![format!("{url} answered {} (poll {polls})", response.status())],
                };
            }
            Ok(response) => format!("it answered {}", response.status()),
            Err(e) => format!("the last request failed: {}", crate::error::chain(&e)),
        };
        if Instant::now() + HTTP_POLL >= deadline {
            return StepAttempt::failed(format!(
                "{url} did not answer {expect_status} within {} ({polls} polls); {last}",
                humantime::format_duration(within)
            ));
        }
        tokio::time::sleep(HTTP_POLL).await;
    }
}

async fn sql(step: &Step, database: &str, query: &str, expect: &Expectation) -> StepAttempt {
    let conninfo = match ConnInfo::parse(database) {
        Ok(c) => c,
        Err(e) => return StepAttempt::failed(format!("bad connection string: {e}")),
    };
    let client = match connect(&conninfo).await {
        Ok(client) => client,
        Err(e) => return StepAttempt::failed(format!("cannot connect to {}: {e}", conninfo.redacted())),
    };
    let check = DrillCheck {
        name: step.name.clone(),
        database: conninfo.redacted(),
        sql: query.to_string(),
        expect: expect.to_string(),
        timeout: Some(step.timeout.unwrap_or(SQL_TIMEOUT)),
    };
    let result = checks::user(&client, &check, expect).await;
    match result.status {
        CheckStatus::Pass | CheckStatus::Warn => StepAttempt::Succeeded { output: vec![result.detail] },
        CheckStatus::Fail => StepAttempt::failed(result.detail),
    }
}
