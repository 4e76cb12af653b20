//! Restore drills: restore a snapshot the way an incident would, prove the result equals what was backed up,
//! measure RPO and RTO against the objectives, and leave an encrypted record in the repository.
//!
//! Order of work: resolve the snapshot and decrypt its manifest; compare it with the previous snapshot
//! (shrinkage); start the scratch (an embedded cluster of the backed-up server's major version, or `dr_drill_*`
//! databases on `scratch_url`); restore every source exactly as `dr restore` does, databases into the scratch
//! and files into a temporary directory; run the checks; clean up in every outcome (unless `--keep`); store
//! the record, also for a drill that failed. The RTO clock runs from the first byte fetched to the end of the
//! checks; starting the embedded cluster is timed apart, since in an incident the target server exists.
//!
//! The scratch cluster and the restored files live in this drill's private run directory
//! (`<temp dir>/dr-<uid>/drill-*`, see [`crate::run_dir`]): a drill that is killed leaves them behind, and the
//! next restore, drill or recover sweeps them (stopping the cluster first).
//!
//! docs/drills.md says what each check proves and what it cannot.

pub(crate) mod checks;
pub(crate) mod expect;
mod scratch;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::anomalies;
use crate::config::Config;
use crate::crypto::{Identities, Recipients};
use crate::engine::restore::point_in_time;
use crate::engine::{self, RestoreOptions, RestoreReport, SourceRestore};
use crate::error::{Error, Result};
use crate::files::IndexEntry;
use crate::pg::{ConnInfo, connect, tools};
use crate::pipeline;
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::repo::drill_record::{
    Check, CheckStatus, DRILL_RECORD_FORMAT, DrillRecord, Measure, PHASE_CHECKS, PHASE_REPLAY, Phase,
    ScratchDescription, SourceSize, StreamDrill, Tools,
};
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::manifest::{Manifest, ObjectRole, PrivateManifest, SourceKind, StorageFormat};
use crate::repo::snapshot_id::{Selector, SnapshotId};
use crate::run_dir::RunDir;
use expect::Expectation;
pub use scratch::{DATABASE_PREFIX, DrillScratch};

