//! Every construction of a faststream-core broker or app in the benchmark, in one place, so that
//! a change in how they are built is made here once.

use faststream_core::{App, BrokerConfig, NatsBroker};

use crate::common::url;

/// The configuration for the server at `NATS_URL`.
fn config() -> BrokerConfig {
    BrokerConfig::new(url())
}

/// A broker for the server at `NATS_URL`, connected.
pub async fn connected_broker() -> anyhow::Result<NatsBroker> {
    Ok(NatsBroker::connect(config()).await?)
}

/// An app on a broker of its own (so its own connection) for the server at `NATS_URL`.
pub fn app() -> App {
    App::new(config())
}
