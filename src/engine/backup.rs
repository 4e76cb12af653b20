//! `dr backup`: one snapshot of every selected source, committed by its manifest.
//!
//! Sources are backed up one after another, so memory stays within one pipeline's budget. Any failure stops
//! the backup before the manifest is written: the snapshot never becomes visible, and its objects are
//! deleted on the way out.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::chunked::backup::{ChunkedRun, ChunkedSummary};
use super::chunked::bucket::{self, BucketOrigin};
use super::chunked::origin::{DirectoryOrigin, Origin};
use crate::audit::AuditEntry;
use crate::config::{Config, FilesFormat, FilesSource, PostgresSource};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::files::{self, CacheWriter, Excludes, IncompleteFile};
use crate::pg::{self, ConnInfo, ExportedSnapshot, tools};
use crate::pipeline::{self, ChildReader, Compression, child_failure};
use crate::progress::{Progress, ProgressTask};
use crate::repo::Repository;
use crate::repo::lock::{LockKind, LockOptions};
use crate::repo::manifest::{
    ChunkedSizes, FilesDetails, GlobalsDetails, Manifest, ObjectEntry, ObjectRole, PostgresDetails, PrivateManifest,
    SourceDetails, SourceEntry, SourceKind, StorageFormat, StreamBase,
};
use crate::repo::snapshot_id::SnapshotId;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Back up only these sources (all when empty).
    pub only: Vec<String>,
    /// Cancelling it stops the backup: nothing is committed and the objects written so far are deleted. Losing
    /// the repository lock does the same.
    pub cancel: CancellationToken,
}

/// What a backup did, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// When the snapshot's data was consistent: its oldest source's `consistent_at`.
    pub recovery_point: DateTime<Utc>,
    pub duration_seconds: f64,
    pub stored_size: u64,
    pub sources: Vec<SourceReport>,
    /// Sources that shrank by more than `[drill] max_shrink` since the previous snapshot.
    pub anomalies: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: SourceKind,
    pub plain_size: u64,
    pub stored_size: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
    /// Files that changed while they were read: the snapshot holds them as far as they were read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete_files: Vec<IncompleteFile>,
    /// A chunked source's dedup: what it stored, and how much it could take from earlier backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunked: Option<ChunkedReport>,
}

/// What a chunked source's backup reused and added.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChunkedReport {
    /// Files the cache vouched for: not read at all.
    pub files_unchanged: u64,
    /// Chunks (and their bytes, compressed and encrypted) that the repository did not hold yet.
    pub chunks_added: u64,
    pub bytes_added: u64,
    /// Pack objects written.
    pub packs_written: u64,
}

impl BackupReport {
    /// Every file stored incomplete, as `source: path what happened`: a committed snapshot that is not whole
    /// (`dr backup` exits with 3, like restic's "snapshot taken, some files could not be read").
    pub fn incomplete_files(&self) -> Vec<String> {
        self.sources
            .iter()
            .flat_map(|s| s.incomplete_files.iter().map(move |f| format!("{}: {}", s.name, f.describe())))
            .collect()
    }
}

/// Everything one backup run shares.
struct BackupContext<'a> {
    repo: &'a Repository,
    recipients: Arc<Recipients>,
    compression: Compression,
    progress: &'a dyn Progress,
    snapshot: SnapshotId,
    /// The repository's chunks, when a selected files source is chunked.
    chunked: Option<ChunkedRun>,
}

/// What one source contributed to the snapshot.
struct SourceOutcome {
    entry: SourceEntry,
    details: SourceDetails,
    warnings: Vec<String>,
    incomplete_files: Vec<IncompleteFile>,
    /// A chunked source's next file cache, put in place once the snapshot is committed.
    cache: Option<CacheWriter>,
    chunked: Option<ChunkedReport>,
}

/// Backs up every selected source into one snapshot, and records the attempt's outcome in the repository
/// (`attempts/`, see [`super::attempt`]) whatever it is.
pub async fn backup(
    config: &Config,
    repo: &Repository,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    // Parsed once: the attempt record is sealed to the same recipients as the snapshot.
    let recipients = Recipients::parse(&config.encryption.recipients).map(Arc::new);
    let attempt =
        super::attempt::AttemptInProgress::begin(recipients.as_ref().ok().cloned(), repo, &options.only).await;
    let outcome = match recipients {
        Ok(recipients) => take_snapshot(config, repo, options, progress, recipients).await,
        Err(e) => Err(e),
    };
    attempt.finish(repo, &outcome).await;
    outcome
}

