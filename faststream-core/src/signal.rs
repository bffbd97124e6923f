//! The shutdown signals: SIGINT (Ctrl-C) and SIGTERM.

use crate::error::{Error, Result};

/// Signal handlers installed up front, so a signal that arrives during start-up is not lost
/// (and does not kill the process with the default action) but shuts the app down once started.
pub(crate) struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub(crate) fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).map_err(Error::Signal)?,
                interrupt: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the first signal; a second SIGINT after it exits the process at once.
    pub(crate) async fn wait(mut self) {
        #[cfg(unix)]
        {
            let name = tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            };
            tracing::info!("{name} received; shutting down (SIGINT again to exit at once)");
            tokio::spawn(async move {
                self.interrupt.recv().await;
                tracing::warn!("second SIGINT; exiting without finishing the shutdown");
                std::process::exit(130);
            });
        }
        #[cfg(not(unix))]
        {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "could not listen for Ctrl-C; shutting down");
            }
        }
    }
}
