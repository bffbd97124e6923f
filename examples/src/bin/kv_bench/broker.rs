//! Every construction of a faststream-core broker or app in the benchmark, in one place, so that
//! a change in how they are built is made here once.

use faststream_core::{App, NatsBroker};

use crate::common::url;

/// A broker for the server at `NATS_URL`, not connected yet.
pub fn broker() -> NatsBroker {
    NatsBroker::new(url())
}

/// A broker for the server at `NATS_URL`, connected.
pub async fn connected_broker() -> anyhow::Result<NatsBroker> {
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    Ok(broker)
}

/// An app on a broker of its own (so its own connection) for the server at `NATS_URL`.
pub fn app() -> App {
    App::new(NatsBroker::new(url()))
}
