//! The configuration file (TOML) and its environment overrides.
//!
//! Precedence, highest first (also in docs/configuration.md):
//! 1. environment overrides: `DR_REPOSITORY_URL`, `DR_RECIPIENTS` (comma-separated), `DR_IDENTITY_FILE`, ...
//!    (the `ENV_*` constants); the command line's `--limit-upload` and `--limit-download` go above them;
//! 2. the configuration file: `--config FILE`, else `$DR_CONFIG`, else `./dr.toml`, else `/etc/dr/dr.toml`;
//! 3. built-in defaults (a local repository in `/var/lib/dr/repo`, zstd level 3 on every core).
//!
//! Relative paths in the file are resolved against the file's own directory, so a cron job or a service
//! manager running `dr` from `/` reads the same paths as an operator in the config's directory.
//!
//! This module is plain data: it imports nothing of the crate but its error type. What serde cannot check
//! (ranges, connection strings, recipients, schedules) each owning module checks for its own section, and
//! `crate::settings` calls them in one place for every command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_REPOSITORY_URL: &str = "file:///var/lib/dr/repo";
/// Where the configuration is looked for without --config or $DR_CONFIG, in this order.
pub const SEARCH_PATHS: [&str; 2] = ["dr.toml", "/etc/dr/dr.toml"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub postgres: Vec<PostgresSource>,
    #[serde(default)]
    pub files: Vec<FilesSource>,
    #[serde(default)]
    pub objectives: Objectives,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub lock: LockConfig,
    #[serde(default)]
    pub service: ServiceConfig,
    /// `[[job]]`: what `dr serve` runs, and when.
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobConfig>,
    #[serde(default)]
    pub report: ReportConfig,
    /// `[[alert]]`: webhooks `dr serve` notifies.
    #[serde(default, rename = "alert")]
    pub alerts: Vec<AlertConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub stream: StreamConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub chunking: ChunkingConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `file:///path`, a plain path, or `s3://bucket/prefix`.
    pub url: String,
    /// S3 only: a custom endpoint for an S3-compatible service (`http://127.0.0.1:3900`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 only: the signing region (default: the AWS configuration's, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3 only: path-style addressing; default on with a custom endpoint, off for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// S3 only: multipart part size; every part but the last has exactly this size.
    #[serde(default)]
    pub part_size: Option<bytesize::ByteSize>,
    /// S3 only: parts uploaded at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Bytes per second written to the repository, the process's total (`"10 MiB"`, `"10MiB/s"`); unset:
    /// unlimited. Checked by `store::validate`.
    #[serde(default)]
    pub limit_upload: Option<String>,
    /// Bytes per second read from the repository, likewise.
    #[serde(default)]
    pub limit_download: Option<String>,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            url: DEFAULT_REPOSITORY_URL.to_string(),
            endpoint: None,
            region: None,
            path_style: None,
            part_size: None,
            concurrency: None,
            limit_upload: None,
            limit_download: None,
        }
    }
}

