//! `dr restore`: put a snapshot's sources back, each into its configured place or an `--into` target.
//!
//! Order of work: resolve the snapshot, decrypt its manifest (a wrong key fails here, before anything is
//! touched), check every target (non-empty ones are refused unless `--force`, all named at once), then
//! restore each source: globals first, then the database (and, for a database it created, the owner,
//! settings and grants recorded at backup: `pg::database`), then files. A source that fails does not stop the
//! others (an incident wants as much back as possible), but the restore as a whole then fails, naming them.
//!
//! A source whose objects are missing, cut short or damaged leaves its target as it was:
//! - every object the restore reads is first checked to be in the store at its recorded size;
//! - a parallel database restore stages the whole archive and checks it before the target is touched; a
//!   streaming one (`--jobs 1`) runs pg_restore in one transaction and kills it at the first bad byte, then
//!   drops the database and the roles that this restore created;
//! - files are extracted into a staging directory and moved into place only once the archive checked out; a
//!   target directory that the restore created is removed again.
//!
//! Nothing decrypted outlives the process: a parallel restore stages the archive in an unlinked file (no name
//! to leave behind; pg_restore gets it as its stdin and opens `/dev/stdin`), and the staging directory of a
//! files restore is listed in this run's [`RunDir`], which the next run sweeps if this one is killed.
//!
//! The per-file index of a files source is not needed to restore, but it is read through after the archive: a
//! damaged one is a warning naming the object (the files themselves come from the authenticated archive).
//! Files stored incomplete (changed while they were backed up) are named in warnings; one that shrank is cut
//! back to the bytes that were read instead of restored with the archive's zero padding.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::chunked::bucket::bucket_error;
use super::chunked::restore::ChunkedReader;
use crate::audit::AuditEntry;
use crate::config::Config;
use crate::crypto::Identities;
use crate::error::{Error, Result};
use crate::files::{Change, DirectoryState, ExtractSummary, Extraction, Incomplete, inspect_directory};
use crate::pg::{
    self, ConnInfo, DatabaseTarget, GlobalsOutcome, PropertiesOutcome, RestoreInput, TargetState, redact_target, tools,
};
use crate::pipeline::{self, ChildWriter};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::drill_record::{PHASE_FETCH, PHASE_FILES, PHASE_PG_RESTORE, PHASE_STREAMED, PHASE_UPLOAD, Phase};
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::manifest::{
    DatabaseProperties, Manifest, ObjectEntry, ObjectRole, PostgresDetails, PrivateManifest, SourceKind, StorageFormat,
};
use crate::repo::snapshot_id::{Selector, SnapshotId};
use crate::run_dir::RunDir;
use crate::units;

mod bucket;
pub(crate) mod point_in_time;
mod staged;

/// Checks `[restore]`.
pub fn validate(config: &crate::config::RestoreConfig) -> Result<()> {
    if config.jobs == Some(0) {
        return Err(Error::ConfigInvalid("[restore] jobs must be at least 1".into()));
    }
    Ok(())
}

/// Globals are a few kilobytes of SQL; anything near this is not pg_dumpall output.
const GLOBALS_LIMIT: usize = 64 << 20;
/// Head-room left on the temp filesystem beyond the archive itself.
const SPACE_MARGIN: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub selector: Selector,
    pub only: Vec<String>,
    /// `NAME=TARGET` redirections: a connection string for a database, a directory for files.
    pub into: Vec<(String, String)>,
    /// pg_restore jobs; 1 streams without a temporary file.
    pub jobs: usize,
    /// Restore into targets that are not empty. A directory is replaced whole: what it held before is deleted,
    /// including files the snapshot's excludes left out. A database gets the snapshot's objects dropped and
    /// recreated (`pg_restore --clean --if-exists`); objects that are not in the snapshot are left as they are,
    /// and so are the database's own owner, settings and grants.
    pub force: bool,
    /// Only this path (relative to a files source's root: a file, or a directory and everything below it) of
    /// every chunked files source restored, with the directories above it; `None` for all.
    pub path: Option<String>,
    /// Where this restore's private run directory is made (`dr-<uid>/restore-*`, see [`RunDir`]) and a
    /// parallel restore stages the archive, unlinked (default: the system temp directory).
    pub temp_dir: Option<PathBuf>,
    /// For a source with a change stream (docs/pitr.md): replay its changes after the base snapshot, up to the
    /// selector's time (`latest`: all that is stored). Off when a snapshot is named by its id.
    pub point_in_time: bool,
    /// With `point_in_time` and a snapshot named by its id (a recovery's restore step): replay up to this time;
    /// `None`: all that is stored. A selector that is a time sets the time itself.
    pub replay_until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub duration_seconds: f64,
    pub sources: Vec<SourceRestore>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRestore {
    pub name: String,
    pub kind: SourceKind,
    /// Where it went (connection strings redacted).
    pub target: String,
    pub duration_seconds: f64,
    pub ok: bool,
    pub error: Option<String>,
    /// What to do about `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_hint: Option<String>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsOutcome>,
    /// The database's owner, settings and grants given to a database this restore created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_properties: Option<PropertiesOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<ExtractSummary>,
    /// Wall time of each phase of this source's restore (see [`crate::repo::drill_record`] for the names).
    pub phases: Vec<Phase>,
    /// Keys of the objects read to their end with size, SHA-256, decryption and decompression checked.
    pub objects_verified: Vec<String>,
    /// What the change stream's replay did, for a point-in-time restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<point_in_time::PointInTime>,
}