async fn take_snapshot(
    config: &Config,
    repo: &Repository,
    options: &BackupOptions,
    progress: &dyn Progress,
    recipients: Arc<Recipients>,
) -> Result<BackupReport> {
    check_only(config, &options.only)?;
    let selected = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    if config.postgres.is_empty() && config.files.is_empty() {
        return Err(Error::ConfigInvalid("no sources configured: add [[postgres]] or [[files]] sections".to_string()));
    }
    let any_chunked = config.files.iter().any(|f| selected(&f.name) && f.format == FilesFormat::Chunked);
    // Before the shared lock: a repository without a dedup key gets one under the exclusive lock.
    let chunk_keys = match any_chunked {
        true => Some(Arc::new(super::chunked::keys_for_backup(config, repo, &recipients).await?)),
        false => None,
    };

    // Shared: concurrent backups write apart (docs/locks.md); a prune's exclusive lock keeps it out.
    let lock_options = LockOptions::from_config(&config.lock, "backup");
    let Some(lock) = options.cancel.run_until_cancelled(repo.lock(LockKind::Shared, &lock_options)).await else {
        return Err(Error::Cancelled);
    };
    let lock = lock?;
    let started_at = Utc::now();
    let clock = Instant::now();
    let snapshot = SnapshotId::new(started_at);
    let chunked = match chunk_keys {
        Some(keys) => match super::chunked::load_index(repo, &keys, None).await {
            Ok(index) => Some(ChunkedRun {
                pack_size: config.chunking.pack_size.map_or(keys.chunking.pack_size, |s| s.as_u64()),
                store: repo.shared_store(),
                recipients: recipients.clone(),
                level: config.compression.level,
                keys,
                index: Arc::new(index),
                added: Arc::default(),
                written_by: format!("backup {snapshot}"),
                cache_dir: config.cache.dir.clone().unwrap_or_else(files::default_cache_dir),
                repository_id: repo.id().to_string(),
                cancel: options.cancel.clone(),
            }),
            Err(e) => {
                let _ = lock.release().await;
                return Err(e);
            }
        },
        None => None,
    };
    let run = BackupContext {
        repo,
        recipients,
        compression: Compression::from_config(&config.compression),
        progress,
        snapshot,
        chunked,
    };

    // Only the sources' part can be cancelled: the commit below is one small write that must not be cut off
    // half-way through while the cleanup runs.
    let sources = async {
        preflight(config, &selected).await?;
        tracing::info!(snapshot = %run.snapshot, repository = %repo.location(), "backup started");
        let mut outcomes = Vec::new();
        let mut reports = Vec::new();
        for source in config.postgres.iter().filter(|s| selected(&s.name)) {
            let start = Instant::now();
            let outcome = run.postgres(source).await?;
            reports.push(report(&outcome, start.elapsed()));
            outcomes.push(outcome);
        }
        for source in config.files.iter().filter(|s| selected(&s.name)) {
            let start = Instant::now();
            let outcome = run.files(source).await?;
            reports.push(report(&outcome, start.elapsed()));
            outcomes.push(outcome);
        }
        Ok::<_, Error>((outcomes, reports))
    };
    let sources = tokio::select! {
        sources = lock.while_held(sources) => sources,
        () = options.cancel.cancelled() => Err(Error::Cancelled),
    };
    // A lock lost after the sources finished still stops the commit: a prune may be running by now.
    let result = match sources.and_then(|sources| lock.check().map(|()| sources)) {
        Ok((mut outcomes, reports)) => {
            let caches: Vec<CacheWriter> = outcomes.iter_mut().filter_map(|o| o.cache.take()).collect();
            let committed = run.commit(started_at, outcomes).await.map(|manifest| (manifest, reports));
            if committed.is_ok() {
                // Only now: a backup that failed must not leave a cache that vouches for chunks it never stored.
                for cache in caches {
                    if let Err(e) = cache.commit() {
                        tracing::warn!("could not save the file cache: {e}; the next backup reads every file again");
                    }
                }
            }
            committed
        }
        Err(e) => Err(e),
    };

    let outcome = match result {
        Ok((manifest, sources)) => {
            let elapsed = clock.elapsed();
            tracing::info!(snapshot = %manifest.id, seconds = elapsed.as_secs_f64(), "backup committed");
            let anomalies = shrinkage(repo, &manifest, config.drill.max_shrink).await;
            Ok(BackupReport {
                snapshot: manifest.id.clone(),
                started_at: manifest.started_at,
                finished_at: manifest.finished_at,
                recovery_point: manifest.consistent_at().unwrap_or(manifest.started_at),
                duration_seconds: elapsed.as_secs_f64(),
                stored_size: manifest.stored_size(),
                sources,
                anomalies,
            })
        }
        Err(e) => {
            repo.discard_uncommitted(&run.snapshot).await;
            Err(e)
        }
    };
    // A failed release is logged; the lock then expires by itself.
    let _ = lock.release().await;
    let entry = match &outcome {
        Ok(report) => {
            let entry = AuditEntry::new("backup", Some(report.snapshot.to_string()), None);
            // Committed but not whole (`dr backup` exits with 3): the count only, the paths stay encrypted.
            match report.incomplete_files().len() {
                0 => entry,
                n => {
                    entry.detail(format!("{} stored incomplete (changed while read)", crate::units::plural(n, "file")))
                }
            }
        }
        Err(e) => AuditEntry::new("backup", None, Some(e.to_string()))
            .detail(format!("snapshot {} not committed", run.snapshot)),
    };
    crate::audit::record(config, entry);
    outcome
}