impl RepositoryConfig {
    pub fn is_s3(&self) -> bool {
        self.url.starts_with("s3://")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1...`) or ssh-ed25519 / ssh-rsa public keys.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The private key; needed only to restore and verify, never to back up.
    pub identity_file: Option<PathBuf>,
    /// The repository's dedup key (chunked files sources): lets a host without the identity compute chunk ids
    /// and read the chunk index, and decrypts no data (docs/repository-format.md, "Chunked files sources").
    #[serde(default)]
    pub dedup_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// zstd level, 1 (fastest) to 19.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0 means one per CPU.
    #[serde(default)]
    pub threads: u32,
}

fn default_level() -> i32 {
    3
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { level: default_level(), threads: 0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    pub name: String,
    /// libpq URL or key=value string; libpq environment variables and .pgpass fill in the rest.
    pub url: String,
    /// Also dump roles and tablespaces (`pg_dumpall --globals-only`). On by default: the archive's owners and
    /// grants name roles that a fresh cluster does not have.
    #[serde(default = "default_true")]
    pub globals: bool,
    /// Capture every committed change through logical decoding (`dr serve`, `dr stream run`) for
    /// point-in-time restore (docs/pitr.md). Needs `wal_level = logical` on the server.
    #[serde(default)]
    pub continuous: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    pub name: String,
    /// A directory, or `s3://bucket/prefix`: the objects of a bucket (docs/s3.md, "A bucket as a files source").
    pub path: PathBuf,
    /// Glob patterns; without a `/` they match a name at any depth, with one they match the path
    /// relative to `path`. An excluded directory is skipped whole.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How the source is stored: `tar` (one archive per snapshot) or `chunked` (deduplicated chunks in packs).
    #[serde(default)]
    pub format: FilesFormat,
    /// Restore symlinks that point outside the directory (absolute, or climbing out of it). Off by default: a
    /// tampered archive could otherwise plant a link to, say, /etc/shadow for the web server to serve. Nothing
    /// is ever written *through* a link, either way.
    #[serde(default)]
    pub external_symlinks: bool,
    /// A bucket source's S3 endpoint (`https://<account>.r2.cloudflarestorage.com`); AWS when unset. The
    /// repository's settings never apply to a source: each names its own.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A bucket source's signing region (default: the AWS configuration's, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// A bucket source's credentials: this profile of the AWS shared credentials and config files, so that a
    /// read-only key for the source lives beside the repository's own (default: the standard AWS chain).
    #[serde(default)]
    pub profile: Option<String>,
    /// A bucket source's addressing: path-style (default with a custom endpoint) or virtual-hosted.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// A bucket source's objects downloaded at once during a backup, and uploaded at once by a restore into a
    /// bucket (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

impl FilesSource {
    /// The `s3://bucket/prefix` of a bucket source; `None` for a directory.
    pub fn bucket_url(&self) -> Option<&str> {
        self.path.to_str().filter(|p| p.starts_with("s3://"))
    }
}

/// How a files source is stored in the repository.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilesFormat {
    /// One tar stream and one index object per snapshot: every backup stores every byte again. Kept for
    /// sources that want one self-contained archive per snapshot (`age -d | zstd -d | tar -x`).
    Tar,
    /// Content-defined chunks, deduplicated across files, snapshots and sources, in pack objects; unchanged
    /// files are not read again.
    #[default]
    Chunked,
}

/// `[chunking]`: how chunked files sources cut files and pack chunks. The chunk sizes are fixed when the
/// repository's chunking is made (`dr init`, or the first chunked backup): every host must cut alike for chunks
/// to deduplicate. The pack size applies to every backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Files up to this size are one chunk; no chunk of a larger file is smaller (default 512 KiB).
    pub min_size: Option<bytesize::ByteSize>,
    /// The average chunk of a large file (default 1 MiB).
    pub avg_size: Option<bytesize::ByteSize>,
    /// No chunk is larger (default 8 MiB).
    pub max_size: Option<bytesize::ByteSize>,
    /// A pack is closed once it holds this much (default 8 MiB): fewer, larger objects mean fewer requests.
    pub pack_size: Option<bytesize::ByteSize>,
}

/// `[cache]`: what dr keeps on the backing-up host between runs (never needed for correctness).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Where the per-source file caches live (default: `$DR_CACHE_DIR`, else `$XDG_CACHE_HOME/dr`, else
    /// `~/.cache/dr`, else `/var/cache/dr`).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery point objective: the newest good backup must never be older than this.
    #[serde(default, with = "humantime_serde")]
    pub rpo: Option<Duration>,
    /// Recovery time objective: a full restore must finish within this.
    #[serde(default, with = "humantime_serde")]
    pub rto: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Where a parallel restore stages the database archive (default: the system temp directory).
    pub temp_dir: Option<PathBuf>,
    /// Default for `--jobs` (default: the number of CPUs).
    pub jobs: Option<usize>,
}

/// `[retention]`: which snapshots `dr prune` keeps (restic's `forget` semantics, docs/retention.md). A
/// snapshot is kept when any rule keeps it; an unset rule keeps nothing by itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The newest N snapshots.
    pub keep_last: Option<u32>,
    /// The newest snapshot of each of the last N hours that have one (likewise for the others).
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Objects that belong to no snapshot (a crashed backup's) are deleted once older than this (default 24h),
    /// so that a backup still running is never swept.
    #[serde(default, with = "humantime_serde")]
    pub orphan_grace: Option<Duration>,
    /// Chunked sources: a pack whose live chunks fill less than this share of it is repacked (default 0.8).
    #[serde(default)]
    pub repack_below: Option<f64>,
}

