//! `dr report [--since 7d] [--format md|html|json] [--output FILE]`
//!
//! Exit 0 whenever the report was made: what it says (failed drills, missed objectives) is for its reader, and
//! `dr drill` is the command whose exit code is a verdict.

use std::path::PathBuf;

use chrono::Utc;
use dr::Result;
use dr::report::{self, Format, Since};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start of the window: a duration before now (7d, 36h, 2w) or an RFC 3339 time. The window ends now.
    #[arg(long, value_name = "7d|36h|TIME", default_value = "7d", value_parser = parse_since)]
    since: Since,

    /// md: Markdown for chat and email; html: a self-contained page with charts; json: for machines.
    #[arg(long, value_enum, default_value_t = FormatArg::Md)]
    format: FormatArg,

    /// Print JSON (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    json: bool,

    /// Write the report to FILE (replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    #[value(alias = "markdown")]
    Md,
    Html,
    Json,
}

impl From<FormatArg> for Format {
    fn from(format: FormatArg) -> Format {
        match format {
            FormatArg::Md => Format::Markdown,
            FormatArg::Html => Format::Html,
            FormatArg::Json => Format::Json,
        }
    }
}

fn parse_since(text: &str) -> std::result::Result<Since, dr::report::NotAWindow> {
    text.parse()
}

pub async fn run(context: &Context, args: Args) -> Result<()> {
    let now = Utc::now();
    let window_start = args.since.start(now)?;
    let loaded = context.load_config()?;
    let identities = context.identities(&loaded.config, "report")?;
    let repo = context.open_repository(&loaded.config).await?;
    let report = report::gather(&repo, &identities, window_start, now, &loaded.config).await?;
    let format = if args.json { Format::Json } else { args.format.into() };
    let text = report.render(format)?;
    match &args.output {
        Some(path) => {
            report::write_atomically(path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "report written: {}", report.headline());
        }
        None => super::output::write_stdout(text.as_bytes()),
    }
    Ok(())
}
