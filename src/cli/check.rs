//! `dr check [--json]`: the configuration, schedules, paths, keys, repository and databases, all checked, every
//! problem on its own line with a hint. Exit 0 when all is well, 1 when anything is not.

use dr::check::{Area, CheckReport, Item};
use dr::config::ConfigOrigin;
use dr::{Error, Result};

use super::Context;
use super::output::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON report ({"items": [{area, subject, ok, detail, hint}]}).
    #[arg(long)]
    json: bool,
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let report = match context.load_config_for_check() {
        Ok(loaded) => {
            let loaded_from = match &loaded.origin {
                ConfigOrigin::File(path) => {
                    Item::ok(Area::Configuration, path.display().to_string(), "loads and is valid")
                }
                ConfigOrigin::Environment => {
                    Item::ok(Area::Configuration, "no file", "defaults and DR_* environment variables")
                }
            };
            let mut report = dr::check::check(&loaded.config).await;
            report.items.insert(0, loaded_from);
            report
        }
        // Without a configuration there is nothing else to check against.
        Err(e) => CheckReport { items: vec![Item::problem(Area::Configuration, "dr.toml", &e)] },
    };
    if args.json {
        print_json(&report)?;
    } else {
        print(&report, context.quiet);
    }
    let problems = report.problems().count();
    if problems == 0 { Ok(()) } else { Err(Error::CheckFailed { problems, checks: report.items.len() }) }
}

fn print(report: &CheckReport, quiet: bool) {
    for item in &report.items {
        if item.ok {
            if !quiet {
                outln!("ok       {:<13} {}: {}", item.area.label(), item.subject, item.detail);
            }
        } else {
            outln!("PROBLEM  {:<13} {}: {}", item.area.label(), item.subject, item.detail);
            if let Some(hint) = &item.hint {
                outln!("         {:<13} hint: {hint}", "");
            }
        }
    }
    if report.ok() && !quiet {
        outln!("all {} checks passed", report.items.len());
    }
}
