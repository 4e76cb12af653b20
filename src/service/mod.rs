//! `dr serve`: the appliance. Runs the `[[job]]`s on their cron schedules, watches the repository's RPO, and
//! serves `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! One scheduler loop owns the jobs: it sleeps until the next due time, starts what is due (a job still
//! running from its previous slot is skipped, never run twice at once), and also wakes for a reload (SIGHUP),
//! a stop (SIGTERM/SIGINT) or a finished job. A run missed while the service was down is caught up once at
//! start-up. On stop it starts nothing new, lets running jobs finish within `[service] grace`, then cancels
//! them (a cancelled backup commits nothing and deletes what it wrote) and returns. docs/service.md is the
//! operator's guide.

pub(crate) mod alerts;
mod http;
mod jobs;
mod metrics;
mod pending_attempts;
pub(crate) mod schedule;
mod state;
mod streams;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, JobKind};
use crate::error::{Error, Result};
pub use metrics::Counters;
pub use schedule::{Job, load as load_jobs};
pub use state::{HeldLock, JobOutcome, RepositoryStatus, ServiceStatus};
use state::{JobStatus, Persisted};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// The base URL a client on this host uses to reach the service listening at `listen`: a wildcard address
/// (`0.0.0.0`, `[::]`, as in a container) is reached over loopback.
pub fn local_base_url(listen: &str) -> String {
    let local = if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    };
    format!("http://{local}")
}
const DEFAULT_STATE_DIR: &str = "/var/lib/dr/state";
const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// How often the repository is listed for `dr_rpo_age_seconds` and `/readyz`, besides after every backup.
const WATCH_INTERVAL: Duration = Duration::from_secs(30);

/// Loads (and reloads) the configuration, validated as [`crate::settings::load`] does: the CLI passes its own
/// loader, tests theirs.
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config> + Send + Sync>;

pub struct ServeOptions {
    pub load: ConfigLoader,
    /// Cancelled on SIGTERM/SIGINT.
    pub stop: CancellationToken,
    /// Receives a message on SIGHUP.
    pub reload: tokio::sync::mpsc::Receiver<()>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions").finish_non_exhaustive()
    }
}

/// What the HTTP handlers and the jobs share.
pub(crate) struct Shared {
    config: RwLock<Arc<Config>>,
    status: Mutex<ServiceStatus>,
    counters: Mutex<Counters>,
    /// The bearer token `/metrics` and `/status` require, when `[service] token_file` is set.
    token: RwLock<Option<String>>,
    sinks: RwLock<alerts::Sinks>,
    incidents: alerts::Incidents,
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The status lock is never held across an await, so a poisoned lock can only come from a panic elsewhere;
    /// the data is still the best there is.
    fn status(&self) -> std::sync::MutexGuard<'_, ServiceStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sinks(&self) -> alerts::Sinks {
        self.sinks.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Opens or clears the incident `key`, messaging the webhooks only when its state changes.
    fn incident(&self, key: &str, failing: bool, title: &str, detail: &str) {
        if let Some(firing) = self.incidents.transition(key, failing) {
            tracing::info!(incident = key, firing, "{title}");
            alerts::incident(&self.sinks(), key, firing, title, detail);
        }
    }
}

/// `[service] listen`, or the default.
pub fn listen_address(config: &Config) -> String {
    config.service.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.to_string())
}

pub fn state_dir(config: &Config) -> PathBuf {
    config.service.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// Creates `dir` if it is missing and proves a file can be written in it.
fn ensure_writable(dir: &std::path::Path, what: &str) -> Result<()> {
    let context =
        || format!("{what} {} must be a writable directory (on a volume when the root is read-only)", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(context(), e))?;
    tempfile::Builder::new().prefix(".dr-probe-").tempfile_in(dir).map_err(|e| Error::io(context(), e))?;
    Ok(())
}

/// Reads `[service] token_file` (trimmed); an empty file is refused, since it would let anyone in.
fn read_token(config: &Config) -> Result<Option<String>> {
    let Some(path) = &config.service.token_file else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading token_file {}", path.display()), e))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(Error::ConfigInvalid(format!("[service] token_file {} is empty", path.display())));
    }
    Ok(Some(token))
}