/// Checks `[drill]` and its `[[drill.check]]`s; each check must name one of `postgres`, the configured
/// `[[postgres]]` sources.
pub fn validate(drill: &crate::config::DrillConfig, postgres: &[crate::config::PostgresSource]) -> Result<()> {
    if !(drill.max_shrink > 0.0 && drill.max_shrink <= 1.0) {
        return Err(Error::ConfigInvalid(format!(
            "[drill] max_shrink = {} is out of range; use a fraction above 0 and at most 1 (0.5: warn when \
             something falls to less than half)",
            drill.max_shrink
        )));
    }
    if let Some(url) = &drill.scratch_url {
        ConnInfo::parse(url).map_err(|e| Error::ConfigInvalid(format!("[drill] scratch_url: {e}")))?;
    }
    let mut names = BTreeSet::new();
    for check in &drill.checks {
        let context = format!("[[drill.check]] {:?}", check.name);
        if !names.insert(check.name.as_str()) {
            return Err(Error::ConfigInvalid(format!("{context} is defined twice; give each check its own name")));
        }
        if !postgres.iter().any(|p| p.name == check.database) {
            return Err(Error::ConfigInvalid(format!(
                "{context}: database {:?} is not a [[postgres]] source (use a source's name)",
                check.database
            )));
        }
        Expectation::parse(&check.expect).map_err(|e| Error::ConfigInvalid(format!("{context}: {e}")))?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub selector: Selector,
    /// A server to create `dr_drill_*` databases on instead of an embedded cluster.
    pub scratch_url: Option<String>,
    /// Leave the scratch server, its databases and the restored files in place.
    pub keep: bool,
    /// pg_restore jobs, as for `dr restore`.
    pub jobs: usize,
    /// Where the drill's private run directory (scratch cluster, restored files) and a parallel restore's
    /// staged archive go (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
    /// Stops the drill early; clean-up still runs and the record is still written.
    pub cancel: CancellationToken,
}

#[derive(Debug)]
pub struct DrillOutcome {
    pub record: DrillRecord,
    /// Where the record was stored, or why it could not be.
    pub stored: Result<String>,
    /// With `--keep`: how to reach what was left in place.
    pub kept: Vec<String>,
    /// What to do about the error that stopped the drill early, if one did.
    pub hint: Option<String>,
}

/// What the drill holds that must be cleaned up whatever happens.
#[derive(Default)]
struct Resources {
    scratch: Option<DrillScratch>,
    files_dir: Option<tempfile::TempDir>,
    /// Where each database source was restored.
    databases: Vec<(String, ConnInfo)>,
    /// Holds everything above; dropped (removed) last, as fields drop in declaration order: removed first, it
    /// raced with the scratch server still shutting down inside it (an interrupted drill left it behind).
    run: Option<RunDir>,
}

pub async fn drill(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    options: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillOutcome> {
    // Checked before anything starts: a drill whose record cannot be written would leave no trace.
    let recipients = Recipients::parse(&config.encryption.recipients)?;
    let expectations = config
        .drill
        .checks
        .iter()
        .map(|c| {
            Expectation::parse(&c.expect)
                .map_err(|e| Error::ConfigInvalid(format!("[[drill.check]] {:?}: {e}", c.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    // Shared, so that a prune cannot delete the snapshot under the drill; held until the record is stored.
    let lock_options = LockOptions::from_config(&config.lock, "drill");
    let Some(lock) = options.cancel.run_until_cancelled(repo.lock(LockKind::Shared, &lock_options)).await else {
        return Err(Error::Cancelled);
    };
    let lock = lock?;

    let started_at = Utc::now();
    let mut record = new_record(started_at, config);
    let mut resources = Resources::default();
    let result = {
        let run =
            DrillContext { config, repo, identities: &identities, options, progress, expectations: &expectations };
        let body = run.body(&mut record, &mut resources);
        tokio::select! {
            result = lock.while_held(body) => result,
            () = options.cancel.cancelled() => Err(Error::Cancelled),
        }
    };

    let mut kept = Vec::new();
    if options.keep {
        if let Some(scratch) = resources.scratch.take() {
            kept = scratch.keep(&resources.databases);
        }
        if let Some(dir) = resources.files_dir.take() {
            kept.push(format!("restored files: {}", dir.keep().display()));
        }
        if let Some(run) = resources.run.take() {
            kept.push(format!("remove it all with: rm -rf {}", run.keep().display()));
        }
    } else if let Err(e) = clean_up(&mut resources).await {
        record.checks.push(Check {
            name: "clean-up".into(),
            status: CheckStatus::Fail,
            detail: e.to_string(),
            problems: Vec::new(),
        });
    }
    conclude(&mut record, result.as_ref().err());
    let hint = result.as_ref().err().and_then(Error::hint);
    record.finished_at = Utc::now();
    let stored = repo.save_drill(&recipients, &record).await;
    crate::audit::record(
        config,
        crate::audit::AuditEntry::new(
            "drill",
            record.snapshot.as_ref().map(ToString::to_string),
            record.reason.clone(),
        )
        .detail(format!("drill {}", record.id)),
    );
    let _ = lock.release().await;
    if let Err(e) = result
        && matches!(e, Error::Cancelled)
    {
        return Err(e);
    }
    Ok(DrillOutcome { record, stored, kept, hint })
}

fn new_record(started_at: DateTime<Utc>, config: &Config) -> DrillRecord {
    let objective = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    DrillRecord {
        format: DRILL_RECORD_FORMAT,
        id: SnapshotId::new(started_at),
        snapshot: None,
        started_at,
        finished_at: started_at,
        hostname: crate::host::hostname(),
        dr_version: env!("CARGO_PKG_VERSION").to_string(),
        passed: false,
        succeeded: false,
        reason: None,
        snapshot_consistent_at: None,
        scratch: ScratchDescription {
            kind: "none".into(),
            location: String::new(),
            server_version: None,
            start_seconds: 0.0,
        },
        phases: Vec::new(),
        checks: Vec::new(),
        rpo: Measure { seconds: None, objective_seconds: objective(config.objectives.rpo) },
        rto: Measure { seconds: None, objective_seconds: objective(config.objectives.rto) },
        sizes: Vec::new(),
        anomalies: Vec::new(),
        tools: Tools::default(),
        stream: None,
    }
}

/// Stops the embedded cluster or drops the scratch databases, and removes the restored files.
async fn clean_up(resources: &mut Resources) -> Result<()> {
    let dir = resources.files_dir.take().map(|dir| dir.close().map_err(|e| Error::io("removing the drill's files", e)));
    let scratch = match resources.scratch.take() {
        Some(scratch) => scratch.clean_up().await,
        None => Ok(()),
    };
    // Whatever the steps above could not remove goes with the run directory.
    drop(resources.run.take());
    scratch.and(dir.unwrap_or(Ok(())))
}

/// An error as the one-line reason a record keeps. A failed child tool's message is its status line, then the
/// tail of its stderr: the cause is in that tail (`initdb: could not look up effective user ID ...`), so the last
/// line is kept with the first rather than dropped.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) if first.ends_with(':') => format!("{first} {last}"),
        Some(last) => format!("{first} ({last})"),
        None => first.to_string(),
    }
}

/// Verdict and reason from the checks, the objectives and how the run ended.
fn conclude(record: &mut DrillRecord, error: Option<&Error>) {
    let failed: Vec<Check> = record.failed_checks().cloned().collect();
    record.passed = error.is_none() && failed.is_empty();
    let rpo_missed = record.rpo.met() == Some(false);
    let rto_missed = record.rto.met() == Some(false);
    record.succeeded = record.passed && !rpo_missed && !rto_missed;
    let seconds = |s: Option<f64>| crate::units::seconds(s.unwrap_or(0.0));
    record.reason = if let Some(e) = error {
        Some(match e {
            Error::Cancelled => "the drill was interrupted before it finished".to_string(),
            e => one_line(&e.to_string()),
        })
    } else if let Some(first) = failed.first() {
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more failed checks)", n - 1),
        };
        Some(format!("check {:?} failed: {}{more}", first.name, first.detail))
    } else if rpo_missed {
        Some(format!(
            "RPO objective missed: the snapshot's data was {} old, the objective is {}",
            seconds(record.rpo.seconds),
            seconds(record.rpo.objective_seconds)
        ))
    } else if rto_missed {
        Some(format!(
            "RTO objective missed: the restore and checks took {}, the objective is {}",
            seconds(record.rto.seconds),
            seconds(record.rto.objective_seconds)
        ))
    } else {
        None
    };
}

/// The inputs of one drill.
struct DrillContext<'a> {
    config: &'a Config,
    repo: &'a Repository,
    identities: &'a Arc<Identities>,
    options: &'a DrillOptions,
    progress: &'a dyn Progress,
    expectations: &'a [Expectation],
}

impl DrillContext<'_> {
    async fn body(&self, record: &mut DrillRecord, resources: &mut Resources) -> Result<()> {
        let id = self.repo.resolve(&self.options.selector).await?;
        record.snapshot = Some(id.clone());
        let manifest = self.repo.manifest(&id).await?;
        let private = self.repo.private(&manifest, self.identities)?;
        let consistent_at = manifest.consistent_at().unwrap_or(manifest.started_at);
        record.snapshot_consistent_at = Some(consistent_at);
        record.rpo.seconds = Some((record.started_at - consistent_at).num_milliseconds().max(0) as f64 / 1000.0);
        record.sizes = manifest.sources.iter().map(SourceSize::from).collect();
        record.anomalies = self.shrinkage(&manifest, &private).await;
        tracing::info!(snapshot = %id, "drill started");

        // Not on a blocking thread, which a cancelled drill could outlive (see engine::restore::run_dir).
        let run = RunDir::create(self.options.temp_dir.as_deref(), "drill")?;
        let run_path = run.path().to_path_buf();
        resources.run = Some(run);

        let databases: Vec<&crate::repo::manifest::SourceEntry> =
            manifest.sources.iter().filter(|s| s.kind == SourceKind::Postgres).collect();
        if !databases.is_empty() {
            let scratch_start = Instant::now();
            let major = databases.iter().filter_map(|s| private.postgres(&s.name)).map(|d| d.server_major()).max();
            let scratch = match &self.options.scratch_url {
                Some(url) => DrillScratch::server(url, self.config).await?,
                None => DrillScratch::embedded(major, Some(run_path.clone())).await?,
            };
            record.scratch = scratch.describe();
            record.scratch.start_seconds = scratch_start.elapsed().as_secs_f64();
            record.tools.scratch_postgres = record.scratch.server_version.clone();
            resources.scratch = Some(scratch);
        }
        let files_dir = tempfile::Builder::new()
            .prefix("dr-drill-")
            .tempdir_in(&run_path)
            .map_err(|e| Error::io(format!("creating a directory for the drill in {}", run_path.display()), e))?;
        let files_root = files_dir.path().to_path_buf();
        resources.files_dir = Some(files_dir);

        let mut into = Vec::new();
        for source in &manifest.sources {
            let target = match source.kind {
                SourceKind::Postgres => {
                    let original = private.postgres(&source.name).map_or(source.name.as_str(), |d| d.database.as_str());
                    let scratch = resources
                        .scratch
                        .as_mut()
                        .ok_or_else(|| Error::io("drill", std::io::Error::other("no scratch")))?;
                    let conninfo = scratch.target(&source.name, original);
                    resources.databases.push((source.name.clone(), conninfo.clone()));
                    conninfo.to_keyword_value()
                }
                SourceKind::Files => files_root.join(&source.name).display().to_string(),
            };
            into.push((source.name.clone(), target));
        }
        record.tools.pg_restore = databases
            .iter()
            .filter_map(|s| private.postgres(&s.name))
            .filter_map(|d| tools::parse_major(&d.pg_dump_version))
            .max()
            .and_then(|major| tools::find("pg_restore", tools::Want::AtLeast(major)).ok())
            .map(|tool| tool.version_line());

        // The RTO clock: from here to the end of the checks.
        let clock = Instant::now();
        let restore_options = RestoreOptions {
            path: None,
            selector: Selector::Id(id.to_string()),
            only: Vec::new(),
            into,
            jobs: self.options.jobs,
            force: false,
            temp_dir: self.options.temp_dir.clone(),
            point_in_time: false,
            replay_until: None,
        };
        // The manifest read and decrypted above serves the restore too.
        let restored = engine::restore_snapshot(
            self.config,
            self.repo,
            self.identities.clone(),
            &manifest,
            private.clone(),
            &restore_options,
            self.progress,
        )
        .await?;
        if let Some(scratch) = resources.scratch.as_mut() {
            for source in &restored.sources {
                scratch.created_roles(source.globals.as_ref().map_or(&[][..], |g| &g.created_roles));
            }
        }
        record.phases = sum_phases(&restored);

        let checks_start = Instant::now();
        record.checks = self.checks(&manifest, &private, &restored, resources, &files_root).await;
        record.checks.push(shrinkage_check(&record.anomalies, self.config.drill.max_shrink));
        record.phases.push(Phase { name: PHASE_CHECKS.into(), seconds: checks_start.elapsed().as_secs_f64() });
        // After the checks, which hold the base to its own instant: the stream on top, as `dr restore --to
        // latest` would, inside the RTO (an incident's restore replays too).
        if record.checks.iter().all(|c| c.status != CheckStatus::Fail) {
            self.replay_streams(&manifest, &private, record, resources).await;
        }
        record.rto.seconds = Some(clock.elapsed().as_secs_f64());
        Ok(())
    }

    /// Replays each database source's change stream onto the base just checked, up to the newest stored
    /// change: every change must touch exactly one row. The stream's reach is the RPO an incident would suffer.
    async fn replay_streams(
        &self,
        manifest: &Manifest,
        private: &PrivateManifest,
        record: &mut DrillRecord,
        resources: &Resources,
    ) {
        for (name, conninfo) in &resources.databases {
            let details = private.postgres(name);
            let consistent_at = manifest.source(name).map_or(manifest.started_at, |s| s.consistent_at);
            let check_name = format!("point in time {name}");
            if details.and_then(|d| d.stream.as_ref()).is_none() {
                continue;
            }
            let generations = match crate::stream::generations(self.repo, name).await {
                Ok(generations) => generations,
                Err(e) => {
                    record.checks.push(checks::unreachable(check_name, e.to_string()));
                    continue;
                }
            };
            let planned = match point_in_time::plan_replay(self.repo, name, details, None, &generations).await {
                Ok(Some(planned)) => planned,
                Ok(None) => continue,
                Err(e) => {
                    record.checks.push(checks::unreachable(check_name, e.to_string()));
                    continue;
                }
            };
            let covered_until = planned.1.covered_until;
            let target = crate::pg::DatabaseTarget::new(name, conninfo.clone());
            let replay_start = Instant::now();
            let replayed =
                point_in_time::replay_into(self.repo, self.identities.clone(), name, &target, consistent_at, planned)
                    .await;
            record.phases.push(Phase { name: PHASE_REPLAY.into(), seconds: replay_start.elapsed().as_secs_f64() });
            match replayed {
                Ok(done) => {
                    record.checks.push(Check {
                        name: check_name,
                        status: CheckStatus::Pass,
                        detail: format!(
                            "{} ({}) from {} replayed onto the base, each change on exactly one row; recovered to {}",
                            crate::units::plural(done.transactions as usize, "transaction"),
                            crate::units::plural(done.changes as usize, "change"),
                            crate::units::plural(done.segments, "segment"),
                            done.recovered_to.to_rfc3339()
                        ),
                        problems: Vec::new(),
                    });
                    let stream_rpo = (record.started_at - covered_until).num_milliseconds().max(0) as f64 / 1000.0;
                    record.rpo.seconds = Some(record.rpo.seconds.map_or(stream_rpo, |rpo| rpo.min(stream_rpo)));
                    record.stream = Some(StreamDrill {
                        source: name.clone(),
                        generation: done.generation,
                        covered_until,
                        recovered_to: done.recovered_to,
                        segments: done.segments,
                        transactions: done.transactions,
                        changes: done.changes,
                        replay_seconds: done.seconds,
                    });
                }
                Err(e) => record.checks.push(checks::unreachable(check_name, e.to_string())),
            }
        }
    }

    /// Compares the snapshot with the one before it; a previous snapshot that cannot be read is only logged.
    async fn shrinkage(&self, manifest: &Manifest, private: &PrivateManifest) -> Vec<String> {
        let previous = async {
            let ids = self.repo.snapshot_ids().await?;
            let Some(previous) = ids.iter().rev().find(|id| **id < manifest.id) else {
                return Ok(None);
            };
            let previous = self.repo.manifest(previous).await?;
            let previous_private = self.repo.private(&previous, self.identities).ok();
            Ok::<_, Error>(Some((previous, previous_private)))
        };
        match previous.await {
            Ok(Some((previous, previous_private))) => anomalies::compare(
                &previous,
                previous_private.as_ref(),
                manifest,
                Some(private),
                self.config.drill.max_shrink,
            )
            .iter()
            .map(ToString::to_string)
            .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("could not read the previous snapshot to compare sizes: {e}");
                Vec::new()
            }
        }
    }

    async fn checks(
        &self,
        manifest: &Manifest,
        private: &PrivateManifest,
        restored: &RestoreReport,
        resources: &Resources,
        files_root: &Path,
    ) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut verified: BTreeSet<String> =
            restored.sources.iter().flat_map(|s| s.objects_verified.iter().cloned()).collect();
        let mut object_errors: Vec<String> =
            restored.sources.iter().filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.name))).collect();
        let targets: BTreeMap<&str, &ConnInfo> = resources.databases.iter().map(|(n, c)| (n.as_str(), c)).collect();

        for source in &restored.sources {
            match source.kind {
                SourceKind::Postgres => {
                    checks.push(checks::pg_restore(source));
                    let Some(details) = private.postgres(&source.name) else { continue };
                    let Some(conninfo) = targets.get(source.name.as_str()) else { continue };
                    if !source.ok {
                        checks.push(checks::unreachable(
                            format!("row counts {}", source.name),
                            "not checked: the database was not restored".into(),
                        ));
                        continue;
                    }
                    match connect(conninfo).await {
                        Ok(client) => {
                            checks.push(checks::row_counts(&source.name, &client, &details.tables).await);
                            if let Some(globals) = &details.globals {
                                let owner = details.database_properties.as_ref().map(|p| p.owner.as_str());
                                checks.push(checks::roles(&source.name, &client, globals, owner).await);
                            }
                        }
                        Err(e) => {
                            checks.push(checks::unreachable(format!("row counts {}", source.name), e.to_string()))
                        }
                    }
                }
                SourceKind::Files
                    if manifest.source(&source.name).is_some_and(|s| s.format == Some(StorageFormat::Chunked)) =>
                {
                    checks.push(self.chunked_check(manifest, private, source, files_root).await);
                }
                SourceKind::Files => {
                    let name = format!("files {}", source.name);
                    let Some(index) = manifest.source(&source.name).and_then(|s| s.object(ObjectRole::Index)) else {
                        checks.push(checks::unreachable(name, "the snapshot has no index for this source".into()));
                        continue;
                    };
                    // Read even when the restore failed: the objects check then tells a bad archive from a
                    // bad index.
                    let entries = match self.read_index(&index.key, index.expected()).await {
                        Ok(entries) => {
                            verified.insert(index.key.clone());
                            entries
                        }
                        Err(e) => {
                            object_errors.push(e.to_string());
                            checks.push(checks::unreachable(name, format!("its index could not be read: {e}")));
                            continue;
                        }
                    };
                    if let Some(error) = &source.error {
                        checks.push(checks::unreachable(name, format!("not restored: {error}")));
                        continue;
                    }
                    let root = files_root.join(&source.name);
                    let details = private.files(&source.name).cloned();
                    let source_name = source.name.clone();
                    let check = tokio::task::spawn_blocking(move || {
                        checks::files(&source_name, &root, &entries, details.as_ref())
                    })
                    .await
                    .unwrap_or_else(|e| checks::unreachable(name, e.to_string()));
                    checks.push(check);
                }
            }
        }
        let sources: Vec<String> = restored.sources.iter().map(|s| s.name.clone()).collect();
        checks.insert(0, checks::objects(manifest, &sources, &verified, &object_errors));

        for (user_check, expectation) in self.config.drill.checks.iter().zip(self.expectations) {
            let check = match targets.get(user_check.database.as_str()) {
                None => checks::unreachable(
                    user_check.name.clone(),
                    format!("snapshot {} has no database source {:?}", manifest.id, user_check.database),
                ),
                Some(conninfo) => match connect(conninfo).await {
                    Ok(client) => checks::user(&client, user_check, expectation).await,
                    Err(e) => checks::unreachable(user_check.name.clone(), e.to_string()),
                },
            };
            checks.push(check);
        }
        checks
    }

    /// Checks a restored chunked source against its tree, read again from the packs.
    async fn chunked_check(
        &self,
        manifest: &Manifest,
        private: &PrivateManifest,
        source: &SourceRestore,
        files_root: &Path,
    ) -> Check {
        let name = format!("files {}", source.name);
        if let Some(error) = &source.error {
            return checks::unreachable(name, format!("not restored: {error}"));
        }
        let Some(object) = manifest.source(&source.name).and_then(|s| s.object(ObjectRole::Tree)) else {
            return checks::unreachable(name, "the snapshot has no tree for this source".into());
        };
        let reader = match engine::chunked_reader(self.repo, self.identities).await {
            Ok(reader) => reader,
            Err(e) => return checks::unreachable(name, format!("the repository's chunks cannot be read: {e}")),
        };
        let tree = match reader.tree_object(object).await {
            Ok(tree) => tree,
            Err(e) => return checks::unreachable(name, format!("its tree could not be read: {e}")),
        };
        let entries = reader.tree_entries(&tree, &object.key);
        let root = files_root.join(&source.name);
        let details = private.files(&source.name).cloned();
        let (source_name, keys) = (source.name.clone(), reader.keys.clone());
        tokio::task::spawn_blocking(move || checks::tree(&source_name, &root, entries, &keys, details.as_ref()))
            .await
            .unwrap_or_else(|e| checks::unreachable(name, e.to_string()))
    }

    async fn read_index(&self, key: &str, expected: crate::pipeline::Sealed) -> Result<Vec<IndexEntry>> {
        let key_owned = key.to_string();
        pipeline::download(
            self.repo.store(),
            key,
            self.identities.clone(),
            expected,
            Arc::new(NoProgress),
            move |decoder| {
                let mut entries = Vec::new();
                for (n, line) in BufReader::new(decoder).lines().enumerate() {
                    let line =
                        line.map_err(|e| Error::ObjectCorrupt { key: key_owned.clone(), reason: e.to_string() })?;
                    entries.push(serde_json::from_str(&line).map_err(|e| Error::ObjectCorrupt {
                        key: key_owned.clone(),
                        reason: format!("index line {}: {e}", n + 1),
                    })?);
                }
                Ok(entries)
            },
        )
        .await
    }
}