/// `[lock]`: the repository lock that keeps writers apart (docs/locks.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long a lock lives without renewal; the holder renews it well before. A crashed holder's lock is
    /// taken over once this has passed (default 5 minutes).
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// How long a command waits for a conflicting lock before giving up (default 0: fail at once, naming the
    /// holder). `dr serve` jobs wait up to their own schedule.
    #[serde(default, with = "humantime_serde")]
    pub wait: Option<Duration>,
}

/// `[service]`: `dr serve`, the long-running appliance (docs/service.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address of the health, metrics and status endpoints (default `127.0.0.1:9187`).
    pub listen: Option<String>,
    /// IANA time zone the job schedules are read in (default `UTC`), e.g. `Europe/Paris`.
    pub timezone: Option<String>,
    /// A directory of `*.toml` files, each holding `[[job]]` tables, read besides the configuration's own.
    pub schedules_dir: Option<PathBuf>,
    /// A file holding a bearer token that `/metrics` and `/status` then require.
    pub token_file: Option<PathBuf>,
    /// Where the service keeps its state: each job's last run, so that a run missed while the host was down
    /// is caught up once at start-up (default `/var/lib/dr/state`).
    pub state_dir: Option<PathBuf>,
    /// How long a running job may take to finish after SIGTERM before it is cancelled (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
}

/// `[stream]`: continuous change capture of the `continuous = true` sources (docs/pitr.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// How often a segment is closed and stored: the RPO the stream aims at (default 5s, at most 10 minutes).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// `dr serve` opens an incident when a slot makes its server keep more WAL than this (default 1GiB).
    pub max_retained_wal: Option<bytesize::ByteSize>,
}

/// `[[job]]`: one scheduled job of `dr serve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    /// Six fields, seconds first: `sec min hour day-of-month month day-of-week` (the `cron` crate's syntax;
    /// day-of-week names `Mon`-`Sun`, or numbers 1-7 with 1 = Sunday).
    pub schedule: String,
    pub run: JobKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Drill,
    Prune,
    Report,
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Backup => "backup",
            JobKind::Drill => "drill",
            JobKind::Prune => "prune",
            JobKind::Report => "report",
        })
    }
}

/// `[report]`: what a scheduled `report` job writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Where the job writes `report-<date>.{md,html,json}` (default: `<state_dir>/reports`).
    pub output_dir: Option<PathBuf>,
    /// The window of a scheduled report (default 7 days).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
}

/// `[[alert]]`: a webhook that receives a JSON POST per incident and per resolution (and the weekly report).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    pub name: String,
    /// The webhook URL. It is a credential for most services (Slack, Teams, ...): prefer `url_file`.
    pub url: Option<String>,
    /// A file holding the webhook URL.
    pub url_file: Option<PathBuf>,
    /// Also post each scheduled report's Markdown summary here (default true).
    #[serde(default = "default_true")]
    pub reports: bool,
}

fn default_true() -> bool {
    true
}

/// `[audit]`: the audit log, one JSON line per backup, restore, drill and prune (who, what, which snapshot,
/// outcome).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The file the lines are appended to; unset: no audit log.
    pub path: Option<PathBuf>,
}

/// `[drill]`: how restore drills run and what they check beyond the built-in checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// A PostgreSQL server the drill may create and drop `dr_drill_*` databases (and the snapshot's roles) on,
    /// instead of an embedded scratch cluster. Never a server a `[[postgres]]` source lives on.
    #[serde(default)]
    pub scratch_url: Option<String>,
    /// Warn when a source's size or a table's row count falls by more than this fraction against the previous
    /// snapshot (0.5: to less than half). Backups, drills and reports use it.
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// Queries run against the restored databases, each with an expected answer.
    #[serde(default, rename = "check")]
    pub checks: Vec<DrillCheck>,
}

impl Default for DrillConfig {
    fn default() -> DrillConfig {
        DrillConfig { scratch_url: None, max_shrink: default_max_shrink(), checks: Vec::new() }
    }
}

fn default_max_shrink() -> f64 {
    0.5
}