/// What can be checked before anything is written: every selected database answers and lets dr in, and every
/// selected files source's root is a directory. A backup that cannot run fails here, naming the source, before
/// it says that it started (and before a large source is dumped only for a later one to fail).
async fn preflight(config: &Config, selected: &(dyn Fn(&str) -> bool + Sync)) -> Result<()> {
    for source in config.postgres.iter().filter(|s| selected(&s.name)) {
        let conninfo = crate::pg::source_conninfo(source)?;
        pg::connect(&conninfo).await.map_err(|e| e.into_error(&source.name, conninfo.redacted()))?;
    }
    for source in config.files.iter().filter(|s| selected(&s.name)) {
        match source.bucket_url() {
            Some(_) => {
                bucket::check_access(source).await?;
            }
            None => files::check_root(&source.name, &source.path)?,
        }
    }
    Ok(())
}

fn check_only(config: &Config, only: &[String]) -> Result<()> {
    let names = config.source_names();
    for name in only {
        if !names.contains(&name.as_str()) {
            return Err(Error::Usage(format!("--only {name:?}: no such source (configured: {})", names.join(", "))));
        }
    }
    Ok(())
}

fn report(outcome: &SourceOutcome, elapsed: Duration) -> SourceReport {
    SourceReport {
        name: outcome.entry.name.clone(),
        kind: outcome.entry.kind,
        plain_size: outcome.entry.plain_size(),
        stored_size: outcome.entry.stored_size(),
        duration_seconds: elapsed.as_secs_f64(),
        warnings: outcome.warnings.clone(),
        incomplete_files: outcome.incomplete_files.clone(),
        chunked: outcome.chunked,
    }
}

/// Maps an error from a child's stream to the child's own failure when that is what it was.
fn stream_error(program: &str, e: io::Error) -> Error {
    match child_failure(&e) {
        Some(failure) => failure.clone().into(),
        None => Error::io(format!("streaming {program} output"), e),
    }
}

/// Logs what a successful child printed on stderr: PostgreSQL's tools warn there.
fn child_warnings(source: &str, program: &str, stderr: &str) -> Vec<String> {
    let warnings: Vec<String> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    for warning in &warnings {
        tracing::warn!(source, program, "{warning}");
    }
    warnings
}