/// Where one source goes.
#[derive(Debug, Clone)]
enum Target {
    Database(DatabaseTarget),
    Directory(PathBuf),
    /// A bucket and prefix: a bucket source's own, or `--into NAME=s3://...` (chunked sources only).
    Bucket(crate::store::s3::S3Store),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Database(db) => db.redacted(),
            Target::Directory(dir) => dir.display().to_string(),
            Target::Bucket(store) => crate::store::Store::location(store).to_string(),
        }
    }
}

/// One source's plan: what to read and where to put it.
struct SourcePlan<'m> {
    name: String,
    kind: SourceKind,
    /// How a files source is stored (tar when the manifest does not say).
    format: StorageFormat,
    objects: &'m [ObjectEntry],
    /// The source's instant in the snapshot.
    consistent_at: chrono::DateTime<chrono::Utc>,
    target: Target,
    /// Whether the target must be created (a database) or already holds data (replaced with `--force`).
    state: TargetState,
}

/// Shared inputs of one restore.
struct Restorer<'a> {
    repo: &'a Repository,
    identities: Arc<Identities>,
    progress: &'a dyn Progress,
    options: &'a RestoreOptions,
    private: PrivateManifest,
    /// The configured files sources, for their restore settings.
    config_files: &'a [crate::config::FilesSource],
    /// Where this restore stages, locked while it runs; removed at the end, swept by a later run if killed.
    /// None when nothing is staged (`--jobs 1` databases only), or, for files, when it could not be made.
    run: Option<&'a RunDir>,
    /// The repository's chunk keys and index, loaded by the first chunked source.
    chunked: tokio::sync::OnceCell<ChunkedReader>,
}

pub async fn restore(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let result = restore_sources(config, repo, identities, options, progress).await.and_then(complete);
    let targets =
        options.into.iter().map(|(name, target)| format!("{name} -> {}", redact_target(target))).collect::<Vec<_>>();
    let entry = match &result {
        Ok(report) => AuditEntry::new("restore", Some(report.snapshot.to_string()), None),
        Err(e) => AuditEntry::new("restore", None, Some(e.to_string())),
    };
    let detail = format!(
        "to {}{}",
        options.selector,
        if targets.is_empty() { String::new() } else { format!("; into {}", targets.join(", ")) }
    );
    crate::audit::record(config, entry.detail(detail));
    result
}

/// The report of a restore whose every source came back, or the error naming those that did not.
fn complete(report: RestoreReport) -> Result<RestoreReport> {
    let failed: Vec<String> = report
        .sources
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.name, r.error.as_deref().unwrap_or("failed")))
        .collect();
    if !failed.is_empty() {
        let hints = report.sources.iter().filter_map(|r| r.error_hint.clone()).collect();
        return Err(Error::RestoreIncomplete {
            failed: failed.len(),
            total: report.sources.len(),
            details: failed,
            hints,
        });
    }
    Ok(report)
}

/// [`restore`], except that sources that failed are reported in the result (`ok: false`) rather than as an
/// error: a drill wants to check and record what did come back. Errors before any source started (no such
/// snapshot, wrong key, a refused target) are still errors.
pub async fn restore_sources(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // Shared, so that a prune cannot delete the snapshot while it is read.
    let lock = repo.lock(LockKind::Shared, &LockOptions::from_config(&config.lock, "restore")).await?;
    let report = restore_sources_under_lock(config, repo, identities, options, progress).await;
    if lock.is_lost() {
        // Not a reason to stop half-way through the targets: every object read was checked whole (size,
        // SHA-256), so an object a prune deleted meanwhile fails its source rather than corrupting it.
        tracing::warn!("{}", lock.lost_error());
    }
    let _ = lock.release().await;
    report
}

/// [`restore_sources`] for a caller that holds a repository lock already (a drill).
async fn restore_sources_under_lock(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let id = repo.resolve(&options.selector).await?;
    let manifest = match (&options.selector, options.point_in_time) {
        (Selector::AtOrBefore(time), true) => point_in_time::base_at(repo, id, *time).await?,
        _ => repo.manifest(&id).await?,
    };
    let private = repo.private(&manifest, &identities)?;
    restore_snapshot(config, repo, identities, &manifest, private, options, progress).await
}