/// Shrinkage is a warning, not a failure: a big cleanup or a retention job can shrink data legitimately.
fn shrinkage_check(anomalies: &[String], max_shrink: f64) -> Check {
    let limit = format!("{:.0}%", max_shrink * 100.0);
    Check {
        name: "shrinkage".into(),
        status: if anomalies.is_empty() { CheckStatus::Pass } else { CheckStatus::Warn },
        detail: match anomalies.len() {
            0 => format!("no source or table shrank by more than {limit} since the previous snapshot"),
            n => format!("{n} sources or tables shrank by more than {limit} since the previous snapshot"),
        },
        problems: anomalies.to_vec(),
    }
}

/// Phase times summed over the sources, in the order phases first appear.
fn sum_phases(restored: &RestoreReport) -> Vec<Phase> {
    let mut phases: Vec<Phase> = Vec::new();
    for phase in restored.sources.iter().flat_map(|s| s.phases.iter()) {
        match phases.iter_mut().find(|p| p.name == phase.name) {
            Some(existing) => existing.seconds += phase.seconds,
            None => phases.push(phase.clone()),
        }
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_reason_keeps_the_cause_a_child_tool_printed_last() {
        let initdb = "initdb failed (exit status: 1):\n    initdb: could not look up effective user ID 10001: user does \
                      not exist";
        assert_eq!(
            one_line(initdb),
            "initdb failed (exit status: 1): initdb: could not look up effective user ID 10001: user does not exist"
        );
        assert_eq!(one_line("the repository is locked"), "the repository is locked");
        assert_eq!(
            one_line("restored rows differ\n  posts: 3 != 4\n  users: 1 != 2"),
            "restored rows differ (users: 1 != 2)"
        );
    }
}