/// `[[drill.check]]`: one query with its expected answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    pub name: String,
    /// The `[[postgres]]` source whose restored database the query runs in.
    pub database: String,
    /// A query whose first column of the first row is compared.
    pub sql: String,
    /// `=`, `!=`, `>`, `>=`, `<`, `<=` followed by a number, or a literal string compared as text.
    pub expect: String,
    /// How long the query may run (PostgreSQL's `statement_timeout`); default 5 minutes.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Where the configuration came from, for messages and for resolving relative paths.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// No file: built from defaults and environment overrides only.
    Environment,
}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub origin: ConfigOrigin,
    /// The environment variables that overrode the file ([`ENV_REPOSITORY_URL`], ...), so that an error in
    /// their value names the variable.
    pub overrides: Vec<&'static str>,
}

pub const ENV_REPOSITORY_URL: &str = "DR_REPOSITORY_URL";
pub const ENV_RECIPIENTS: &str = "DR_RECIPIENTS";
pub const ENV_IDENTITY_FILE: &str = "DR_IDENTITY_FILE";
pub const ENV_DEDUP_KEY_FILE: &str = "DR_DEDUP_KEY_FILE";
pub const ENV_CACHE_DIR: &str = "DR_CACHE_DIR";
pub const ENV_LIMIT_UPLOAD: &str = "DR_LIMIT_UPLOAD";
pub const ENV_LIMIT_DOWNLOAD: &str = "DR_LIMIT_DOWNLOAD";

