//! Default log output, so a service logs like FastStream does without any set-up.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` (default `info`),
/// unless the program installed one already.
pub(crate) fn init_default() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Losing a race with another initialiser is fine: theirs is used.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
