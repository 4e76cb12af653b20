//! `dr serve`: run the appliance until SIGTERM/SIGINT (exit 0 after a clean stop); SIGHUP reloads the
//! configuration and schedules, keeping the running ones when the new configuration is bad.

use std::sync::Arc;

use dr::Result;
use dr::service::{ServeOptions, serve};
use tokio::signal::unix::{SignalKind, signal};

use super::Context;

pub async fn run(context: &Context) -> Result<()> {
    // Fails here, before listening, on a bad configuration.
    context.load_config()?;
    let loader = context.loader();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let _ = reload_tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!("SIGHUP will not reload the configuration: {e}"),
    }
    serve(ServeOptions {
        load: Arc::new(move || loader().map(|l| l.config)),
        stop: context.stop.token(),
        reload: reload_rx,
    })
    .await
}
