//! The quickstart service: writes `Hello!` to `key` in `bucket` once started, and watches it.
//!
//! ```text
//! cargo run -p examples --bin quickstart        # NATS_URL defaults to nats://127.0.0.1:4222
//! ```

use faststream_core::{after_startup, subscriber, App, BrokerConfig, KvWatch, NatsBroker};

#[after_startup]
async fn setup(broker: NatsBroker) -> anyhow::Result<()> {
    let key_value = broker.key_value("bucket").await?;
    key_value.put("key", "Hello!".into()).await?;
    Ok(())
}

#[subscriber("key", kv_watch = "bucket")]
async fn handler(msg: String) {
    assert_eq!(msg, "Hello!");
}

#[subscriber("key", kv_watch = KvWatch::new("bucket").declare(false))]
async fn detailed(msg: String) -> anyhow::Result<()> {
    tracing::info!(%msg, "changed");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    App::new(BrokerConfig::from_env()).run().await?;
    Ok(())
}
