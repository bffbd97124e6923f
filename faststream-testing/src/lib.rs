//! Real `nats-server` processes for tests, for any NATS client.
//!
//! [`ServerBinary::discover`] finds the nats-server binaries on this machine (or the ones named by
//! `NATS_SERVER_BINS`); [`NatsServer::start`] runs one with JetStream on an ephemeral `127.0.0.1`
//! port and a temporary store directory, can [`kill`](NatsServer::kill),
//! [`stop`](NatsServer::stop) and [`restart`](NatsServer::restart) it, reads its monitoring
//! endpoint ([`NatsServer::varz`], [`NatsServer::monitor`]), and removes everything when dropped.
//! [`ServerConfig`] adds to the generated config file; [`NatsCluster`] runs several servers as
//! one JetStream cluster; [`TcpProxy`] cuts client connections without touching the server;
//! [`http_get`] reads a service's own HTTP endpoints (`/metrics`, `/health/ready`);
//! [`wait_for`] polls until a condition holds, for any test; [`Chromium`] renders a page in a
//! headless browser ([`Chromium::dump_dom`], [`Chromium::screenshot`]), for pages that only show
//! their content once their scripts ran, such as the AsyncAPI page.
//!
//! A test that needs a version this machine lacks ([`ServerVersions`], [`require_servers`])
//! fails naming the version and how to get it, never passes without running; the
//! [`ALLOW_SKIPS_ENV`] opt-out turns that into a skip recorded in [`SkipPolicy::records_dir`].
//!
//! ```no_run
//! use faststream_testing::{NatsServer, ServerBinary};
//!
//! #[tokio::test]
//! async fn survives_a_restart() -> anyhow::Result<()> {
//!     faststream_testing::init_test_logging();
//!     for binary in ServerBinary::discover()? {
//!         let mut server = NatsServer::start(&binary).await?;
//!         // ... connect a client to server.url(), create a bucket ...
//!         server.restart().await?; // Same port, same store: JetStream state survives.
//!         assert_eq!(server.varz().await?["version"], binary.version.as_str());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A server's output goes to a log file in its temporary directory ([`NatsServer::log_path`]),
//! so tests stay quiet; when a start fails, the error carries the last lines of that log.

#![warn(missing_docs, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod binary;
mod browser;
mod cluster;
mod config;
mod http;
mod logging;
mod monitor;
mod ports;
mod proxy;
mod required;
mod server;
mod wait;

pub use binary::{ServerBinary, NATS_SERVER_BINS_ENV, NATS_SERVER_BIN_ENV};
pub use browser::{Chromium, CHROMIUM_ENV};
pub use cluster::NatsCluster;
pub use config::ServerConfig;
pub use http::{free_local_addr, http_get, HttpResponse};
pub use logging::init_test_logging;
pub use proxy::TcpProxy;
pub use required::{
    current_test_name, require_servers, server_missing, ServerVersions, SkipPolicy,
    ALLOW_SKIPS_ENV, SKIP_RECORDS_DIR_ENV,
};
pub use server::NatsServer;
pub use wait::{wait_for, Probe, POLL_INTERVAL};

/// `text` cut to `max_chars` characters, for quoting program output in error messages.
fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}
