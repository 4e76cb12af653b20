//! The command line: parse, call the engine, render. Each command is a small function in its own file.

#[macro_use]
mod output;

mod allocator;
mod backup;
mod check;
mod completions;
mod dedup_key;
mod demo;
mod drill;
mod healthcheck;
mod init;
mod keygen;
mod progress;
mod prune;
mod recover;
mod report;
mod restore;
mod serve;
mod signals;
mod snapshots;
mod status;
mod stream;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dr::config::{Config, LoadedConfig};
use dr::store::throttle::{Limits, Rate};
use dr::{Error, Identities, Repository, Result};

#[derive(Debug, Parser)]
#[command(
    name = "dr",
    version,
    about = "Backup and disaster recovery for a PostgreSQL-backed web site",
    long_about = "Backup and disaster recovery for a PostgreSQL-backed web site.\n\n\
                  Streams pg_dump output, roles, configuration and uploads through zstd and age encryption into a \
                  repository, restores them, and verifies them.",
    after_help = "Configuration: --config FILE, else $DR_CONFIG, else ./dr.toml, else /etc/dr/dr.toml \
                  (docs/configuration.md).\nExit codes: 0 ok, 1 failure, 2 usage error (also `dr recover` not \
                  confirmed, with no terminal to ask on), 3 backup committed but some files changed while being read \
                  (stored incomplete), 128+N stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors on stderr; no progress display.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// Write to the repository at most RATE bytes per second, e.g. 10MiB or 10MiB/s: the whole process's
    /// total, counted after compression and encryption. Replaces [repository] limit_upload for this run.
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    limit_upload: Option<Rate>,

    /// Read from the repository at most RATE bytes per second (restore, verify, drill, prune's repacking):
    /// the whole process's total. Replaces [repository] limit_download for this run.
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    limit_download: Option<Rate>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an age key pair: the identity file (private, mode 0600) and its public recipient.
    Keygen(keygen::Args),
    /// Create the repository named in the configuration.
    Init,
    /// Print (or write to a file) the repository's dedup key, for a backing-up host without the identity.
    DedupKey(dedup_key::Args),
    /// Take one snapshot of every configured source (or those named with --only).
    Backup(backup::Args),
    /// List the snapshots in the repository.
    Snapshots(snapshots::Args),
    /// Restore a snapshot: every source to its configured place, or elsewhere with --into.
    Restore(restore::Args),
    /// Read snapshots back and check every object: hash, decryption, decompression, content.
    Verify(verify::Args),
    /// Restore a snapshot into a scratch PostgreSQL, prove it complete, and measure RPO and RTO.
    Drill(drill::Args),
    /// Summarize drills and snapshots over a window: Markdown, HTML or JSON.
    Report(report::Args),
    /// Delete the snapshots [retention] does not keep, and what no snapshot references.
    Prune(prune::Args),
    /// Run a recovery runbook: restores, commands, checks, step by step, resumable (docs/runbooks.md).
    Recover(recover::Args),
    /// Continuous change capture for point-in-time restore: run, status, drop (docs/pitr.md).
    Stream(stream::Args),
    /// Run the appliance: scheduled jobs, health, metrics and status endpoints, until SIGTERM.
    Serve,
    /// The service's status at a glance (or, with no service running, the repository's RPO age).
    Status(status::Args),
    /// Exit 0 when the running service answers /healthz (or /readyz with --ready): a container HEALTHCHECK.
    Healthcheck(healthcheck::Args),
    /// Back up and restore a sample site on scratch PostgreSQL servers, and check the result.
    Demo(demo::Args),
    /// Check the configuration, schedules, paths, keys, repository and databases; list every problem at once.
    Check(check::Args),
    /// Print a shell completion script: `dr completions bash > /etc/bash_completion.d/dr`.
    Completions(completions::Args),
    /// Print the man page (roff): `dr man > /usr/share/man/man1/dr.1`, or `dr man | man -l -`.
    Man,
}

/// What every command gets: the global options and lazy access to configuration and repository.
pub struct Context {
    config_path: Option<PathBuf>,
    /// `--limit-upload` / `--limit-download`: they replace the configuration's limits in every load.
    limits: Limits,
    pub quiet: bool,
    /// Cancelled when SIGINT or SIGTERM arrives.
    pub stop: signals::Stop,
}

impl Context {
    /// The configuration, validated: the same checks, at the same moment, for every command.
    pub fn load_config(&self) -> Result<LoadedConfig> {
        let loaded = dr::settings::load(self.config_path.as_deref(), &|key| std::env::var(key).ok())?;
        Ok(override_limits(loaded, self.limits))
    }

    /// The configuration for `dr check`, which lists the problems of the schedules itself.
    pub fn load_config_for_check(&self) -> Result<LoadedConfig> {
        let loaded = dr::settings::load_for_check(self.config_path.as_deref(), &|key| std::env::var(key).ok())?;
        Ok(override_limits(loaded, self.limits))
    }

