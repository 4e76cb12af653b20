//! Errors of the `dr` engine.
//!
//! Policy:
//! - The library and the binary share this one typed [`Error`]: the CLI renders it, it never wraps it.
//! - Every variant a user can cause says *what* failed and *on what* (a file, a source name, an object key,
//!   a snapshot id) in its message, and [`Error::hint`] says what to do next. The CLI prints both and exits
//!   with [`Error::exit_code`]: 0 when the command succeeded; 2 for a bad invocation, and for a destructive
//!   `dr recover` left unconfirmed because there is no terminal to ask on (pass `--yes`); 3 for a backup
//!   committed with incomplete files (a `warning:`); 128 + N when a signal N stopped the command; 1 for
//!   everything else.
//! - A variant that wraps a foreign failure (I/O, an identity file, an HTTP client, a TOML parser, a child
//!   tool) keeps it as its `source`; where the words shown are composed from several causes, [`Failure`]
//!   carries the text with the original. Control flow does not read another library's message text (whether
//!   pg_dumpall may dump role passwords is asked of the server up front, not read from its stderr).
//! - A hint that fits only one call site is given there (`hint` fields: [`Error::ChildFailed`], [`Error::Stream`],
//!   [`Error::Files`], [`Error::DrillFailed`], [`Error::RecoverStepFailed`]), not chosen by matching names.
//! - Repository data is never a usage error: a bad key or id read from a manifest is corruption (exit 1), even
//!   though the same text typed on the command line is a bad invocation (exit 2).
//! - Internal signals (an upload abandoned by its producer) are not errors and do not appear here.
//! - Messages never contain secrets: connection strings are shown redacted (see `pg::ConnInfo::redacted`),
//!   and key material is never formatted.
//! - A child tool's failure quotes the tail of its stderr, because that is where the real cause is.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line was well-formed for clap but not for us (bad `--to`, unknown `--only` name, ...).
    #[error("{0}")]
    Usage(String),

    #[error("no configuration file found (looked for {})", display_paths(.searched))]
    ConfigNotFound { searched: Vec<PathBuf> },

    #[error("cannot read configuration file {}: {source}", .path.display())]
    ConfigRead { path: PathBuf, source: std::io::Error },

    /// The file is not TOML, or not dr's: toml's own report (which quotes the line), indented under the path.
    #[error("configuration file {}: {}", .path.display(), indented(.source))]
    ConfigParse { path: PathBuf, source: toml::de::Error },

    /// A value that parsed but makes no sense (bad recipient, duplicate source name, ...).
    #[error("invalid configuration: {0}")]
    ConfigInvalid(String),

    /// A value taken from an environment variable (which replaces the file's) does not parse.
    /// `source` is what checking the value found; shown without its own "invalid configuration" preamble.
    #[error("environment variable {var}: {}", env_problem(.source))]
    ConfigEnv { var: &'static str, source: Box<Error> },

    #[error("no encryption recipients configured")]
    NoRecipients,

    #[error("no identity configured: {action} needs the private key ([encryption] identity_file)")]
    NoIdentity { action: &'static str },

    #[error("cannot use identity file {}: {problem}", .path.display())]
    Identity {
        path: PathBuf,
        #[source]
        problem: crate::crypto::IdentityFileProblem,
    },

    /// `dr keygen --output FILE` where FILE exists: a key file is never replaced.
    #[error("refusing to write the identity to {}: the file already exists", .path.display())]
    IdentityFileExists { path: PathBuf },

    #[error("the identity in {} cannot decrypt {what}: it was encrypted to other recipients", .path.display())]
    WrongIdentity { path: PathBuf, what: String },

    /// This host has no dedup key (docs/repository-format.md, "Chunks"): no `[encryption] dedup_key_file`, and
    /// no identity to take it from the repository. `create`: the repository has none yet, and this run would
    /// have made it.
    #[error("{}", if *.create {
        format!("repository {location} has no dedup key yet, and this host can make none: that needs \
                 [encryption] dedup_key_file (or an identity)")
    } else {
        format!("the dedup key of repository {location} is not on this host: [encryption] dedup_key_file is \
                 {}, and no identity is configured to read it from the repository",
                if *.file_configured { "configured but missing" } else { "not set" })
    })]
    ChunkKeyMissing { location: String, create: bool, file_configured: bool },

    /// `[encryption] dedup_key_file` holds another repository's key (its key check differs from
    /// `chunking.json`'s).
    #[error(
        "dedup key in {} does not belong to repository {location}: its key check is {found}, the repository's \
         is {expected}",
        .path.display()
    )]
    DedupKeyMismatch { path: PathBuf, location: String, found: String, expected: String },

    /// The dedup key file does not hold a key (the text is not 64 hex digits).
    #[error("dedup key file {}: {reason}", .path.display())]
    DedupKeyFile { path: PathBuf, reason: String },

    #[error("repository {location} is not initialized")]
    RepositoryNotInitialized { location: String },

    #[error("repository {location} already exists")]
    RepositoryExists { location: String },

    #[error("unsupported repository URL {url:?}: {reason}")]
    RepositoryUrl { url: String, reason: String },

    /// Another command holds a conflicting repository lock (docs/locks.md).
    #[error("the repository is locked: {holder} holds it since {}", .since.format("%Y-%m-%d %H:%M:%S UTC"))]
    RepositoryLocked { holder: String, since: DateTime<Utc>, expires: DateTime<Utc> },

    /// The holder of a repository lock could not keep it: it stopped before committing anything.
    #[error("{purpose} lost its repository lock: {reason}")]
    LockLost { purpose: String, reason: String },

    /// The storage backend failed on one object (I/O error, permission, disk full, ...). `source` is the
    /// foreign failure (an `io::Error`, an S3 request's error) or the store's own finding; `hint`, when set, is
    /// what to do about this one failure, given where it was found (the general advice otherwise).
    #[error("repository {location}: {operation} {key}: {source}")]
    Store {
        location: String,
        operation: &'static str,
        key: String,
        source: Box<dyn std::error::Error + Send + Sync>,
        hint: Option<&'static str>,
    },

    #[error("repository {location}: bucket {bucket:?} does not exist")]
    NoSuchBucket { location: String, bucket: String, source: Box<dyn std::error::Error + Send + Sync> },

    #[error("repository {location}: access denied ({operation} {key}): {source}")]
    StoreAccessDenied {
        location: String,
        operation: &'static str,
        key: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("repository {location}: bad or missing credentials: {source}")]
    StoreCredentials { location: String, source: Box<dyn std::error::Error + Send + Sync> },

    /// The AWS credential chain found nothing at all (no variables, no profile, no role); `source` lists the
    /// providers it tried (noise in a message, useful when debugging).
    #[error("repository {location}: no S3 credentials found")]
    NoStoreCredentials { location: String, source: Box<dyn std::error::Error + Send + Sync> },

    /// `retried`: the endpoint had answered before and the policy's retries were spent; otherwise the very first
    /// connection failed (refused, no such host), which no retry would change.
    #[error("repository {location}: cannot reach {endpoint}: {source}")]
    StoreUnreachable {
        location: String,
        endpoint: String,
        source: Box<dyn std::error::Error + Send + Sync>,
        retried: bool,
    },

    #[error("object {key} is missing from the repository")]
    ObjectMissing { key: String },

    #[error("object {key} is corrupt: {reason}")]
    ObjectCorrupt { key: String, reason: String },

    /// The repository's `config.json` names a format newer than this dr reads: no snapshot is at fault.
    #[error(
        "object {key} is corrupt: repository format {format} is newer than this dr understands ({supported}); \
         upgrade dr"
    )]
    RepositoryFormatTooNew { key: String, format: u32, supported: u32 },

    #[error("no snapshot matches {selector:?}")]
    SnapshotNotFound { selector: String },

    #[error("snapshot id prefix {prefix:?} is ambiguous: it matches {}", .matches.join(", "))]
    SnapshotAmbiguous { prefix: String, matches: Vec<String> },

    #[error("the repository holds no snapshots")]
    NoSnapshots,

    /// `--to TIME` earlier than every snapshot.
    #[error(
        "no snapshot was taken at or before {}: the oldest is {oldest} (taken {})",
        .time.format("%Y-%m-%d %H:%M:%S UTC"), .oldest_time.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    SnapshotTooEarly { time: DateTime<Utc>, oldest: String, oldest_time: DateTime<Utc> },

    /// `message` is what the CLI shows (for a driver's failure, `pg::describe` of it: the server's words); `source`
    /// keeps the failure itself (the driver's, TLS set-up's, a service file's) when there is one.
    #[error("database {target} (source {source_name:?}): {message}")]
    Database {
        source_name: String,
        target: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The server asks for a password and none was found where libpq looks (docs/configuration.md).
    #[error(
        "database {target} (source {source_name:?}): the server asks for a password for user {user:?}, and none was \
         found (not in the url, PGPASSWORD, a service, or the password file {})",
        .passfile.as_ref().map_or_else(|| "~/.pgpass".to_string(), |p| p.display().to_string())
    )]
    DatabasePasswordMissing {
        source_name: String,
        target: String,
        user: String,
        passfile: Option<PathBuf>,
        /// The driver's refusal to go on without one.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A child tool exited unsuccessfully. `hint` comes from the code that started it: it knows which tool it
    /// ran and why (build it with [`Error::child_failed`]).
    #[error("{program} failed ({status}){}", stderr_tail(.stderr))]
    ChildFailed { program: String, status: String, stderr: String, hint: Option<String> },

    /// Continuous change capture cannot go on, or a point-in-time restore cannot be made as asked; `hint` comes
    /// from the code that found it.
    #[error("change stream of source {source_name:?}: {problem}")]
    Stream { source_name: String, problem: String, hint: String },

    #[error("cannot find {tool}{}", .wanted.as_deref().map(|w| format!(" for PostgreSQL {w}")).unwrap_or_default())]
    ToolNotFound { tool: String, wanted: Option<String> },

    #[error("refusing to restore {source_name:?} into {target}: {what}")]
    TargetNotEmpty { source_name: String, target: String, what: String },

    #[error("archive of {source_name:?} holds an unsafe entry {path:?}: {reason}")]
    UnsafeArchiveEntry { source_name: String, path: String, reason: String },

    #[error("archive of {source_name:?} holds a symlink {path:?} pointing outside the target (to {target:?})")]
    ExternalSymlink { source_name: String, path: String, target: String },

    /// A files source's tree could not be read (backup) or written (restore). The hint is given where it
    /// failed (see `files::backup_error`, `files::restore_error`): what helps depends on the side.
    #[error("files source {source_name:?}: {failure}")]
    Files {
        source_name: String,
        #[source]
        failure: Failure,
        hint: String,
    },

    /// A `[[files]]` path that does not exist (a typo, or a volume that is not mounted).
    #[error("files source {source_name:?}: {} does not exist", .path.display())]
    FilesRootMissing { source_name: String, path: PathBuf },

    /// A files source's path, or a restore target of one, that exists but is not a directory.
    #[error("{}", if *.restore {
        format!("cannot restore files source {source_name:?} into {}: it is a file, not a directory", .path.display())
    } else {
        format!("files source {source_name:?}: {} is not a directory", .path.display())
    })]
    NotADirectory { source_name: String, path: PathBuf, restore: bool },

    #[error("not enough free space in {}: the restore needs {need} and {have} is free", .dir.display())]
    NotEnoughSpace { dir: PathBuf, need: String, have: String },

    #[error("restore of {failed} of {total} sources failed: {}", .details.join("; "))]
    RestoreIncomplete {
        failed: usize,
        total: usize,
        details: Vec<String>,
        /// The failed sources' own hints, which say more than the generic one.
        hints: Vec<String>,
    },

    /// The snapshot was committed, but some files changed while they were read and are stored incomplete
    /// (exit code 3, as restic's "snapshot taken, some files could not be read"). Rendered as a warning.
    #[error(
        "snapshot {snapshot} was committed, but {} changed while being read and {} stored incomplete: {}",
        crate::units::plural(.files.len(), "file"),
        if .files.len() == 1 { "is" } else { "are" },
        .files.join("; ")
    )]
    BackupIncomplete { snapshot: String, files: Vec<String> },

    #[error("verification failed: {}; first: {first}", verify_problems(*.bad, *.total, *.bad_drills, *.bad_streams))]
    VerifyFailed { bad: usize, total: usize, bad_drills: usize, bad_streams: usize, first: String },

    #[error("{what} differs from the original: {}", .differences.join(", "))]
    Mismatch { what: String, differences: Vec<String> },

    #[error(
        "refusing scratch server {scratch}: it is the server of source {source_name:?}, and a drill never runs on production"
    )]
    ScratchIsProduction { source_name: String, scratch: String },

    /// A drill ran to its end and did not succeed: a check failed or an objective was missed.
    #[error("drill {outcome}: {reason}")]
    DrillFailed {
        outcome: &'static str,
        reason: String,
        /// The hint of the error that stopped the drill, when one did.
        hint: Option<String>,
    },

    /// `dr prune` without a `[retention]` rule: it would have nothing to keep by.
    #[error("no retention rule is set: prune keeps only what [retention] asks for, and it asks for nothing")]
    RetentionUnset,

    /// The policy would delete every snapshot (a safety net: a policy that is set always keeps the newest).
    #[error("refusing to prune: the retention policy ({policy}) would keep none of the {snapshots} snapshots")]
    RetentionKeepsNothing { policy: String, snapshots: usize },

    /// Prune must know what every manifest references before it deletes anything.
    #[error("prune stopped before deleting anything: {key} cannot be read: {reason}")]
    PruneUnreadable { key: String, reason: String },

    /// A runbook that does not validate: every problem, each naming its line or step (docs/runbooks.md).
    #[error("runbook {} is invalid: {}", .path.display(), .problems.join("; "))]
    RunbookInvalid { path: PathBuf, problems: Vec<String> },

    /// A destructive recovery without `--yes`: no terminal to ask on, or the answer was not the runbook's name.
    #[error("{}", if *.interactive {
        format!("recovery not confirmed: runbook {runbook:?} was not run")
    } else {
        format!("refusing to run runbook {runbook:?} unconfirmed: it restores or runs commands, and there is no terminal to ask on")
    })]
    RecoverNotConfirmed { runbook: String, interactive: bool },

    /// A step of `dr recover` failed and the run stopped there (its state is saved).
    #[error("step {step:?} failed: {reason}")]
    RecoverStepFailed { step: String, reason: String, hint: Option<String>, runbook: PathBuf },

    /// Every step ran, but some with `on_failure = "continue"` failed.
    #[error("the recovery ran to its end, but {} step(s) failed: {}", .failed.len(), .failed.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))]
    RecoverIncomplete { failed: Vec<String>, runbook: PathBuf },

    /// `dr recover` was stopped by a signal; the state is saved for `--resume`.
    #[error("stopped by {signal} during step {step:?}; the recovery's state is saved in {}", .state.display())]
    RecoverInterrupted { signal: &'static str, number: i32, step: String, state: PathBuf, resume: String },

    /// `dr healthcheck`: the service did not answer, or answered that it is not healthy (or not ready).
    /// `reason` is the text shown, rendered from `source` (the HTTP client's failure) when there is one; an
    /// answer that says "not healthy" has none.
    #[error("dr serve at {url}: {reason}")]
    ServiceUnhealthy {
        url: String,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// `dr check` found problems (each one is listed above the error, with its own hint).
    #[error("dr check found {problems} problem{} in {checks} checks", if *.problems == 1 { "" } else { "s" })]
    CheckFailed { problems: usize, checks: usize },

    /// The caller cancelled the operation (see [`crate::BackupOptions::cancel`]).
    #[error("cancelled before it finished")]
    Cancelled,

    /// The process was asked to stop (Ctrl-C, `kill`, a service manager) before the command finished.
    /// `command` is the subcommand (`backup`, `restore`, ...): what was left behind depends on it.
    #[error("stopped by {name} before the command finished")]
    Signal { name: &'static str, number: i32, command: &'static str },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    /// Process exit code for this error: 2 for a bad invocation, 128 + N after signal N, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            // The shell convention for "killed by a signal".
            Error::Signal { number, .. } => 128 + number,
            Error::RecoverInterrupted { number, .. } => 128 + number,
            Error::RecoverNotConfirmed { interactive: false, .. } => 2,
            Error::BackupIncomplete { .. } => 3,
            _ => 1,
        }
    }

    /// What the user should do next, if there is anything more useful to say than the message.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::Usage(_) => "see `dr --help` or `dr <command> --help`".to_string(),
            Error::ConfigNotFound { .. } => {
                "pass --config FILE or set DR_CONFIG; docs/configuration.md has a full example".to_string()
            }
            Error::ConfigRead { .. } => "check the path and its permissions".to_string(),
            Error::ConfigParse { .. } | Error::ConfigInvalid(_) => {
                "fix the configuration; every key is described in docs/configuration.md".to_string()
            }
            Error::ConfigEnv { var, .. } => format!(
                "fix or unset {var} in dr's environment: it replaces {} of the configuration file \
                 (docs/configuration.md)",
                env_replaces(var)
            ),
            Error::NoRecipients => {
                "add age recipients to [encryption] recipients (or DR_RECIPIENTS); `dr keygen` makes a key pair"
                    .to_string()
            }
            Error::NoIdentity { .. } => {
                "set [encryption] identity_file or DR_IDENTITY_FILE to the file `dr keygen` wrote".to_string()
            }
            // A file dr cannot read is no question of its contents.
            Error::Identity { problem: crate::crypto::IdentityFileProblem::Read(_), .. } => {
                "check identity_file (or DR_IDENTITY_FILE): the path, and that dr's user may read it".to_string()
            }
            Error::Identity { .. } => {
                "the file must hold an age identity (AGE-SECRET-KEY-1...) or an unencrypted ssh key".to_string()
            }
            Error::IdentityFileExists { .. } => {
                "dr keygen never replaces a key file (the backups encrypted to it could not be restored without \
                 it): choose another --output path, or remove the old file deliberately once nothing needs it"
                    .to_string()
            }
            Error::WrongIdentity { .. } => {
                "use the identity whose public key is in [encryption] recipients at the time of the backup".to_string()
            }
            Error::ChunkKeyMissing { create: true, .. } => {
                "set [encryption] dedup_key_file = PATH: the backup writes the new key there (give that file to \
                 every other host that backs up into this repository)"
                    .to_string()
            }
            Error::ChunkKeyMissing { create: false, .. } => {
                "set [encryption] dedup_key_file and copy the key there: run `dr dedup-key --output FILE` on a host \
                 that holds the identity"
                    .to_string()
            }
            Error::DedupKeyMismatch { .. } => {
                "copy this repository's key there (`dr dedup-key --output FILE` on a host that holds the identity), \
                 or point [encryption] dedup_key_file at the right file"
                    .to_string()
            }
            Error::DedupKeyFile { .. } => {
                "the file holds the key as 64 hex digits on one line, as `dr dedup-key --output FILE` writes it"
                    .to_string()
            }
            Error::RepositoryNotInitialized { .. } => "run `dr init` first".to_string(),
            Error::RepositoryExists { .. } => {
                "the repository is ready to use; `dr snapshots` lists what it holds".to_string()
            }
            Error::RepositoryUrl { .. } => {
                "use file:///absolute/path (or a plain path) for a local repository, s3://bucket/prefix for S3"
                    .to_string()
            }
            Error::RepositoryLocked { expires, .. } => format!(
                "wait for it to finish and run the command again, or set [lock] wait (e.g. \"10m\") to wait for it; \
                 if that process is gone (crashed, or its host is down), its lock expires by itself at {}",
                expires.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Error::LockLost { .. } => {
                "the command stopped before finishing (a backup commits nothing then); check that the repository \
                 stays reachable while it runs (the lock is renewed every [lock] lease / 3), then run it again"
                    .to_string()
            }
            Error::Store { hint: Some(hint), .. } => hint.to_string(),
            Error::Store { hint: None, .. } => {
                "check that the repository is reachable, writable and has free space".to_string()
            }
            Error::NoSuchBucket { .. } => {
                "create the bucket first (dr never creates buckets), or fix the bucket name in [repository] url"
                    .to_string()
            }
            Error::StoreAccessDenied { .. } => {
                "grant these credentials s3:ListBucket on the bucket and s3:GetObject, s3:PutObject, \
                 s3:DeleteObject and s3:AbortMultipartUpload on its objects"
                    .to_string()
            }
            Error::StoreCredentials { .. } => {
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile in use) and the region".to_string()
            }
            Error::NoStoreCredentials { .. } => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile of the shared \
                 credentials file (~/.aws/credentials, or AWS_SHARED_CREDENTIALS_FILE); docs/s3.md has the details"
                    .to_string()
            }
            Error::StoreUnreachable { retried: true, .. } => {
                "check [repository] endpoint, DNS and the network path to it (dr retried before giving up)".to_string()
            }
            Error::VerifyFailed { bad: 0, bad_drills: 0, bad_streams: 1.., .. } => {
                "the snapshots are whole; a damaged or missing change segment stops point-in-time restores at it: \
                 restore to a time before it, or from a base taken after it (docs/pitr.md)"
                    .to_string()
            }
            Error::VerifyFailed { bad: 0, bad_drills: 1.., .. } => {
                "the snapshots are whole; a damaged drill record only loses that drill's results from `dr report`: \
                 put it back from a copy of the repository, or move it out of drills/ and run `dr drill` again"
        .to_string()
            }
            Error::StoreUnreachable { retried: false, .. } => {
                "check [repository] endpoint (is the server running, and listening there?), DNS and the network \
                 path to it"
                    .to_string()
            }
            Error::ObjectMissing { .. } | Error::ObjectCorrupt { .. } | Error::VerifyFailed { .. } => {
                "this snapshot cannot be trusted; restore an older one (`dr snapshots`) and run `dr verify --all`"
                    .to_string()
            }
            Error::RepositoryFormatTooNew { .. } => {
                "a newer dr wrote this repository: upgrade dr on this host (the repository itself is not damaged)"
                    .to_string()
            }
            Error::SnapshotTooEarly { oldest, .. } => format!(
                "nothing older can be restored; --to {oldest} takes the oldest snapshot (`dr snapshots` lists them \
                 all)"
            ),
            Error::SnapshotNotFound { .. } | Error::NoSnapshots | Error::SnapshotAmbiguous { .. } => {
                "`dr snapshots` lists the snapshots; --to takes latest, an id (or unique prefix), or an RFC 3339 time"
                    .to_string()
            }
            Error::Database { .. } => {
                "check the connection URL, that the server is up, and the credentials (.pgpass, PGPASSWORD)".to_string()
            }
            Error::DatabasePasswordMissing { user, .. } => format!(
                "give the password of {user:?} in PGPASSWORD (in dr's environment), in a password file \
                 (~/.pgpass, or the one `passfile` or PGPASSFILE names; mode 0600; a line \
                 host:port:database:user:password), in the service's section of pg_service.conf, or in the url \
                 itself (postgres://user:PASSWORD@host/db, which keeps it in dr.toml)"
            ),
            Error::ChildFailed { hint, .. } => return hint.clone(),
            Error::Stream { hint, .. } => hint.clone(),
            Error::ToolNotFound { tool, wanted: Some(v) } if tool == "initdb" || tool == "postgres" => format!(
                "install the PostgreSQL {v} server (Debian: apt-get install postgresql-{v}), or point [drill] \
                 scratch_url (or --scratch-url) at a PostgreSQL {v} server the drill may create databases on"
            ),
            Error::ToolNotFound { tool, wanted } => match wanted {
                Some(v) => format!(
                    "install the PostgreSQL {v} client tools (Debian: apt-get install postgresql-client-{v}) \
                     or put {tool} on PATH"
                ),
                None => format!("install {tool} or put it on PATH"),
            },
            Error::TargetNotEmpty { .. } => {
                "restore somewhere else with --into NAME=TARGET, or pass --force to overwrite".to_string()
            }
            Error::UnsafeArchiveEntry { .. } => {
                "the archive was tampered with or not written by dr; nothing outside the target was touched".to_string()
            }
            Error::ExternalSymlink { source_name, .. } => format!(
                "nothing outside the target was touched; if the source really holds such links, set \
                 `external_symlinks = true` in its [[files]] section ({source_name:?}) and restore again"
            ),
            Error::Files { hint, .. } => hint.clone(),
            Error::FilesRootMissing { source_name, .. } => format!(
                "create the directory (or mount the volume that holds it), or fix `path` in the [[files]] section \
                 named {source_name:?}; `--only` backs up the other sources meanwhile"
            ),
            Error::NotADirectory { source_name, restore: false, .. } => {
                format!("point `path` of the [[files]] section named {source_name:?} at a directory")
            }
            Error::NotADirectory { source_name, restore: true, .. } => format!(
                "restore somewhere else with --into {source_name}=DIRECTORY, or move the file away (even --force \
                 never replaces a file with a directory)"
            ),
            Error::NotEnoughSpace { .. } => {
                "free some space, set [restore] temp_dir to a larger disk, or pass --jobs 1 to stream without a \
                 temporary file"
                    .to_string()
            }
            Error::RestoreIncomplete { hints, .. } => {
                let mut hints = hints.clone();
                hints.dedup();
                let again = "restore the failed sources again with --only NAME --force";
                if hints.is_empty() {
                    format!("fix the cause, then {again}")
                } else {
                    format!("{}; then {again}", hints.join("; "))
                }
            }
            Error::BackupIncomplete { .. } => {
                "everything else in the snapshot is whole; back up again when these files are quiet, or exclude                  files that are always being written (logs, databases) from the files source; a restore gives                  back what was read and names these files"
                    .to_string()
            }
            Error::Mismatch { .. } => "run with -v for details; this is a bug or a broken restore".to_string(),
            Error::ScratchIsProduction { .. } => {
                "point --scratch-url or [drill] scratch_url at a separate server, or leave it unset for an embedded \
                 scratch cluster"
                    .to_string()
            }
            Error::DrillFailed { hint: Some(hint), .. } => hint.clone(),
            Error::DrillFailed { hint: None, .. } => {
                "the lines above name each failed check and missed objective; the record is in the repository \
                 (`dr report`)"
                    .to_string()
            }
            Error::RetentionUnset => "set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, \
                                      keep_monthly, keep_yearly in [retention] (docs/retention.md), then try \
                                      `dr prune --dry-run`"
                .to_string(),
            Error::RetentionKeepsNothing { .. } => {
                "nothing was deleted; check [retention] and the snapshot times (`dr snapshots`), and report this as \
                 a bug"
                    .to_string()
            }
            Error::PruneUnreadable { .. } => {
                "nothing was deleted; run `dr verify --all` to see what is damaged, then restore the object from a \
                 copy or move the damaged manifest out of snapshots/, and run prune again"
                    .to_string()
            }
            Error::RunbookInvalid { .. } => {
                "nothing was run; fix the runbook (docs/runbooks.md describes every key), and check it with \
                 `dr recover --runbook FILE --dry-run`"
                    .to_string()
            }
            Error::RecoverNotConfirmed { interactive: false, .. } => {
                "pass --yes to confirm (see the plan first with --dry-run)".to_string()
            }
            Error::RecoverNotConfirmed { interactive: true, runbook } => {
                format!("nothing was changed; to go on, type the runbook's name ({runbook}) or \"yes\"")
            }
            Error::RecoverStepFailed { hint, runbook, .. } => {
                let resume = format!(
                    "`dr recover --runbook {} --resume` continues with this step (the steps before it are not run \
                     again; the report and the state file are listed above)",
                    runbook.display()
                );
                match hint {
                    Some(hint) => format!("{hint}; then {resume}"),
                    None => format!("fix the cause (the step's output is above and in the report), then {resume}"),
                }
            }
            Error::RecoverIncomplete { runbook, .. } => format!(
                "the report has each step's error; run one again with `dr recover --runbook {} --resume \
                 --from-step NAME`",
                runbook.display()
            ),
            Error::RecoverInterrupted { resume, .. } => {
                format!("the running step was stopped (its process group killed); continue with `{resume}`")
            }
            Error::ServiceUnhealthy { .. } => "check that `dr serve` runs and listens at [service] listen (its log \
                                               says why it stopped); `dr status` tells why it is not ready"
                .to_string(),
            Error::CheckFailed { .. } => {
                "fix each problem listed above (its own hint says how), then run `dr check` again".to_string()
            }
            Error::Cancelled => "nothing was committed; run the command again".to_string(),
            Error::Signal { command, .. } => interrupted_hint(command).to_string(),
            Error::Io { .. } => return None,
        };
        Some(hint)
    }

    /// True when the command did its work and only reports a problem with it (exit code 3): shown as a
    /// `warning:`, not an `error:`.
    pub fn is_warning(&self) -> bool {
        matches!(self, Error::BackupIncomplete { .. })
    }

    /// A child tool's failure; `hint` says what to do about this tool failing where it was started.
    pub fn child_failed(
        program: impl Into<String>,
        status: impl Into<String>,
        stderr: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Error::ChildFailed { program: program.into(), status: status.into(), stderr: stderr.into(), hint }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// A foreign failure with the words dr shows for it. The text is composed where the failure happens (a path, an
/// operation, at times the cause's own chain of reasons), which is why it is carried as text as well; the
/// original failure stays reachable as the [`std::error::Error::source`], for code that needs to inspect it.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct Failure {
    text: String,
    #[source]
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    pub fn new(text: impl Into<String>, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure { text: text.into(), cause: cause.into() }
    }
}

