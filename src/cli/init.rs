//! `dr init`

use std::sync::Arc;

use dr::chunks::ChunkKeys;
use dr::{Recipients, Repository, Result};

use super::Context;

pub async fn run(context: &Context) -> Result<()> {
    let loaded = context.load_config()?;
    let store = dr::store::open(&loaded.config.repository).await?;
    // A missing bucket or refused credentials say so here, before anything else.
    store.check_access().await?;
    let location = store.location().to_string();
    let repo = Repository::init(Arc::from(store)).await?;
    outln!("initialized repository {location}");
    let encryption = &loaded.config.encryption;
    if encryption.recipients.is_empty() {
        errln!("note: no recipients are configured yet; `dr keygen --output FILE` makes a key pair");
        return Ok(());
    }
    // The dedup key of chunked files sources: in the repository (to the recipients) and in this host's key file.
    let key_file = dr::engine::dedup_key_file(&loaded.config, &repo);
    let recipients = Recipients::parse(&encryption.recipients)?;
    let choice = dr::chunks::choice(&loaded.config.chunking)?;
    let has_identity = encryption.identity_file.is_some();
    let keys = ChunkKeys::create_chosen(&repo, &recipients, Some(&key_file), has_identity, &choice).await?;
    errln!("dedup key {} written to {} (mode 0600)", keys.chunking.key_check, key_file.display());
    Ok(())
}
