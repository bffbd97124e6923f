//! A consumer group in a service: run it two or three times and each order is billed once, by
//! one instance, the changes of one order in revision order across all of them. Stop one
//! (Ctrl-C) and the others take over its orders at once; kill one (`kill -9`) and they do
//! after the session timeout. Needs nats-server 2.11 or newer.
//!
//! ```text
//! cargo run -p examples --bin billing      # in two or three terminals
//! nats kv put shop orders.1 '{"amount":12}'
//! nats kv put shop orders.2 '{"amount":-1}'   # refused three times, then a dead letter
//! ```

use std::time::Duration;

use faststream_core::kv::group::GroupSettings;
use faststream_core::{
    after_startup, subscriber, App, BrokerConfig, Json, KvWatch, NatsBroker, Path,
};

#[derive(Debug, serde::Deserialize)]
struct Order {
    amount: i64,
}

#[subscriber("orders.{id}", kv_watch = KvWatch::new("shop").group(
    GroupSettings::new("billing").max_attempts(3).backoff([Duration::from_millis(500)])
))]
async fn bill(Json(order): Json<Order>, Path(id): Path<u64>) -> anyhow::Result<()> {
    anyhow::ensure!(
        order.amount >= 0,
        "order {id}: negative amount {}",
        order.amount
    );
    tracing::info!(id, amount = order.amount, "billed");
    Ok(())
}

/// Shows where the group stands: its members, and the orders given up so far.
#[after_startup]
async fn report(broker: NatsBroker) -> anyhow::Result<()> {
    let group = broker.kv_group("shop", "billing").await?;
    let info = group.info().await?;
    tracing::info!(
        members = info.members.len(),
        pending = info.pending(),
        dead_letters = info.dead_letters,
        "group `billing` on bucket `shop`"
    );
    for letter in group.dead_letters().await? {
        tracing::warn!(
            key = letter.key,
            revision = letter.revision,
            error = letter.error,
            "given up"
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    App::new(BrokerConfig::from_env()).run().await?;
    Ok(())
}
