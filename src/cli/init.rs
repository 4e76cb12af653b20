//! `dr init`

use std::sync::Arc;

use dr::{Repository, Result};

use super::Context;

pub async fn run(context: &Context) -> Result<()> {
    let loaded = context.load_config()?;
    let store = dr::store::open(&loaded.config.repository).await?;
    // A missing bucket or refused credentials say so here, before anything else.
    store.check_access().await?;
    let location = store.location().to_string();
    Repository::init(Arc::from(store)).await?;
    outln!("initialized repository {location}");
    if loaded.config.encryption.recipients.is_empty() {
        errln!("note: no recipients are configured yet; `dr keygen --output FILE` makes a key pair");
    }
    Ok(())
}