/// Restores the sources of a snapshot whose manifest the caller has already read and decrypted (a drill has,
/// for its checks); `options.selector` is not looked at.
pub(crate) async fn restore_snapshot(
    config: &Config,
    repo: &Repository,
    identities: Arc<Identities>,
    manifest: &Manifest,
    private: PrivateManifest,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let id = manifest.id.clone();
    let plans = plan(config, manifest, options).await?;
    tracing::info!(snapshot = %id, sources = plans.len(), "restore started");

    let clock = Instant::now();
    let run = run_dir(&plans, options)?;
    let restorer = Restorer {
        repo,
        identities,
        progress,
        options,
        private,
        config_files: &config.files,
        run: run.as_ref(),
        chunked: tokio::sync::OnceCell::new(),
    };
    let mut reports = Vec::new();
    for plan in &plans {
        reports.push(restorer.source(plan).await);
    }
    Ok(RestoreReport { snapshot: id, duration_seconds: clock.elapsed().as_secs_f64(), sources: reports })
}

/// The restore's private run directory, made (after sweeping dead runs' leftovers) when something is staged:
/// a parallel database restore needs it; a files restore only lists its staging directory there, and goes on
/// without it, with a warning, when the temp directory cannot be used.
fn run_dir(plans: &[SourcePlan<'_>], options: &RestoreOptions) -> Result<Option<RunDir>> {
    let databases = plans.iter().any(|p| matches!(p.target, Target::Database(_)));
    let parallel = databases && options.jobs > 1;
    let files = plans.iter().any(|p| matches!(p.target, Target::Directory(_) | Target::Bucket(_)));
    if !parallel && !files {
        return Ok(None);
    }
    // Not on a blocking thread: a restore cancelled meanwhile would leave the directory made after it ended.
    // It is quick, unless a sweep has a dead drill's cluster to stop (pg_ctl, bounded at 30 s).
    match RunDir::create(options.temp_dir.as_deref(), "restore") {
        Ok(run) => Ok(Some(run)),
        Err(e) if !parallel => {
            tracing::warn!("{e}: if this restore is killed, no later run will remove its staging directories");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Decides every source's target and checks them all before anything is written.
async fn plan<'m>(config: &Config, manifest: &'m Manifest, options: &RestoreOptions) -> Result<Vec<SourcePlan<'m>>> {
    let in_snapshot: Vec<&str> = manifest.sources.iter().map(|s| s.name.as_str()).collect();
    for name in options.only.iter().chain(options.into.iter().map(|(n, _)| n)) {
        if !in_snapshot.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "snapshot {} has no source {name:?} (it has: {})",
                manifest.id,
                in_snapshot.join(", ")
            )));
        }
    }
    let mut plans = Vec::new();
    let mut refusals = Vec::new();
    for source in &manifest.sources {
        if !options.only.is_empty() && !options.only.contains(&source.name) {
            continue;
        }
        let redirect = options.into.iter().rev().find(|(n, _)| n == &source.name).map(|(_, t)| t);
        let target = match source.kind {
            SourceKind::Postgres => {
                let url = redirect
                    .cloned()
                    .or_else(|| config.postgres.iter().find(|p| p.name == source.name).map(|p| p.url.clone()))
                    .ok_or_else(|| not_configured(&source.name))?;
                let conninfo =
                    ConnInfo::parse(&url).map_err(|e| Error::Usage(format!("--into {}: {e}", source.name)))?;
                Target::Database(DatabaseTarget::new(&source.name, conninfo))
            }
            SourceKind::Files => {
                let configured = config.files.iter().find(|f| f.name == source.name);
                let path = redirect
                    .map(PathBuf::from)
                    .or_else(|| configured.map(|f| f.path.clone()))
                    .ok_or_else(|| not_configured(&source.name))?;
                match path.to_str().filter(|p| p.starts_with("s3://")) {
                    Some(url) => Box::pin(bucket_target(&source.name, url, configured)).await?,
                    None => Target::Directory(std::path::absolute(&path).unwrap_or(path)),
                }
            }
        };
        let state = match &target {
            Target::Database(db) => db.inspect().await?,
            Target::Directory(dir) => {
                if dir.exists() && !dir.is_dir() {
                    return Err(Error::NotADirectory {
                        source_name: source.name.clone(),
                        path: dir.clone(),
                        restore: true,
                    });
                }
                let inspect_error = |e: std::io::Error| {
                    crate::files::restore_error(&source.name, format!("inspecting {}: {e}", dir.display()), e)
                };
                match inspect_directory(dir).map_err(inspect_error)? {
                    DirectoryState::Missing => TargetState::Missing,
                    DirectoryState::Empty => TargetState::Empty,
                    DirectoryState::NotEmpty(n) => TargetState::NotEmpty(format!("{n} entries")),
                }
            }
            Target::Bucket(store) => {
                let first = Box::pin(store.first_key()).await.map_err(|e| bucket_error(&source.name, e, true))?;
                match first {
                    Some(key) => TargetState::NotEmpty(format!("it holds objects, {key:?} among them")),
                    None => TargetState::Empty,
                }
            }
        };
        if let TargetState::NotEmpty(what) = &state
            && !options.force
        {
            refusals.push((source.name.clone(), target.describe(), what.clone()));
        }
        let format = source.format.unwrap_or(StorageFormat::Tar);
        if matches!(target, Target::Bucket(_)) && format == StorageFormat::Tar {
            return Err(Error::Usage(format!(
                "{:?} in snapshot {} is a tar archive, which restores into a directory only: pass --into {}=DIRECTORY",
                source.name, manifest.id, source.name
            )));
        }
        if options.path.is_some() && source.kind == SourceKind::Files && format == StorageFormat::Tar {
            return Err(Error::Usage(format!(
                "--path works on chunked files sources only; {:?} in snapshot {} is a tar archive: restore it \
                 whole into another directory with --into {}=DIRECTORY and copy what you need",
                source.name, manifest.id, source.name
            )));
        }
        plans.push(SourcePlan {
            name: source.name.clone(),
            kind: source.kind,
            format,
            objects: &source.objects,
            consistent_at: source.consistent_at,
            target,
            state,
        });
    }
    if let Some((source_name, target, what)) = refusals.first().cloned() {
        let what = if refusals.len() > 1 {
            let others: Vec<String> = refusals[1..].iter().map(|(n, t, _)| format!("{n:?} into {t}")).collect();
            format!("it is not empty ({what}); also not empty: {}", others.join(", "))
        } else {
            format!("it is not empty ({what})")
        };
        return Err(Error::TargetNotEmpty { source_name, target, what });
    }
    Ok(plans)
}

