//! Default log output, so a service logs like FastStream does without any set-up.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` (default `info`),
/// unless the program installed one already.
#[cfg(not(feature = "otlp"))]
pub(crate) fn init_default() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    init_fmt();
}

/// As without the `otlp` feature, plus the OTLP layer if the app exports over OTLP.
#[cfg(feature = "otlp")]
pub(crate) fn init_default(otlp: Option<&crate::otlp::Otlp>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    if tracing::dispatcher::has_been_set() {
        if otlp.is_some() {
            tracing::warn!(
                "a tracing subscriber is installed already: add `Otlp::layer()` to it, \
                or no spans are exported over OTLP"
            );
        }
        return;
    }
    let Some(otlp) = otlp else {
        init_fmt();
        return;
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp.layer())
        .try_init();
}

fn init_fmt() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Losing a race with another initialiser is fine: theirs is used.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
