//! `dr prune [--dry-run] [--json]`

use std::time::Duration;

use dr::engine::{Action, PruneOptions, PruneReport};
use dr::retention::Policy;
use dr::store::UploadKind;
use dr::{Error, Result, units};

use super::Context;
use super::output::print_json;
use super::progress::Display;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what would be deleted and why, and delete nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args, display: &Display) -> Result<()> {
    let loaded = context.load_config()?;
    // Said first: without a policy, the identity and the repository do not matter yet.
    if Policy::from_config(&loaded.config.retention).is_empty() {
        return Err(Error::RetentionUnset);
    }
    let identities = context.identities(&loaded.config, "prune")?;
    let repo = context.open_repository(&loaded.config).await?;
    let display = if args.json { display.silent() } else { display.clone() };
    let options = PruneOptions { dry_run: args.dry_run, cancel: context.stop.token() };
    let report = dr::engine::prune(&loaded.config, &repo, &identities, &options, &display).await?;
    display.clear();
    if args.json {
        return print_json(&report);
    }
    print(&report);
    Ok(())
}

const TIME: &str = "%Y-%m-%d %H:%M:%S";

fn print(report: &PruneReport) {
    let grace = units::duration(Duration::from_secs(report.orphan_grace_seconds));
    if report.dry_run {
        outln!("dry run: nothing is deleted");
    }
    outln!("policy: {}; orphan grace {grace}", report.policy);
    for snapshot in &report.snapshots {
        let (verb, size) = match snapshot.action {
            Action::Keep => ("keep  ", String::new()),
            Action::Remove => (
                "remove",
                format!(" ({}, {})", units::plural(snapshot.objects, "object"), units::bytes(snapshot.bytes)),
            ),
        };
        outln!("{verb}  {}  {}  {}{size}", snapshot.id, snapshot.time.format(TIME), snapshot.reasons.join(", "));
    }
    for group in &report.orphans {
        let what = format!("{}, {}", units::plural(group.keys.len(), "object"), units::bytes(group.bytes));
        let prefix = &group.prefix;
        match (group.action, group.last_activity) {
            (Action::Remove, _) => outln!("delete  {prefix} ({what}): {}", group.reason),
            (Action::Keep, Some(last)) => {
                let until = last + chrono::Duration::seconds(report.orphan_grace_seconds as i64);
                outln!(
                    "leave   {prefix} ({what}): {}; younger than {grace}, until {}",
                    group.reason,
                    until.format(TIME)
                )
            }
            (Action::Keep, None) => outln!("leave   {prefix} ({what}): {}; its age is unknown", group.reason),
        }
    }
    for upload in &report.uploads {
        let started = upload.initiated.map_or(String::new(), |t| format!(", started {}", t.format(TIME)));
        match upload.kind {
            UploadKind::Multipart => outln!("abort   multipart upload of {}{started}", upload.key),
            UploadKind::PartialFile => outln!("delete  partial file of {}{started}", upload.key),
        }
    }
    for directory in &report.empty_directories {
        outln!("delete  empty directory {directory}/");
    }
    for stream in &report.streams {
        let what = format!("{}, {}", units::plural(stream.segments, "change segment"), units::bytes(stream.bytes));
        let name = format!("{}/{}", stream.source, stream.generation);
        match stream.whole {
            true => outln!("delete  change stream {name} ({what}): no kept snapshot is a base of it"),
            false => outln!("delete  the start of change stream {name} ({what}): no kept snapshot needs it"),
        }
    }
    for warning in &report.warnings {
        outln!("warning: {warning}");
    }
    let totals = &report.totals;
    let mut summary = format!(
        "{} {} of {} and {} ({}), {} {}",
        if report.dry_run { "would remove" } else { "removed" },
        totals.snapshots_removed,
        units::plural(totals.snapshots_removed + totals.snapshots_kept, "snapshot"),
        units::plural(totals.objects_deleted, "object"),
        units::plural(totals.orphans_deleted, "orphan"),
        units::bytes(totals.bytes_freed),
        if report.dry_run { "to free" } else { "freed" },
    );
    let partial_files = report.uploads.iter().filter(|u| u.kind == UploadKind::PartialFile).count();
    let multipart = report.uploads.len() - partial_files;
    if multipart > 0 {
        let verb = if report.dry_run { "to abort" } else { "aborted" };
        summary.push_str(&format!("; {} {verb}", units::plural(multipart, "multipart upload")));
    }
    let verb = if report.dry_run { "to delete" } else { "deleted" };
    if partial_files > 0 {
        summary.push_str(&format!("; {} of killed uploads {verb}", units::plural(partial_files, "partial file")));
    }
    if totals.empty_directories_removed > 0 {
        let directories = units::plural(totals.empty_directories_removed, "empty directory");
        summary.push_str(&format!("; {directories} {verb}"));
    }
    if totals.attempts_expired > 0 {
        let verb = if report.dry_run { "to expire" } else { "expired" };
        summary.push_str(&format!(
            "; {} older than 90 days {verb}",
            units::plural(totals.attempts_expired, "backup attempt record")
        ));
    }
    if totals.orphans_young > 0 {
        summary.push_str(&format!("; {} younger than {grace} left", units::plural(totals.orphans_young, "orphan")));
    }
    outln!("{summary}");
}