/// The bucket a files source goes into: the configured bucket source's endpoint, region and profile apply to
/// another bucket named with `--into` too.
async fn bucket_target(name: &str, url: &str, configured: Option<&crate::config::FilesSource>) -> Result<Target> {
    let base = configured.filter(|f| f.bucket_url().is_some());
    let source = crate::config::FilesSource {
        name: name.to_string(),
        path: PathBuf::from(url),
        ..base.cloned().unwrap_or_default()
    };
    let options = crate::store::s3::S3Options::try_from(&source).map_err(|e| match e {
        Error::ConfigInvalid(message) => Error::Usage(format!("--into {name}={url}: {message}")),
        other => other,
    })?;
    Ok(Target::Bucket(crate::store::s3::S3Store::new(options).await))
}

fn not_configured(name: &str) -> Error {
    Error::Usage(format!("source {name:?} is in the snapshot but not in the configuration; pass --into {name}=TARGET"))
}

impl Restorer<'_> {
    async fn source(&self, plan: &SourcePlan<'_>) -> SourceRestore {
        let start = Instant::now();
        let mut report = SourceRestore {
            name: plan.name.clone(),
            kind: plan.kind,
            target: plan.target.describe(),
            duration_seconds: 0.0,
            ok: true,
            error: None,
            error_hint: None,
            warnings: Vec::new(),
            globals: None,
            database_properties: None,
            files: None,
            phases: Vec::new(),
            objects_verified: Vec::new(),
            point_in_time: None,
        };
        let result = match &plan.target {
            Target::Database(db) => self.database(plan, db, &mut report).await,
            Target::Directory(dir) => self.directory(plan, dir, &mut report).await,
            Target::Bucket(store) => Box::pin(self.bucket(plan, store, &mut report)).await,
        };
        report.duration_seconds = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => tracing::info!(source = %plan.name, target = %report.target, "restored"),
            Err(e) => {
                tracing::error!(source = %plan.name, target = %report.target, "restore failed: {e}");
                report.ok = false;
                report.error = Some(e.to_string());
                report.error_hint = e.hint();
            }
        }
        report
    }

    fn object(&self, plan: &SourcePlan<'_>, role: ObjectRole) -> Option<ObjectEntry> {
        plan.objects.iter().find(|o| o.role == role).cloned()
    }

    fn missing_object(plan: &SourcePlan<'_>, role: ObjectRole) -> Error {
        Error::ObjectCorrupt {
            key: format!("manifest entry for {}", plan.name),
            reason: format!("it lists no {role:?} object"),
        }
    }

    /// Checks that the objects of `roles` (the ones the restore reads) are in the store at their recorded
    /// sizes: cheap, and it catches a missing or cut-off object before anything is written.
    async fn check_stored(&self, plan: &SourcePlan<'_>, roles: &[ObjectRole]) -> Result<()> {
        for object in plan.objects.iter().filter(|o| roles.contains(&o.role)) {
            match self.repo.store().head(&object.key).await? {
                None => return Err(Error::ObjectMissing { key: object.key.clone() }),
                Some(meta) if meta.size != object.stored_size => {
                    return Err(Error::ObjectCorrupt {
                        key: object.key.clone(),
                        reason: format!("it holds {} bytes, the manifest says {}", meta.size, object.stored_size),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn database(&self, plan: &SourcePlan<'_>, db: &DatabaseTarget, report: &mut SourceRestore) -> Result<()> {
        let details = self.private.postgres(&plan.name);
        let dump =
            self.object(plan, ObjectRole::PgDump).ok_or_else(|| Self::missing_object(plan, ObjectRole::PgDump))?;
        let pg_restore = find_pg_restore(details)?;
        let replay = self.plan_replay(plan, details, report).await?;
        // Everything that can be read and checked is, before the target is touched: a bad object must not
        // leave roles or an empty database behind.
        self.check_stored(plan, &[ObjectRole::PgDump, ObjectRole::Globals]).await?;
        let fetch = Instant::now();
        let globals = match self.object(plan, ObjectRole::Globals) {
            Some(object) => {
                let sql = self.read_text(&object).await?;
                report.objects_verified.push(object.key.clone());
                Some(sql)
            }
            None => None,
        };
        let created = plan.state == TargetState::Missing;
        let parallel = self.options.jobs > 1;
        // Into a database it creates, a parallel restore starts on the schema while the archive is staged
        // (see `staged`); anything else waits for the whole archive to be staged and checked.
        let early = parallel && created;
        let staged = if parallel && !early {
            let staged = self.stage(plan, &dump, None).await?;
            report.objects_verified.push(dump.key.clone());
            Some(staged)
        } else {
            None
        };
        let mut fetch_seconds = fetch.elapsed().as_secs_f64();

        if let Some(sql) = globals {
            let outcome = db.apply_globals(&sql).await?;
            if !outcome.kept_roles.is_empty() {
                tracing::info!(
                    source = %plan.name, roles = %outcome.kept_roles.join(", "),
                    "roles already exist on the target and were kept as they are"
                );
            }
            for failure in &outcome.failures {
                tracing::warn!(source = %plan.name, "a global statement failed: {failure}");
                report.warnings.push(format!("globals: {failure}"));
            }
            report.globals = Some(outcome);
        }
        let created_roles = report.globals.as_ref().map(|g| g.created_roles.clone()).unwrap_or_default();
        if created {
            tracing::info!(source = %plan.name, database = %db.database_name(), "creating the target database");
            if let Err(e) = db.create(details).await {
                undo(plan, db, false, &created_roles).await;
                return Err(e);
            }
        }
        let staged = if early {
            let start = self.early_restore(plan, db, &pg_restore);
            match self.stage(plan, &dump, Some(start)).await {
                Ok(staged) => {
                    report.objects_verified.push(dump.key.clone());
                    fetch_seconds = fetch.elapsed().as_secs_f64();
                    Some(staged)
                }
                Err(e) => {
                    // The schema may be half restored: the database goes, with what dr created for it.
                    undo(plan, db, created, &created_roles).await;
                    return Err(e);
                }
            }
        } else {
            staged
        };
        report.phases.push(Phase { name: PHASE_FETCH.into(), seconds: fetch_seconds });
        let clean = matches!(plan.state, TargetState::NotEmpty(_));
        let pg_restore_start = Instant::now();
        let stderr = match staged {
            // A parallel pg_restore that fails has restored part of the archive: that is left for inspection,
            // and the error says the source failed.
            Some(staged) => {
                let result = self.pg_restore_staged(plan, db, staged, &pg_restore, clean).await;
                let seconds = pg_restore_start.elapsed().as_secs_f64();
                report.phases.push(Phase { name: PHASE_PG_RESTORE.into(), seconds });
                result?
            }
            None => {
                let result = self.stream_into_pg_restore(plan, db, &dump, &pg_restore, clean).await;
                let seconds = pg_restore_start.elapsed().as_secs_f64();
                report.phases.push(Phase { name: PHASE_STREAMED.into(), seconds });
                match result {
                    Ok(stderr) => {
                        report.objects_verified.push(dump.key.clone());
                        stderr
                    }
                    Err(e) => {
                        // One transaction: nothing was restored. What dr created for it goes again too.
                        undo(plan, db, created, &created_roles).await;
                        return Err(e);
                    }
                }
            }
        };
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(source = %plan.name, "pg_restore: {line}");
            report.warnings.push(line.to_string());
        }
        if let Some(properties) = details.and_then(|d| d.database_properties.as_ref()) {
            self.database_properties(plan, db, properties, created, report).await;
        }
        if let Some(replay) = replay {
            self.replay_changes(plan, db, replay, report).await?;
        }
        Ok(())
    }

    /// Gives a database this restore created the snapshot's owner, settings and grants, as
    /// `pg_restore --create` would. A database that existed keeps its own, like a role that exists: it was
    /// set up by someone, perhaps on purpose; a different owner is pointed out. Never fails the restore: the
    /// data is back, and what could not be applied is a warning.
    async fn database_properties(
        &self,
        plan: &SourcePlan<'_>,
        db: &DatabaseTarget,
        properties: &DatabaseProperties,
        created: bool,
        report: &mut SourceRestore,
    ) {
        let mut warnings = Vec::new();
        if created {
            match db.apply_properties(properties).await {
                Ok(outcome) => {
                    warnings.extend(outcome.skipped.iter().cloned());
                    warnings.extend(outcome.failures.iter().map(|f| format!("database properties: {f}")));
                    tracing::info!(
                        source = %plan.name, owner = outcome.owner.as_deref().unwrap_or("?"),
                        statements = outcome.statements_applied, "applied the database's owner, settings and grants"
                    );
                    report.database_properties = Some(outcome);
                }
                Err(e) => warnings.push(format!("the database's owner, settings and grants were not applied: {e}")),
            }
        } else {
            match db.owner().await {
                Ok(Some(owner)) if owner != properties.owner => warnings.push(format!(
                    "the target database existed, so it keeps its owner {owner:?}, settings and grants; in the \
                     snapshot it is owned by {:?} (ALTER DATABASE ... OWNER TO changes it)",
                    properties.owner
                )),
                Ok(_) => {}
                Err(e) => tracing::debug!(source = %plan.name, "could not read the target database's owner: {e}"),
            }
        }
        for warning in warnings {
            tracing::warn!(source = %plan.name, "{warning}");
            report.warnings.push(warning);
        }
    }

    /// `--jobs 1`: the archive flows straight into one pg_restore transaction; no temporary file.
    async fn stream_into_pg_restore(
        &self,
        plan: &SourcePlan<'_>,
        db: &DatabaseTarget,
        dump: &ObjectEntry,
        pg_restore: &tools::Tool,
        clean: bool,
    ) -> Result<String> {
        let command = pg::pg_restore_command(pg_restore, db, RestoreInput::Stream, clean);
        pipeline::download(
            self.repo.store(),
            &dump.key,
            self.identities.clone(),
            dump.expected(),
            self.progress.task(&plan.name, Some(dump.plain_size)),
            move |decoder| {
                let mut child =
                    ChildWriter::spawn(command, "pg_restore")?.with_failure_hint(super::PG_TOOL_FAILED_HINT);
                match io::copy(decoder, &mut child) {
                    Ok(_) => child.finish(),
                    Err(e) => match decoder.take_failure() {
                        // The object is bad: kill pg_restore before it can commit anything.
                        Some(object_error) => {
                            child.kill();
                            Err(object_error)
                        }
                        // pg_restore stopped reading: its own error says why.
                        None => Err(child.finish().err().unwrap_or_else(|| Error::io("feeding pg_restore", e))),
                    },
                }
            },
        )
        .await
    }

    async fn directory(&self, plan: &SourcePlan<'_>, dir: &Path, report: &mut SourceRestore) -> Result<()> {
        if plan.format == StorageFormat::Chunked {
            return self.chunked_directory(plan, dir, report).await;
        }
        let tar = self.object(plan, ObjectRole::Tar).ok_or_else(|| Self::missing_object(plan, ObjectRole::Tar))?;
        self.check_stored(plan, &[ObjectRole::Tar]).await?;
        let external_symlinks =
            self.config_files.iter().find(|f| f.name == plan.name).is_some_and(|f| f.external_symlinks);
        let extraction = Extraction::prepare(&plan.name, dir, external_symlinks)?;
        // Decrypted files land in the staging directory: a later run removes it if this one is killed.
        if let Some(run) = self.run {
            run.note_staging(extraction.staging_dir())?;
        }
        let start = Instant::now();
        let (mut summary, extraction) = pipeline::download(
            self.repo.store(),
            &tar.key,
            self.identities.clone(),
            tar.expected(),
            self.progress.task(&plan.name, Some(tar.plain_size)),
            move |decoder| {
                let summary = extraction.extract(decoder)?;
                // Read to the very end: the object's checks run there, before anything is moved into place.
                io::copy(decoder, &mut io::sink()).map_err(|e| Error::io("reading the archive", e))?;
                Ok((summary, extraction))
            },
        )
        .await?;
        report.objects_verified.push(tar.key.clone());
        // Files that changed while they were backed up are named; the zero padding of one that shrank is not
        // data, and is cut off before the tree is moved into place.
        let incomplete = self.private.files(&plan.name).map(|f| f.incomplete.as_slice()).unwrap_or_default();
        for file in incomplete {
            if file.incomplete.change == Change::Shrank {
                extraction.truncate_staged(&file.relative_path(), file.incomplete.read)?;
                summary.bytes = summary.bytes.saturating_sub(file.incomplete.padding());
            }
            let warning = format!("{} {}", file.path, restored_as(&file.incomplete));
            tracing::warn!(source = %plan.name, "{warning}");
            report.warnings.push(warning);
        }
        match self.check_index(plan).await {
            Ok(key) => report.objects_verified.push(key),
            Err(problem) => {
                tracing::warn!(source = %plan.name, "{problem}");
                report.warnings.push(problem.to_string());
            }
        }
        let replace = matches!(plan.state, TargetState::NotEmpty(_));
        extraction.commit(replace)?;
        report.phases.push(Phase { name: PHASE_FILES.into(), seconds: start.elapsed().as_secs_f64() });
        report.files = Some(summary);
        Ok(())
    }

    /// A chunked files source: its tree out of the packs (see [`super::chunked::restore`]).
    async fn chunked_directory(&self, plan: &SourcePlan<'_>, dir: &Path, report: &mut SourceRestore) -> Result<()> {
        let tree = self.object(plan, ObjectRole::Tree).ok_or_else(|| Self::missing_object(plan, ObjectRole::Tree))?;
        self.check_stored(plan, &[ObjectRole::Tree]).await?;
        let reader =
            self.chunked.get_or_try_init(|| super::chunked::chunked_reader(self.repo, &self.identities)).await?;
        let external_symlinks =
            self.config_files.iter().find(|f| f.name == plan.name).is_some_and(|f| f.external_symlinks);
        let start = Instant::now();
        let bytes = self.private.files(&plan.name).map(|f| f.bytes);
        let replace = matches!(plan.state, TargetState::NotEmpty(_));
        let summary = reader
            .restore(
                &plan.name,
                &tree,
                dir,
                external_symlinks,
                self.options.path.as_deref(),
                replace,
                self.run,
                self.progress.task(&plan.name, bytes),
            )
            .await?;
        report.objects_verified.push(tree.key.clone());
        let incomplete = self.private.files(&plan.name).map(|f| f.incomplete.as_slice()).unwrap_or_default();
        for file in incomplete {
            let warning = format!("{} {}", file.path, restored_as(&file.incomplete));
            tracing::warn!(source = %plan.name, "{warning}");
            report.warnings.push(warning);
        }
        for warning in &summary.warnings {
            tracing::warn!(source = %plan.name, "{warning}");
        }
        report.warnings.extend(summary.warnings.iter().cloned());
        report.phases.push(Phase { name: PHASE_FILES.into(), seconds: start.elapsed().as_secs_f64() });
        report.files = Some(ExtractSummary {
            files: summary.files,
            directories: summary.directories,
            symlinks: summary.symlinks,
            bytes: summary.bytes,
        });
        Ok(())
    }

    /// A chunked source into a bucket: the tree restored whole into the run directory, then uploaded (see
    /// [`bucket`]).
    async fn bucket(
        &self,
        plan: &SourcePlan<'_>,
        store: &crate::store::s3::S3Store,
        report: &mut SourceRestore,
    ) -> Result<()> {
        let run = self.run.ok_or_else(|| {
            Error::io(
                "restoring into a bucket",
                io::Error::other("no run directory to stage the objects in (see the warning above)"),
            )
        })?;
        let staged = run.path().join(format!("bucket-{}", plan.name));
        self.chunked_directory(plan, &staged, report).await?;
        let tree = self.object(plan, ObjectRole::Tree).ok_or_else(|| Self::missing_object(plan, ObjectRole::Tree))?;
        let reader =
            self.chunked.get_or_try_init(|| super::chunked::chunked_reader(self.repo, &self.identities)).await?;
        let tree_object = reader.tree_object(&tree).await?;
        let configured = self.config_files.iter().find(|f| f.name == plan.name);
        let start = Instant::now();
        let upload = bucket::BucketUpload {
            source_name: &plan.name,
            store,
            staged: &staged,
            concurrency: configured.and_then(|f| f.concurrency).unwrap_or(super::chunked::bucket::DEFAULT_CONCURRENCY),
            replace: matches!(plan.state, TargetState::NotEmpty(_)),
            path: self.options.path.as_deref(),
        };
        let bytes = self.private.files(&plan.name).map(|f| f.bytes);
        let uploaded = upload.run(reader, &tree_object, &tree.key, self.progress.task(&plan.name, bytes)).await?;
        report.warnings.extend(uploaded.left_out.iter().map(|what| format!("left out {what}")));
        if uploaded.deleted > 0 {
            report.warnings.push(format!(
                "{} deleted from {}: the snapshot does not hold them (--force replaces the prefix whole)",
                units::plural(uploaded.deleted as usize, "object"),
                crate::store::Store::location(store)
            ));
        }
        report.phases.push(Phase { name: PHASE_UPLOAD.into(), seconds: start.elapsed().as_secs_f64() });
        Ok(())
    }

    /// Reads the source's index through (its key when it is whole, else a warning naming it). A restore does
    /// not need it, as the archive is authenticated on its own, but drills and people rely on it, so a damaged
    /// one is said rather than discovered later.
    async fn check_index(&self, plan: &SourcePlan<'_>) -> std::result::Result<String, IndexProblem> {
        let index =
            self.object(plan, ObjectRole::Index).ok_or_else(|| IndexProblem::NotListed(plan.name.to_string()))?;
        pipeline::download(
            self.repo.store(),
            &index.key,
            self.identities.clone(),
            index.expected(),
            Arc::new(crate::progress::NoProgress),
            |decoder| super::verify::check_content(ObjectRole::Index, decoder, None),
        )
        .await
        .map(|()| index.key.clone())
        .map_err(IndexProblem::Unreadable)
    }

    /// Reads a small text object (globals SQL) whole.
    async fn read_text(&self, object: &ObjectEntry) -> Result<String> {
        if object.plain_size > GLOBALS_LIMIT as u64 {
            return Err(Error::ObjectCorrupt {
                key: object.key.clone(),
                reason: format!("{} is too large for roles and tablespaces", units::bytes(object.plain_size)),
            });
        }
        let key = object.key.clone();
        pipeline::download(
            self.repo.store(),
            &object.key,
            self.identities.clone(),
            object.expected(),
            Arc::new(crate::progress::NoProgress),
            move |decoder| {
                let mut text = String::new();
                io::Read::read_to_string(decoder, &mut text)
                    .map_err(|e| Error::ObjectCorrupt { key, reason: e.to_string() })?;
                Ok(text)
            },
        )
        .await
    }
}

/// Why a restored files source's index could not be read through: a warning, as the archive is checked on its own.
#[derive(Debug, thiserror::Error)]
enum IndexProblem {
    #[error("the snapshot lists no index object for {0:?}")]
    NotListed(String),
    #[error(
        "{0}; the files were restored from their archive, which is checked on its own (run `dr verify` to see \
         the damage)"
    )]
    Unreadable(#[source] Error),
}

/// What a restore made of a file that changed while it was backed up.
fn restored_as(incomplete: &Incomplete) -> String {
    match incomplete.change {
        Change::Shrank => format!(
            "shrank while it was backed up: restored as the {} bytes read (the {} zero bytes the archive padded it \
             with are left out)",
            incomplete.read,
            incomplete.padding()
        ),
        Change::Grew => format!(
            "grew while it was backed up: restored with only the {} bytes it had when the backup opened it",
            incomplete.read
        ),
        Change::Modified => {
            "was modified while it was backed up: restored as read, its bytes may mix old and new".to_string()
        }
    }
}

/// Takes back what a database restore set up before it failed: the database it created (when `drop_database`;
/// with the sessions of a pg_restore that may still be on it) and the roles its globals created. Best effort:
/// what cannot be undone is logged.
async fn undo(plan: &SourcePlan<'_>, db: &DatabaseTarget, drop_database: bool, roles: &[String]) {
    if drop_database && let Err(e) = db.drop_database_force().await {
        tracing::warn!(source = %plan.name, "could not drop the target database this restore created: {e}");
    }
    if !roles.is_empty() {
        tracing::info!(source = %plan.name, roles = %roles.join(", "), "dropping the roles this restore created");
        if let Err(e) = db.drop_roles(roles).await {
            tracing::warn!(source = %plan.name, "could not drop the roles this restore created: {e}");
        }
    }
}

/// pg_restore must be at least as new as the pg_dump that wrote the archive.
fn find_pg_restore(details: Option<&PostgresDetails>) -> Result<tools::Tool> {
    let wanted =
        details.and_then(|d| tools::parse_major(&d.pg_dump_version)).map_or(tools::Want::Newest, tools::Want::AtLeast);
    tools::find("pg_restore", wanted)
}

/// Refuses to start a staged restore that would fill the disk half-way through.
fn check_free_space(dir: &Path, need: u64) -> Result<()> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io(format!("checking free space in {}", dir.display()), e.into()))?;
    let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if available < need + SPACE_MARGIN {
        return Err(Error::NotEnoughSpace {
            dir: dir.to_path_buf(),
            need: units::bytes(need + SPACE_MARGIN),
            have: units::bytes(available),
        });
    }
    Ok(())
}