impl Config {
    /// Parses a configuration text; `path` is used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config =
            toml::from_str(text).map_err(|source| Error::ConfigParse { path: path.to_path_buf(), source })?;
        if let Some(dir) = path.parent() {
            config.resolve_relative_paths(dir);
        }
        Ok(config)
    }

    /// Finds, reads and parses the configuration, applying environment overrides. It does not check what serde
    /// cannot: `settings::load` does, and every command loads through it.
    ///
    /// `explicit` is `--config`; `env` looks up environment variables (a parameter so tests need not mutate
    /// the process environment).
    pub fn load(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<LoadedConfig> {
        let chosen = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => match env("DR_CONFIG").filter(|v| !v.is_empty()) {
                Some(path) => Some(PathBuf::from(path)),
                None => SEARCH_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
            },
        };
        let (mut config, origin) = match chosen {
            Some(path) => {
                // Relative paths inside the file resolve against its directory, which must be absolute so that a
                // later change of working directory (or a relative `--config`) cannot move the repository.
                let path = std::path::absolute(&path).unwrap_or(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| Error::ConfigRead { path: path.clone(), source })?;
                (Config::parse(&text, &path)?, ConfigOrigin::File(path))
            }
            // Without a file, the environment alone can still name a repository (e.g. a break-glass host
            // that only lists and restores).
            None if env("DR_REPOSITORY_URL").is_some_and(|v| !v.is_empty()) => {
                (Config::default(), ConfigOrigin::Environment)
            }
            None => {
                return Err(Error::ConfigNotFound { searched: SEARCH_PATHS.iter().map(PathBuf::from).collect() });
            }
        };
        let overrides = config.apply_env(env);
        Ok(LoadedConfig { config, origin, overrides })
    }

    /// Applies the environment overrides; returns the variables that were applied.
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<&'static str> {
        let mut applied = Vec::new();
        if let Some(url) = env(ENV_REPOSITORY_URL).filter(|v| !v.is_empty()) {
            self.repository.url = url;
            applied.push(ENV_REPOSITORY_URL);
        }
        if let Some(list) = env(ENV_RECIPIENTS).filter(|v| !v.is_empty()) {
            self.encryption.recipients =
                list.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
            applied.push(ENV_RECIPIENTS);
        }
        if let Some(path) = env(ENV_IDENTITY_FILE).filter(|v| !v.is_empty()) {
            self.encryption.identity_file = Some(PathBuf::from(path));
            applied.push(ENV_IDENTITY_FILE);
        }
        if let Some(path) = env(ENV_DEDUP_KEY_FILE).filter(|v| !v.is_empty()) {
            self.encryption.dedup_key_file = Some(PathBuf::from(path));
            applied.push(ENV_DEDUP_KEY_FILE);
        }
        if let Some(path) = env(ENV_CACHE_DIR).filter(|v| !v.is_empty()) {
            self.cache.dir = Some(PathBuf::from(path));
            applied.push(ENV_CACHE_DIR);
        }
        if let Some(rate) = env(ENV_LIMIT_UPLOAD).filter(|v| !v.is_empty()) {
            self.repository.limit_upload = Some(rate);
            applied.push(ENV_LIMIT_UPLOAD);
        }
        if let Some(rate) = env(ENV_LIMIT_DOWNLOAD).filter(|v| !v.is_empty()) {
            self.repository.limit_download = Some(rate);
            applied.push(ENV_LIMIT_DOWNLOAD);
        }
        applied
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [&mut self.encryption.identity_file, &mut self.encryption.dedup_key_file, &mut self.cache.dir]
            .into_iter()
            .flatten()
        {
            resolve(p);
        }
        if let Some(p) = self.restore.temp_dir.as_mut() {
            resolve(p);
        }
        for files in self.files.iter_mut().filter(|f| f.bucket_url().is_none()) {
            resolve(&mut files.path);
        }
        let service = &mut self.service;
        for p in [&mut service.schedules_dir, &mut service.token_file, &mut service.state_dir].into_iter().flatten() {
            resolve(p);
        }
        if let Some(p) = self.report.output_dir.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.audit.path.as_mut() {
            resolve(p);
        }
        for alert in &mut self.alerts {
            if let Some(p) = alert.url_file.as_mut() {
                resolve(p);
            }
        }
        let url = &self.repository.url;
        if !url.contains("://") && Path::new(url).is_relative() {
            self.repository.url = base.join(url).display().to_string();
        }
    }

    /// All source names, databases first, in configuration order.
    pub fn source_names(&self) -> Vec<&str> {
        self.postgres.iter().map(|p| p.name.as_str()).chain(self.files.iter().map(|f| f.name.as_str())).collect()
    }

    /// pg_restore jobs: `requested` (a `--jobs` flag), else `[restore] jobs`, else one per CPU.
    pub fn restore_jobs(&self, requested: Option<usize>) -> usize {
        requested.or(self.restore.jobs).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let config = Config::parse(
            "[repository]\nurl = \"repo\"\n[encryption]\nidentity_file = \"key.txt\"\n\
             [[files]]\nname = \"up\"\npath = \"uploads\"\n",
            Path::new("/etc/dr/dr.toml"),
        )
        .unwrap();
        assert_eq!(config.repository.url, "/etc/dr/repo");
        assert_eq!(config.encryption.identity_file.unwrap(), PathBuf::from("/etc/dr/key.txt"));
        assert_eq!(config.files[0].path, PathBuf::from("/etc/dr/uploads"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[repository]\nurl = \"x\"\nurll = 1\n", Path::new("dr.toml")).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dr.toml");
        std::fs::write(&path, "[repository]\nurl = \"/from/file\"\n").unwrap();
        let env = |key: &str| match key {
            "DR_REPOSITORY_URL" => Some("/from/env".to_string()),
            "DR_IDENTITY_FILE" => Some("/run/secrets/id".to_string()),
            "DR_LIMIT_DOWNLOAD" => Some("2 MiB".to_string()),
            _ => None,
        };
        let loaded = Config::load(Some(&path), &env).unwrap();
        assert_eq!(loaded.config.repository.url, "/from/env");
        assert_eq!(loaded.config.encryption.identity_file.unwrap(), PathBuf::from("/run/secrets/id"));
        assert_eq!(loaded.config.repository.limit_download.as_deref(), Some("2 MiB"));
        assert_eq!(loaded.config.repository.limit_upload, None);
        assert!(loaded.overrides.contains(&ENV_LIMIT_DOWNLOAD) && !loaded.overrides.contains(&ENV_LIMIT_UPLOAD));
    }

    #[test]
    fn globals_are_backed_up_unless_turned_off() {
        let source = |extra: &str| {
            let text = format!("[[postgres]]\nname = \"app\"\nurl = \"dbname=a\"\n{extra}");
            Config::parse(&text, Path::new("dr.toml")).unwrap().postgres[0].globals
        };
        assert!(source(""), "a fresh cluster needs the roles the archive's owners and grants name");
        assert!(!source("globals = false\n"));
    }

    #[test]
    fn a_missing_config_names_the_places_searched() {
        let err = Config::load(None, &no_env).unwrap_err();
        assert!(matches!(err, Error::ConfigNotFound { .. }));
        assert!(err.to_string().contains("/etc/dr/dr.toml"));
    }
}