    /// The configuration file `load_config` reads (--config, $DR_CONFIG, ./dr.toml, /etc/dr/dr.toml), if any.
    pub fn config_file(&self) -> Option<PathBuf> {
        let chosen = self
            .config_path
            .clone()
            .or_else(|| std::env::var_os("DR_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
        chosen.or_else(|| dr::config::SEARCH_PATHS.iter().map(PathBuf::from).find(|p| p.exists()))
    }

    /// A loader that reads the configuration again each time (for `dr serve`'s reloads).
    pub fn loader(&self) -> impl Fn() -> Result<LoadedConfig> + Send + Sync + 'static {
        let path = self.config_path.clone();
        let limits = self.limits;
        move || {
            let loaded = dr::settings::load(path.as_deref(), &|key| std::env::var(key).ok())?;
            Ok(override_limits(loaded, limits))
        }
    }

    pub async fn open_repository(&self, config: &Config) -> Result<Repository> {
        let store = dr::store::open(&config.repository).await?;
        Repository::open(Arc::from(store)).await
    }

    /// pg_restore jobs: the flag, else `[restore] jobs`, else one per CPU.
    pub fn restore_jobs(config: &Config, flag: Option<u32>) -> usize {
        config.restore_jobs(flag.map(|j| j as usize))
    }

    pub fn identities(&self, config: &Config, action: &'static str) -> Result<Arc<Identities>> {
        Identities::load_configured(&config.encryption, action)
    }
}

/// The command line's rates over the configuration's and the environment's, where given. They were checked
/// as they were parsed, and are written back as plain bytes per second.
fn override_limits(mut loaded: LoadedConfig, limits: Limits) -> LoadedConfig {
    let repository = &mut loaded.config.repository;
    for (rate, key) in
        [(limits.upload, &mut repository.limit_upload), (limits.download, &mut repository.limit_download)]
    {
        if let Some(rate) = rate {
            *key = Some(rate.bytes_per_second().to_string());
        }
    }
    loaded
}

/// clap's parser for `--limit-upload RATE` and `--limit-download RATE`.
fn parse_rate(text: &str) -> std::result::Result<Rate, String> {
    text.parse()
}

/// clap's parser for `--to latest|ID|TIME`.
fn parse_selector(text: &str) -> std::result::Result<dr::Selector, dr::NotASelector> {
    text.parse()
}

pub fn main() -> ExitCode {
    allocator::cap_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // clap prints help and version to stdout with exit 0 (and the help, with exit 2, for a bare `dr`);
            // a usage error is rendered like every other error, with a hint, and exits 2.
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                }
                _ => output::print_usage_error(&e),
            }
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let progress_display = progress::Display::new(cli.quiet);
    // The demo narrates its own steps; the engine's info lines would only repeat them.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    // The service logs JSON lines when nobody watches a terminal (a container, journald): one event per line,
    // with the job name and outcome as fields, for the log pipeline to index.
    let json_logs = matches!(cli.command, Command::Serve) && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    output::init_logging(cli.verbose, cli.quiet, default_level, &progress_display, json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            output::print_error(&Error::io("starting the async runtime", e));
            return ExitCode::FAILURE;
        }
    };
    let grace = match cli.command {
        // Prune stops between two deletions, and releases its lock. Recover kills its step's process group and
        // saves its state.
        Command::Backup(_) | Command::Drill(_) | Command::Prune(_) | Command::Recover(_) => signals::GRACE,
        // The service winds down on its own ([service] grace, then cancellation); this is only a backstop.
        Command::Serve => signals::SERVICE_BACKSTOP,
        _ => Duration::ZERO,
    };
    let result = runtime.block_on(async {
        let stop = signals::Stop::listen(command_name(&cli.command));
        let limits = Limits { upload: cli.limit_upload, download: cli.limit_download };
        let context = Context { config_path: cli.config, limits, quiet: cli.quiet, stop: stop.clone() };
        let result = tokio::select! {
            result = run(cli.command, &context, &progress_display) => result.map_err(|e| stop.explain(e)),
            error = stop.deadline(grace) => Err(error),
        };
        // A command dropped by a signal deletes its lock (or lock attempt) in the background: let it finish.
        dr::repo::lock::settle(Duration::from_secs(5)).await;
        result
    });
    progress_display.clear();
    // A stopped command may leave a blocking thread waiting on a child's pipe; don't wait for it. Its children
    // see their pipes close when this process exits.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // A closed pipe on stdout is not a failure (the reader had enough); any other write error is.
    let result = result.and_then(|()| output::stdout_failure().map_or(Ok(()), Err));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}

/// The subcommand's name, as typed: for messages that depend on what was running.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Drill(_) => "drill",
        Command::Prune(_) => "prune",
        Command::Recover(_) => "recover",
        Command::Serve => "serve",
        // Commands that read, or write one object atomically: stopping them leaves nothing to clean up.
        _ => "other",
    }
}

async fn run(command: Command, context: &Context, display: &progress::Display) -> Result<()> {
    match command {
        Command::Keygen(args) => keygen::run(args),
        Command::Init => init::run(context).await,
        Command::DedupKey(args) => dedup_key::run(context, args).await,
        Command::Backup(args) => backup::run(context, args, display).await,
        Command::Snapshots(args) => snapshots::run(context, args).await,
        Command::Restore(args) => restore::run(context, args, display).await,
        Command::Verify(args) => verify::run(context, args, display).await,
        Command::Drill(args) => drill::run(context, args, display).await,
        Command::Report(args) => report::run(context, args).await,
        Command::Prune(args) => prune::run(context, args, display).await,
        Command::Recover(args) => recover::run(context, args, display).await,
        Command::Stream(args) => stream::run(context, args).await,
        Command::Serve => serve::run(context).await,
        Command::Status(args) => status::run(context, args).await,
        Command::Healthcheck(args) => healthcheck::run(context, args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Check(args) => check::run(context, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