/// What a configuration gives the service, once checked.
struct Prepared {
    jobs: Vec<Job>,
    token: Option<String>,
    sinks: alerts::Sinks,
}

/// Checks what a service needs beyond the validated configuration before it starts (or a reload is accepted):
/// the schedules directory, the token file, the alert URL files.
fn prepare(config: &Config) -> Result<Prepared> {
    Ok(Prepared {
        jobs: schedule::load(config)?,
        token: read_token(config)?,
        sinks: alerts::Sinks::from_config(config)?,
    })
}

pub async fn serve(mut options: ServeOptions) -> Result<()> {
    let config = (options.load)()?;
    let Prepared { jobs, token, sinks } = prepare(&config)?;
    // Under a read-only root filesystem (a hardened container) these are the places the service writes: fail
    // now, naming them, rather than at the first job.
    ensure_writable(&state_dir(&config), "[service] state_dir")?;
    ensure_writable(&std::env::temp_dir(), "the temporary directory ($TMPDIR)")?;
    let listen = listen_address(&config);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Error::io(format!("listening on {listen} ([service] listen)"), e))?;
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(config)),
        status: Mutex::new(ServiceStatus { started_at: Some(Utc::now()), ..ServiceStatus::default() }),
        counters: Mutex::new(Counters::default()),
        token: RwLock::new(token),
        sinks: RwLock::new(sinks),
        incidents: alerts::Incidents::default(),
    });
    tracing::info!(listen = %listen, jobs = jobs.len(), "dr serve started");

    let http_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, shared.clone(), http_stop.clone()));
    let watcher_stop = http_stop.clone();
    let watcher = tokio::spawn(watch_repository(shared.clone(), watcher_stop));
    let captures = tokio::spawn(streams::supervise(shared.clone(), options.stop.clone()));

    let mut scheduler = Scheduler::new(shared.clone(), jobs);
    scheduler.run(&options.stop, &mut options.reload, options.load.clone()).await;

    let _ = captures.await;
    http_stop.cancel();
    let _ = watcher.await;
    let _ = server.await;
    tracing::info!("dr serve stopped");
    Ok(())
}

