//! `dr stream run | status | drop`: continuous change capture for point-in-time restore (docs/pitr.md).

use chrono::Utc;
use dr::{Result, units};

use super::Context;
use super::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Capture every committed change of the continuous sources into the repository, until SIGINT or SIGTERM
    /// (what `dr serve` runs; for a host that runs backups from cron).
    Run {
        /// Only these sources (repeatable).
        #[arg(long = "only", value_name = "NAME")]
        only: Vec<String>,
    },
    /// How far each continuous source's stored stream reaches, and what its slot keeps on the server.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the replication slots and publications dr made for these sources, so that the server stops
    /// keeping WAL for them: do this when continuous capture is switched off. Stored segments stay.
    Drop {
        /// The sources (postgres source names).
        #[arg(required = true, value_name = "NAME")]
        sources: Vec<String>,
    },
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let loaded = context.load_config()?;
    let config = &loaded.config;
    let repo = context.open_repository(config).await?;
    match args.action {
        Action::Run { only } => dr::stream::run::run(config, &repo, &only, context.stop.token(), true, &|_| {}).await,
        Action::Status { json } => {
            let statuses = dr::stream::run::status(config, &repo, &[]).await?;
            if json {
                return print_json(&statuses);
            }
            if statuses.is_empty() {
                outln!("no postgres source has continuous = true");
            }
            let now = Utc::now();
            for status in &statuses {
                let Some(generation) = &status.generation else {
                    outln!("{}: no stream yet (start `dr serve` or `dr stream run`)", status.source);
                    continue;
                };
                outln!("{}: generation {generation}, slot {}", status.source, status.slot.as_deref().unwrap_or("-"));
                outln!(
                    "  stored: {}, {}; newest commit {}",
                    units::plural(status.segments, "segment"),
                    units::bytes(status.stored_bytes),
                    status.newest_commit.map_or("-".to_string(), |t| units::relative(t, now))
                );
                outln!(
                    "  restorable up to: {}",
                    status.covered_until.map_or("-".to_string(), |t| format!(
                        "{} ({})",
                        t.to_rfc3339(),
                        units::age(t, now)
                    ))
                );
                match (&status.server_error, status.slot_retained_bytes, status.slot_lost) {
                    (Some(error), _, _) => outln!("  slot: {error}"),
                    (None, _, Some(true)) => {
                        outln!("  slot: LOST (the server removed WAL it needed); restart the capture")
                    }
                    (None, Some(bytes), _) => {
                        outln!("  slot: the server keeps {} of WAL for it", units::bytes(bytes.max(0) as u64))
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Action::Drop { sources } => {
            let dropped = dr::stream::run::drop_slots(config, &repo, &sources).await?;
            if dropped.is_empty() {
                outln!("no replication slot of dr's was left on the server");
            }
            for slot in dropped {
                outln!("dropped replication slot {slot} and its publication");
            }
            Ok(())
        }
    }
}
