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
    // The dedup key of chunked files sources, made now where it can be kept: in the key file, or readable back
    // with the identity. Otherwise the first chunked backup makes it (and then needs `dedup_key_file`).
    let key_file = encryption.dedup_key_file.as_deref();
    if key_file.is_some() || encryption.identity_file.is_some() {
        let recipients = Recipients::parse(&encryption.recipients)?;
        let keys = ChunkKeys::create(&repo, &recipients, key_file, encryption.identity_file.is_some()).await?;
        match key_file {
            Some(path) => errln!("dedup key {} written to {}", keys.chunking.key_check, path.display()),
            None => {
                errln!("dedup key {} stored in the repository (readable with the identity)", keys.chunking.key_check)
            }
        }
    }
    Ok(())
}
