//! Default log output, so a service logs like FastStream does without any set-up.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// A layer an exporter adds to the default log output (the OTLP span export).
pub(crate) type ExportLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` (default `info`),
/// plus the layer `export` makes if given, unless the program installed one already.
pub(crate) fn init_default(export: Option<impl FnOnce() -> ExportLayer>) {
    if tracing::dispatcher::has_been_set() {
        if export.is_some() {
            tracing::warn!(
                "a tracing subscriber is installed already: add `Otlp::layer()` to it, \
                or no spans are exported over OTLP"
            );
        }
        return;
    }
    let Some(export) = export else {
        init_fmt();
        return;
    };
    let export = export();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(env_filter());
    // The export layer first: it is a layer of the bare registry. Both layers filter for
    // themselves, so the order changes nothing else. Losing a race with another initialiser is
    // fine: theirs is used.
    let _ = tracing_subscriber::registry()
        .with(export)
        .with(fmt)
        .try_init();
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The plain output: one global filter, so disabled spans cost nothing at their call sites.
fn init_fmt() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
