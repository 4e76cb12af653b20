//! `dr demo [--keep]`

use dr::demo::{DemoOptions, DemoStep};
use dr::{Result, units};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo's repository, key and files (the scratch servers are always stopped).
    #[arg(long)]
    keep: bool,
}

pub async fn run(args: Args) -> Result<()> {
    outln!("dr demo: back up a sample site and bring it back on scratch infrastructure\n");
    let mut print = |step: &DemoStep| {
        outln!("  ok  {:<66} {:>8}", step.title, units::duration(step.elapsed));
        if !step.detail.is_empty() {
            outln!("      {}", step.detail);
        }
    };
    let outcome = dr::demo::run(&DemoOptions { keep: args.keep }, &mut print).await?;
    outln!(
        "\nThe restored site is identical to the original ({} steps in {}).",
        outcome.steps.len(),
        units::duration(outcome.total)
    );
    if let Some(dir) = outcome.kept {
        outln!("Kept in {}", dir.display());
    }
    outln!("Next: write a dr.toml for your site (docs/configuration.md), then `dr init` and `dr backup`.");
    Ok(())
}