impl BackupContext<'_> {
    /// Writes the manifest: from here on the snapshot exists.
    async fn commit(&self, started_at: DateTime<Utc>, outcomes: Vec<SourceOutcome>) -> Result<Manifest> {
        let private = PrivateManifest { sources: outcomes.iter().map(|o| o.details.clone()).collect() };
        let sources: Vec<SourceEntry> = outcomes.into_iter().map(|o| o.entry).collect();
        let manifest = Manifest {
            format: crate::repo::manifest::format_for(&sources),
            id: self.snapshot.clone(),
            started_at,
            finished_at: Utc::now(),
            hostname: crate::host::hostname(),
            dr_version: env!("CARGO_PKG_VERSION").to_string(),
            sources,
            private: Repository::seal_private(&self.recipients, &private)?,
        };
        self.repo.commit(&manifest).await?;
        Ok(manifest)
    }

    fn key(&self, source: &str, role: ObjectRole) -> String {
        Repository::object_key(&self.snapshot, source, role)
    }

    async fn postgres(&self, source: &PostgresSource) -> Result<SourceOutcome> {
        let conninfo = crate::pg::source_conninfo(source)?;
        // The newest stream generation, whose slot must exist before the snapshot for this dump to be its base.
        let generation =
            if source.continuous { crate::stream::generations(self.repo, &source.name).await?.pop() } else { None };
        let slot = generation.as_ref().map(|g| (g.slot.as_str(), g.system_identifier.as_str()));
        let exported = ExportedSnapshot::open(&conninfo, &source.name, slot).await?;
        let stream = match (generation, exported.stream_snapshot.clone()) {
            (Some(generation), Some(snapshot)) => Some(StreamBase {
                generation: generation.generation,
                snapshot,
                schema: exported.stream_schema.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        let mut warnings = Vec::new();
        if source.continuous && stream.is_none() {
            let warning = "no change stream is running for this continuous source (its slot is missing or lost): \
                           this snapshot is not a base for point-in-time restore; start `dr serve` or \
                           `dr stream run`, then back up again";
            tracing::warn!(source = %source.name, "{warning}");
            warnings.push(warning.to_string());
        }
        let pg_dump = tools::find("pg_dump", tools::Want::AtLeast(exported.facts.server_major()))?;
        tracing::info!(
            source = %source.name, database = %conninfo.redacted(), server = %exported.facts.server_version,
            pg_dump = %pg_dump.path.display(), "dumping database"
        );
        let command = pg::pg_dump_command(&pg_dump, &conninfo, &exported.name);
        let key = self.key(&source.name, ObjectRole::PgDump);
        let estimate = exported.estimated_dump_size().await;
        let task = self.progress.estimated_task(&source.name, estimate);
        let dump = pipeline::upload(
            self.repo.store(),
            &key,
            &self.recipients,
            self.compression,
            task.clone(),
            move |writer| {
                let mut child = ChildReader::spawn(command, "pg_dump")?.with_failure_hint(super::PG_TOOL_FAILED_HINT);
                io::copy(&mut child, writer).map_err(|e| stream_error("pg_dump", e))?;
                Ok(child.warnings().to_string())
            },
        );
        // The counts run in the same snapshot while pg_dump streams.
        let (dump, tables) = tokio::join!(dump, exported.count_rows());
        let roles = if source.globals {
            Some((exported.roles().await, exported.can_read_role_passwords().await))
        } else {
            None
        };
        let database_properties = exported.database_properties().await;
        let facts = exported.facts.clone();
        exported.release().await;
        // A count that fails aborts the exporting transaction, and a pg_dump that had not imported the snapshot
        // yet then fails with "could not import the requested snapshot": the count's error is the cause.
        let tables = tables?;
        let (stderr, sealed) = dump?;
        let database_properties = database_properties?;
        task.finish(&format!("{} tables", tables.len()));
        warnings.extend(child_warnings(&source.name, "pg_dump", &stderr));
        let mut objects = vec![ObjectEntry::new(key, ObjectRole::PgDump, sealed)];

        let globals = match roles {
            Some((roles, role_passwords)) => {
                let role_passwords = role_passwords?;
                let (entry, mut globals_warnings) =
                    self.globals(source, &conninfo, facts.server_major(), role_passwords).await?;
                objects.push(entry);
                warnings.append(&mut globals_warnings);
                Some(GlobalsDetails { role_passwords, roles: roles? })
            }
            None => None,
        };
        Ok(SourceOutcome {
            entry: SourceEntry {
                format: None,
                chunked: None,
                name: source.name.clone(),
                kind: SourceKind::Postgres,
                consistent_at: facts.consistent_at,
                objects,
                incomplete_files: 0,
            },
            details: SourceDetails::Postgres(PostgresDetails {
                name: source.name.clone(),
                database: facts.database,
                server_version: facts.server_version,
                server_version_num: facts.server_version_num,
                encoding: facts.encoding,
                collate: facts.collate,
                ctype: facts.ctype,
                pg_dump_version: pg_dump.version_line(),
                tables,
                globals,
                database_properties: Some(Box::new(database_properties)),
                stream,
            }),
            warnings,
            incomplete_files: Vec::new(),
            cache: None,
            chunked: None,
        })
    }

    /// `pg_dumpall --globals-only`, with the roles' password hashes when the role may read them (asked in the
    /// snapshot's transaction), else without (`--no-role-passwords`), saying so.
    async fn globals(
        &self,
        source: &PostgresSource,
        conninfo: &ConnInfo,
        server_major: u32,
        with_passwords: bool,
    ) -> Result<(ObjectEntry, Vec<String>)> {
        let pg_dumpall = tools::find("pg_dumpall", tools::Want::AtLeast(server_major))?;
        let key = self.key(&source.name, ObjectRole::Globals);
        let mut warnings = Vec::new();
        if !with_passwords {
            let warning = "the role cannot read password hashes (not a superuser); roles were dumped without \
                           passwords (--no-role-passwords): set them again after a restore";
            tracing::warn!(source = %source.name, "{warning}");
            warnings.push(warning.to_string());
        }
        let command = pg::pg_dumpall_command(&pg_dumpall, conninfo, with_passwords);
        let (stderr, sealed) = pipeline::upload(
            self.repo.store(),
            &key,
            &self.recipients,
            self.compression,
            self.progress.task(&format!("{} globals", source.name), None),
            move |writer| {
                let mut child =
                    ChildReader::spawn(command, "pg_dumpall")?.with_failure_hint(super::PG_DUMPALL_FAILED_HINT);
                io::copy(&mut child, writer).map_err(|e| stream_error("pg_dumpall", e))?;
                Ok(child.warnings().to_string())
            },
        )
        .await?;
        warnings.extend(child_warnings(&source.name, "pg_dumpall", &stderr));
        Ok((ObjectEntry::new(key, ObjectRole::Globals, sealed), warnings))
    }

    async fn files(&self, source: &FilesSource) -> Result<SourceOutcome> {
        if source.format == FilesFormat::Chunked {
            return self.chunked_files(source).await;
        }
        let excludes = Excludes::new(&source.exclude)
            .map_err(|e| Error::ConfigInvalid(format!("files source {:?}: {e}", source.name)))?;
        let consistent_at = Utc::now();
        tracing::info!(source = %source.name, path = %source.path.display(), "archiving files");
        let tar_key = self.key(&source.name, ObjectRole::Tar);
        let index_key = self.key(&source.name, ObjectRole::Index);
        let task = self.progress.estimated_task(&source.name, None);
        let scan = files::scan_size_for_progress(&source.path, &excludes, task.clone());
        let store = self.repo.store();
        let (mut tar, tar_upload) =
            pipeline::begin_upload(store, &tar_key, &self.recipients, self.compression, task.clone()).await?;
        let index_compression = Compression { level: self.compression.level, threads: 1 };
        let (mut index, index_upload) = pipeline::begin_upload(
            store,
            &index_key,
            &self.recipients,
            index_compression,
            Arc::new(crate::progress::NoProgress),
        )
        .await?;
        let name = source.name.clone();
        let root = source.path.clone();
        let location = store.location().to_string();
        let (tar_key_c, index_key_c) = (tar_key.clone(), index_key.clone());
        let produced = tokio::task::spawn_blocking(move || {
            let summary = files::write_archive(&name, &root, &excludes, &mut tar, &mut index)?;
            let sealed_tar = tar.finish().map_err(|e| crate::store::store_error(&location, "write", &tar_key_c, e))?;
            let sealed_index =
                index.finish().map_err(|e| crate::store::store_error(&location, "write", &index_key_c, e))?;
            Ok((summary, sealed_tar, sealed_index))
        })
        .await
        .map_err(|e| Error::io("archiving files", io::Error::other(e)))
        .and_then(|r| r);
        scan.stop();
        let (summary, sealed_tar, sealed_index) = pipeline::settle(produced, vec![tar_upload, index_upload]).await?;
        task.finish(&format!("{} files", summary.files));
        let warnings = files_warnings(source, &summary.skipped, &summary.external_symlinks, &summary.incomplete);
        Ok(SourceOutcome {
            entry: SourceEntry {
                format: None,
                chunked: None,
                name: source.name.clone(),
                kind: SourceKind::Files,
                consistent_at,
                objects: vec![
                    ObjectEntry::new(tar_key, ObjectRole::Tar, sealed_tar),
                    ObjectEntry::new(index_key, ObjectRole::Index, sealed_index),
                ],
                incomplete_files: summary.incomplete.len() as u64,
            },
            details: SourceDetails::Files(FilesDetails {
                name: source.name.clone(),
                root: source.path.display().to_string(),
                files: summary.files,
                directories: summary.directories,
                symlinks: summary.symlinks,
                bytes: summary.bytes,
                skipped: summary.skipped,
                incomplete: summary.incomplete.clone(),
                replaced: Vec::new(),
            }),
            warnings,
            incomplete_files: summary.incomplete,
            cache: None,
            chunked: None,
        })
    }

    /// A chunked files source: new chunks into packs, the tree into the snapshot (see [`super::chunked::backup`]).
    async fn chunked_files(&self, source: &FilesSource) -> Result<SourceOutcome> {
        let Some(run) = self.chunked.clone() else {
            return Err(Error::io("backing up files", io::Error::other("the chunk index was not loaded")));
        };
        let excludes = Excludes::new(&source.exclude)
            .map_err(|e| Error::ConfigInvalid(format!("files source {:?}: {e}", source.name)))?;
        let consistent_at = Utc::now();
        tracing::info!(source = %source.name, path = %source.path.display(), "backing up files (chunked)");
        let (summary, task) = if source.bucket_url().is_some() {
            Box::pin(self.bucket_files(run, source, excludes)).await?
        } else {
            let task = self.progress.estimated_task(&source.name, None);
            let scan = files::scan_size_for_progress(&source.path, &excludes, task.clone());
            let origin = DirectoryOrigin { name: source.name.clone(), root: source.path.clone(), excludes };
            let summary = chunk_source(run, source.name.clone(), origin, task.clone()).await;
            scan.stop();
            (summary?, task)
        };
        let key = self.key(&source.name, ObjectRole::Tree);
        let tree_json = serde_json::to_vec(&summary.tree).map_err(|e| Error::io("encoding the tree", e.into()))?;
        let tree_compression = Compression { level: self.compression.level, threads: 1 };
        let ((), sealed) = pipeline::upload(
            self.repo.store(),
            &key,
            &self.recipients,
            tree_compression,
            Arc::new(crate::progress::NoProgress),
            move |writer| io::Write::write_all(writer, &tree_json).map_err(|e| Error::io("writing the tree", e)),
        )
        .await?;
        task.finish(&format!(
            "{} files, {} unchanged, {} new",
            summary.tree.files,
            summary.unchanged_files,
            crate::units::bytes(summary.new_bytes)
        ));
        let mut warnings = files_warnings(source, &summary.skipped, &summary.external_symlinks, &summary.incomplete);
        let replaced = summary.replaced.iter().map(|r| format!("{r}; the snapshot holds the newer version, whole"));
        for warning in replaced.chain(summary.warnings.iter().cloned()) {
            tracing::warn!(source = %source.name, "{warning}");
            warnings.push(warning);
        }
        Ok(SourceOutcome {
            entry: SourceEntry {
                name: source.name.clone(),
                kind: SourceKind::Files,
                format: Some(StorageFormat::Chunked),
                chunked: Some(ChunkedSizes {
                    bytes: summary.tree.bytes,
                    added_bytes: summary.new_bytes,
                    added_chunks: summary.new_chunks,
                }),
                consistent_at,
                objects: vec![ObjectEntry::new(key, ObjectRole::Tree, sealed)],
                incomplete_files: summary.incomplete.len() as u64,
            },
            details: SourceDetails::Files(FilesDetails {
                name: source.name.clone(),
                root: source.path.display().to_string(),
                files: summary.tree.files,
                directories: summary.directories,
                symlinks: summary.symlinks,
                bytes: summary.tree.bytes,
                skipped: summary.skipped,
                incomplete: summary.incomplete.clone(),
                replaced: summary.replaced.clone(),
            }),
            warnings,
            incomplete_files: summary.incomplete,
            cache: summary.cache,
            chunked: Some(ChunkedReport {
                files_unchanged: summary.unchanged_files,
                chunks_added: summary.new_chunks,
                bytes_added: summary.new_bytes,
                packs_written: summary.packs as u64,
            }),
        })
    }
}

impl BackupContext<'_> {
    /// A bucket source: listed first (the walk, and the exact total for progress), then read by its origin.
    async fn bucket_files(
        &self,
        run: ChunkedRun,
        source: &FilesSource,
        excludes: Excludes,
    ) -> Result<(ChunkedSummary, Arc<dyn ProgressTask>)> {
        let store = bucket::open(source).await?;
        let listed = store.list_objects().await.map_err(|e| bucket::source_error(&source.name, e))?;
        let total = listed.iter().map(|o| o.size).sum();
        let task = self.progress.task(&source.name, Some(total));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (entries, warnings) = files::bucket_entries(listed, &excludes);
        let origin = BucketOrigin {
            name: source.name.clone(),
            url: source.path.display().to_string(),
            store,
            entries: std::sync::Mutex::new(entries),
            readers: source.concurrency.unwrap_or(bucket::DEFAULT_CONCURRENCY).max(cpus),
            runtime: tokio::runtime::Handle::current(),
        };
        let mut summary = chunk_source(run, source.name.clone(), origin, task.clone()).await?;
        summary.warnings.extend(warnings);
        Ok((summary, task))
    }
}

/// Backs up one chunked source from its origin, on a blocking thread (it reads files and compresses).
async fn chunk_source(
    run: ChunkedRun,
    name: String,
    origin: impl Origin + 'static,
    task: Arc<dyn ProgressTask>,
) -> Result<ChunkedSummary> {
    tokio::task::spawn_blocking(move || run.source(&name, &origin, task))
        .await
        .map_err(|e| Error::io("backing up files", io::Error::other(e)))
        .and_then(|r| r)
}

/// What a files backup says about what it stored: entries it skipped, links a restore would refuse, files that
/// changed while read. Said now, at backup time, rather than discovered by a restore during an incident.
fn files_warnings(
    source: &FilesSource,
    skipped: &[String],
    external_symlinks: &[String],
    incomplete: &[IncompleteFile],
) -> Vec<String> {
    let mut warnings: Vec<String> = skipped.iter().map(|s| format!("skipped {s}")).collect();
    if !source.external_symlinks && !external_symlinks.is_empty() {
        let shown: Vec<&str> = external_symlinks.iter().take(5).map(String::as_str).collect();
        let more = if external_symlinks.len() > shown.len() {
            format!(" and {} more", external_symlinks.len() - shown.len())
        } else {
            String::new()
        };
        warnings.push(format!(
            "{} symlinks point outside the source ({}{more}): a restore refuses them unless \
             `external_symlinks = true` is set for this source",
            external_symlinks.len(),
            shown.join(", ")
        ));
    }
    for file in incomplete {
        warnings.push(format!("{}; the snapshot holds it incomplete", file.describe()));
    }
    for warning in &warnings {
        tracing::warn!(source = %source.name, "{warning}");
    }
    warnings
}

/// Compares the new snapshot's sizes with the previous snapshot's (the public half only: a backup host holds
/// no identity) and warns about each source that shrank beyond `max_shrink`. Best effort: the snapshot is
/// committed already, and a previous manifest that cannot be read only costs the comparison.
async fn shrinkage(repo: &Repository, manifest: &Manifest, max_shrink: f64) -> Vec<String> {
    let previous = async {
        let ids = repo.snapshot_ids().await?;
        match ids.iter().rev().find(|id| **id < manifest.id) {
            Some(id) => repo.manifest(id).await.map(Some),
            None => Ok(None),
        }
    };
    let previous = match previous.await {
        Ok(Some(previous)) => previous,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::debug!("no size comparison with the previous snapshot: {e}");
            return Vec::new();
        }
    };
    let found: Vec<String> = crate::anomalies::compare(&previous, None, manifest, None, max_shrink)
        .iter()
        .map(|a| format!("{a} since snapshot {}", previous.id))
        .collect();
    for anomaly in &found {
        tracing::warn!("{anomaly}: check that the backup still captures everything");
    }
    found
}
