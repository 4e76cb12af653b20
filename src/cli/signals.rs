//! Stopping on SIGINT and SIGTERM.
//!
//! A command that can stop cleanly (a backup: it deletes what it wrote, and nothing was committed) receives a
//! cancellation token and gets [`GRACE`] to wind down; any other command is dropped at once. Either way the
//! process exits with the shell convention, 128 + the signal's number, so cron and systemd see the cause.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dr::Error;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long a cancelled command may take to clean up before the process exits regardless.
pub const GRACE: Duration = Duration::from_secs(10);
/// For `dr serve`, which applies its own grace period to running jobs: exit regardless after this long.
pub const SERVICE_BACKSTOP: Duration = Duration::from_secs(3600);

/// The stop request of this process: cancelled when a signal arrives, remembering which one.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    signal: Arc<OnceLock<(&'static str, i32)>>,
    /// The subcommand being run: the error's hint says what stopping *it* left behind.
    command: &'static str,
}

impl Stop {
    /// Starts listening for SIGINT and SIGTERM. Without handlers (which cannot really happen on Unix) the
    /// default disposition, exiting at once, still applies.
    pub fn listen(command: &'static str) -> Stop {
        let stop = Stop { command, ..Stop::default() };
        let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return stop;
        };
        let listener = stop.clone();
        tokio::spawn(async move {
            let received = tokio::select! {
                _ = interrupt.recv() => ("SIGINT", 2),
                _ = terminate.recv() => ("SIGTERM", 15),
            };
            let _ = listener.signal.set(received);
            tracing::warn!("{} received: stopping", received.0);
            listener.token.cancel();
        });
        stop
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves `grace` after a stop was requested, with the error the command ends with.
    pub async fn deadline(&self, grace: Duration) -> Error {
        self.token.cancelled().await;
        tokio::time::sleep(grace).await;
        self.error().unwrap_or(Error::Cancelled)
    }

    /// Replaces the engine's "cancelled" with the signal that caused it.
    pub fn explain(&self, error: Error) -> Error {
        match error {
            Error::Cancelled => self.error().unwrap_or(Error::Cancelled),
            other => other,
        }
    }

    fn error(&self) -> Option<Error> {
        self.signal.get().map(|&(name, number)| Error::Signal { name, number, command: self.command })
    }
}