/// Lists the repository now and then, so that the RPO age and `/readyz` hold even when no job runs.
async fn watch_repository(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        refresh_repository(&shared).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

async fn refresh_repository(shared: &Shared) {
    let config = shared.config();
    let result = async {
        let store = crate::store::open(&config.repository).await?;
        let repo = crate::repo::Repository::open(Arc::from(store)).await?;
        RepositoryStatus::read(&repo, config.objectives.rpo).await
    }
    .await;
    let now = Utc::now();
    let mut status = shared.status();
    let repository = &mut status.repository;
    match result {
        Ok(fresh) => *repository = fresh,
        Err(e) => {
            if repository.reachable || repository.error.is_none() {
                tracing::warn!("repository check failed: {e}");
            }
            repository.checked_at = Some(now);
            repository.rpo_objective_seconds = config.objectives.rpo.map(|d| d.as_secs_f64());
            repository.location = config.repository.url.clone();
            repository.reachable = false;
            repository.error = Some(e.to_string());
        }
    }
    // Checked here, not by a job: a backup job that stopped running must still raise the alarm.
    let reachable = repository.reachable;
    let error = repository.error.clone().unwrap_or_default();
    let breach = repository.unready_reasons(now).into_iter().find(|r| r.starts_with("RPO"));
    let location = repository.location.clone();
    drop(status);
    shared.incident("repository", !reachable, &format!("repository {location} unreachable"), &error);
    if reachable {
        shared.incident("rpo", breach.is_some(), "RPO objective breached", breach.as_deref().unwrap_or_default());
    }
    let behind = streams::behind(shared, &config);
    for source in config.postgres.iter().filter(|s| s.continuous) {
        let age = behind.iter().find(|(name, _)| *name == source.name).map(|(_, age)| *age);
        let detail = age.map_or(String::new(), |age| format!("nothing stored for {age} s"));
        shared.incident(&format!("stream-behind:{}", source.name), age.is_some(), "change stream behind", &detail);
    }
}

/// A finished job: its name, kind, start and result.
type Finished = (String, JobKind, DateTime<Utc>, Result<String>);

struct Running {
    cancel: CancellationToken,
}

struct Scheduler {
    shared: Arc<Shared>,
    jobs: Vec<Job>,
    next: HashMap<String, DateTime<Utc>>,
    running: HashMap<String, Running>,
    tasks: JoinSet<Finished>,
    persisted: Persisted,
}

impl Scheduler {
    fn new(shared: Arc<Shared>, jobs: Vec<Job>) -> Scheduler {
        let persisted = Persisted::load(&state_dir(&shared.config()));
        let mut scheduler = Scheduler {
            shared,
            jobs: Vec::new(),
            next: HashMap::new(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            persisted,
        };
        scheduler.install(jobs, true);
        scheduler
    }

    /// Takes a new job list: each job's next run from now, or now when a run was missed (at start-up only).
    fn install(&mut self, jobs: Vec<Job>, catch_up: bool) {
        let now = Utc::now();
        self.next.clear();
        let mut status = self.shared.status();
        status.jobs.retain(|name, _| jobs.iter().any(|j| &j.name == name));
        for job in &jobs {
            let last = self.persisted.last_started.get(&job.name).copied();
            let next = if catch_up && job.overdue(last, now) {
                tracing::info!(job = %job.name, last_run = ?last, "a scheduled run was missed: running it now");
                Some(now)
            } else {
                job.next_after(now)
            };
            if let Some(next) = next {
                self.next.insert(job.name.clone(), next);
            }
            let entry = status.jobs.entry(job.name.clone()).or_insert_with(|| JobStatus {
                kind: job.kind,
                schedule: job.expression.clone(),
                next_run: None,
                running_since: None,
                last_started: last,
                last_finished: None,
                last_outcome: None,
                last_error: None,
                last_duration_seconds: None,
                runs: Default::default(),
            });
            entry.kind = job.kind;
            entry.schedule = job.expression.clone();
            entry.next_run = next;
        }
        drop(status);
        self.jobs = jobs;
    }

    async fn run(
        &mut self,
        stop: &CancellationToken,
        reload: &mut tokio::sync::mpsc::Receiver<()>,
        load: ConfigLoader,
    ) {
        loop {
            let earliest = self.next.values().min().copied();
            let sleep = earliest.map_or(Duration::from_secs(3600), |t| (t - Utc::now()).to_std().unwrap_or_default());
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = reload.recv() => self.reload(&load),
                Some(finished) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(finished),
                () = tokio::time::sleep(sleep) => self.start_due(),
            }
        }
        self.shut_down().await;
    }

    fn reload(&mut self, load: &ConfigLoader) {
        let prepared = load().and_then(|config| prepare(&config).map(|prepared| (config, prepared)));
        match prepared {
            Ok((config, Prepared { jobs, token, sinks })) => {
                tracing::info!(jobs = jobs.len(), "configuration reloaded");
                *self.shared.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                *self.shared.token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = token;
                *self.shared.sinks.write().unwrap_or_else(std::sync::PoisonError::into_inner) = sinks;
                self.install(jobs, false);
            }
            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
        }
    }

    fn start_due(&mut self) {
        let now = Utc::now();
        let due: Vec<Job> =
            self.jobs.iter().filter(|j| self.next.get(&j.name).is_some_and(|t| *t <= now)).cloned().collect();
        for job in due {
            let next = job.next_after(now);
            match next {
                Some(next) => self.next.insert(job.name.clone(), next),
                None => self.next.remove(&job.name),
            };
            let mut status = self.shared.status();
            let Some(entry) = status.jobs.get_mut(&job.name) else { continue };
            entry.next_run = next;
            if self.running.contains_key(&job.name) {
                // Never two runs of one job at once: this slot is skipped, and counted.
                *entry.runs.entry(JobOutcome::Skipped).or_default() += 1;
                tracing::warn!(job = %job.name, "the previous run is still going: this run is skipped");
                continue;
            }
            entry.running_since = Some(now);
            entry.last_started = Some(now);
            drop(status);
            self.persisted.last_started.insert(job.name.clone(), now);
            if let Err(e) = self.persisted.save(&state_dir(&self.shared.config())) {
                tracing::warn!("could not save the service state: {e}");
            }
            let cancel = CancellationToken::new();
            self.running.insert(job.name.clone(), Running { cancel: cancel.clone() });
            let shared = self.shared.clone();
            let run_id = crate::repo::snapshot_id::SnapshotId::new(now).to_string();
            // Every line the job's engine logs carries the job's name, kind and run id (in the span).
            let span = tracing::info_span!("job", job = %job.name, run = %job.kind, run_id = %run_id);
            span.in_scope(|| tracing::info!("job started"));
            self.tasks.spawn(
                async move {
                    let config = shared.config();
                    let result = jobs::run(job.kind, &config, &shared, cancel).await;
                    (job.name, job.kind, now, result)
                }
                .instrument(span),
            );
        }
    }

    fn finished(&mut self, joined: std::result::Result<Finished, tokio::task::JoinError>) {
        let Ok((name, kind, started, result)) = joined else {
            tracing::error!("a job task ended abnormally");
            return;
        };
        self.running.remove(&name);
        let now = Utc::now();
        let seconds = (now - started).num_milliseconds() as f64 / 1000.0;
        let mut status = self.shared.status();
        if let Some(entry) = status.jobs.get_mut(&name) {
            entry.running_since = None;
            entry.last_finished = Some(now);
            entry.last_duration_seconds = Some(seconds);
            let outcome = if result.is_ok() { JobOutcome::Success } else { JobOutcome::Failure };
            entry.last_outcome = Some(outcome);
            entry.last_error = result.as_ref().err().map(ToString::to_string);
            *entry.runs.entry(outcome).or_default() += 1;
        }
        drop(status);
        match &result {
            Ok(summary) => tracing::info!(job = %name, outcome = "success", seconds, "job finished: {summary}"),
            Err(e) => tracing::error!(job = %name, outcome = "failure", seconds, "job failed: {e}"),
        }
        let error = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        // A drill's failure is one incident whichever job ran it; other jobs each have their own.
        match kind {
            JobKind::Drill => self.shared.incident("drill", result.is_err(), "restore drill failed", &error),
            _ => self.shared.incident(
                &format!("job:{name}"),
                result.is_err(),
                &format!("dr job {name} ({kind}) failed"),
                &error,
            ),
        }
        // A backup changes the RPO age at once; the watcher would only see it later.
        let shared = self.shared.clone();
        tokio::spawn(async move { refresh_repository(&shared).await });
    }

    /// Starts nothing new; lets running jobs finish within the grace period, then cancels them.
    async fn shut_down(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        let grace = self.shared.config().service.grace.unwrap_or(DEFAULT_GRACE);
        tracing::info!(
            running = self.tasks.len(),
            grace_seconds = grace.as_secs_f64(),
            "stopping: waiting for running jobs"
        );
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(joined) => self.finished(joined),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        tracing::warn!(running = self.tasks.len(), "grace period over: cancelling the running jobs");
        for running in self.running.values() {
            running.cancel.cancel();
        }
        while let Some(joined) = self.tasks.join_next().await {
            self.finished(joined);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local_base_url;

    #[test]
    fn wildcard_listen_addresses_are_reached_over_loopback() {
        assert_eq!(local_base_url("0.0.0.0:9187"), "http://127.0.0.1:9187");
        assert_eq!(local_base_url("[::]:9187"), "http://[::1]:9187");
        assert_eq!(local_base_url("10.0.0.5:9187"), "http://10.0.0.5:9187");
        assert_eq!(local_base_url("127.0.0.1:9187"), "http://127.0.0.1:9187");
    }
}
