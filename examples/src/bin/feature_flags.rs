//! Bucket state in a service: orders are handled with the feature flags of bucket `flags` at
//! hand (a live `KvView`, caught up before any handler runs), the `after_startup` hook runs only
//! once every order already in bucket `orders` has been handled, and a lease written with a
//! per-key TTL shows up as `EXPIRED` when it ages out (nats-server 2.11+).
//!
//! ```text
//! cargo run -p examples --bin feature_flags
//! nats kv put flags audit '{"enabled":true}'
//! nats kv put orders o.1 book
//! ```

use std::time::Duration;

use faststream_core::kv::BucketConfig;
use faststream_core::{
    after_startup, on_startup, subscriber, App, BrokerConfig, KvMessage, KvView, NatsBroker,
    Operation,
};

#[derive(Debug, serde::Deserialize)]
struct Flag {
    enabled: bool,
}

#[subscriber("o.*", kv_watch = "orders")]
async fn on_order(order: KvMessage, flags: KvView<Flag>) {
    let audit = flags.get("audit").is_some_and(|flag| flag.enabled);
    if order.operation() == Operation::Put && audit {
        tracing::info!(order = order.key(), "audited order");
    }
}

#[subscriber(">", kv_watch = "leases")]
async fn on_lease(lease: KvMessage) {
    if lease.operation() == Operation::Expired {
        tracing::info!(lease = lease.key(), "lease expired");
    }
}

/// Declares the leases bucket with expiry markers before the subscribers declare it plainly.
#[on_startup]
async fn leases_bucket(broker: NatsBroker) -> anyhow::Result<()> {
    // The app connects its broker after the on_startup hooks: this one needs it now.
    broker.ensure_connected().await?;
    // Per-key TTLs and expiry markers need nats-server 2.11 or newer; older servers say so.
    let leases = BucketConfig::new("leases").limit_markers(Duration::from_secs(1));
    if let Err(error) = broker.key_value_with(leases).await {
        tracing::warn!(error = %faststream_core::error::chain(&error), "no per-key TTLs");
    }
    Ok(())
}

#[after_startup]
async fn ready(broker: NatsBroker, flags: KvView<Flag>) -> anyhow::Result<()> {
    tracing::info!(
        flags = flags.len(),
        revision = flags.revision(),
        "orders caught up; serving"
    );
    let leases = broker.key_value("leases").await?;
    if let Err(error) = leases
        .create_with_ttl("worker-1", "alive".into(), Duration::from_secs(5))
        .await
    {
        tracing::warn!(error = %faststream_core::error::chain(&error), "lease not written");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    App::new(BrokerConfig::from_env())
        .with_kv_view::<Flag>("flags", ">")
        .wait_for_catch_up(Duration::from_secs(30))
        .run()
        .await?;
    Ok(())
}