fn verify_problems(bad: usize, total: usize, bad_drills: usize, bad_streams: usize) -> String {
    let mut parts = vec![format!("{bad} of {total} snapshots")];
    if bad_drills > 0 {
        parts.push(crate::units::plural(bad_drills, "drill record"));
    }
    if bad_streams > 0 {
        parts.push(crate::units::plural(bad_streams, "change stream"));
    }
    let last = parts.pop().unwrap_or_default();
    match parts.is_empty() {
        true => format!("{last} have problems"),
        false => format!("{} and {last} have problems", parts.join(", ")),
    }
}

/// Why an environment override was refused, in the words of the check that refused it.
fn env_problem(problem: &Error) -> String {
    match problem {
        Error::ConfigInvalid(message) => message.clone(),
        other => other.to_string(),
    }
}

/// What an environment override replaces in the configuration file.
fn env_replaces(var: &str) -> &'static str {
    match var {
        "DR_RECIPIENTS" => "[encryption] recipients (a comma-separated list of age1... or ssh- public keys)",
        "DR_REPOSITORY_URL" => "[repository] url",
        "DR_IDENTITY_FILE" => "[encryption] identity_file",
        "DR_LIMIT_UPLOAD" => "[repository] limit_upload (bytes per second, e.g. \"10 MiB\")",
        "DR_LIMIT_DOWNLOAD" => "[repository] limit_download (bytes per second, e.g. \"10 MiB\")",
        _ => "a setting",
    }
}

