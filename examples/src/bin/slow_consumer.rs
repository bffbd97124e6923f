//! A subscriber slower than the writers: it handles each entry of bucket `slow` in
//! `SLOW_HANDLER_MS` milliseconds (default 1). Memory stays bounded because the server's flow
//! control holds back what the watch has not consumed; nothing is buffered without limit.
//!
//! ```text
//! SLOW_HANDLER_MS=5 cargo run -p examples --bin slow_consumer
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use faststream_core::{subscriber, App, BrokerConfig, KvMessage};

static HANDLER_DELAY: LazyLock<Duration> = LazyLock::new(|| {
    let millis = std::env::var("SLOW_HANDLER_MS")
        .ok()
        .and_then(|millis| millis.parse().ok())
        .unwrap_or(1);
    Duration::from_millis(millis)
});

#[subscriber(">", kv_watch = "slow")]
async fn slow(message: KvMessage) {
    tracing::debug!(key = message.key(), "handling slowly");
    tokio::time::sleep(*HANDLER_DELAY).await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    App::new(BrokerConfig::from_env()).run().await?;
    Ok(())
}
