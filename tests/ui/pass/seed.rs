//! The seed program, as a user writes it. Its `main` only runs the app when
//! `FASTSTREAM_UI_RUN` is set, because trybuild runs every pass case.

use faststream_core::{after_startup, subscriber, App, KvWatch, NatsBroker, BrokerConfig};

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
    if std::env::var_os("FASTSTREAM_UI_RUN").is_some() {
        App::new(BrokerConfig::from_env()).run().await?;
    }
    Ok(())
}