/// What an interrupted command left behind, and what to do: each command's own consequences.
fn interrupted_hint(command: &str) -> &'static str {
    match command {
        "backup" => {
            "an interrupted backup leaves no snapshot: nothing was committed, and what it had written was deleted \
             (or is swept by the next `dr prune`); run it again"
        }
        "restore" => {
            "the targets may be half-written (files are renamed into place only at the end, but a database restored \
             with --jobs above 1 is not one transaction): run the restore again with --force"
        }
        "drill" => {
            "the drill removed its scratch databases and files and recorded that it was interrupted; production \
             was not touched; run it again"
        }
        "prune" => {
            "the snapshots already removed stay removed, the others are intact; the next `dr prune` finishes the \
             job"
        }
        "serve" => "the service stopped; jobs that were running committed nothing; start it again",
        _ => "nothing was changed; run the command again",
    }
}

/// A multi-line message indented under the line that names what it is about.
fn indented(message: &dyn std::fmt::Display) -> String {
    message.to_string().trim_end().replace('\n', "\n  ")
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The last lines of a child's stderr, indented under the message.
/// An error and every cause below it, on one line (`a: b: c`): HTTP and database client errors put the useful
/// part (connection refused, a certificate problem) in their causes, not in their own message.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(12)..];
    format!(":\n    {}", tail.join("\n    "))
}
