//! `dr dedup-key [--output FILE]`

use std::path::PathBuf;

use dr::chunks::ChunkKeys;
use dr::{Error, Result};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the key here (mode 0600) instead of printing it: the file `[encryption] dedup_key_file` names on a
    /// backing-up host.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Gives a backing-up host the repository's dedup key: opened from `keys/dedup.age` with the identity, so it runs
/// where the identity is.
pub async fn run(context: &Context, args: Args) -> Result<()> {
    let loaded = context.load_config()?;
    let config = &loaded.config;
    let identities = context.identities(config, "read the repository's dedup key")?;
    let repo = context.open_repository(config).await?;
    let keys = ChunkKeys::load(&repo, None, Some(&identities)).await?.ok_or_else(|| {
        Error::Usage(format!(
            "repository {} has no dedup key yet: `dr init` makes one when recipients are configured, and so does \
             the first backup of a chunked files source",
            repo.location()
        ))
    })?;
    match args.output {
        Some(path) => {
            keys.key.write_file(&path)?;
            errln!(
                "wrote the dedup key of repository {} to {} (key check {}); on the backing-up host, set \
                 [encryption] dedup_key_file to its path",
                repo.location(),
                path.display(),
                keys.chunking.key_check
            );
        }
        None => outln!("{}", keys.key.to_hex()),
    }
    Ok(())
}
