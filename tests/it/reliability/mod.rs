//! Fault injection on real servers: SIGKILL and restart (same port and store), dropped
//! connections, restarts during the initial snapshot and under a running writer, twenty in a
//! row, a 20 s outage, twenty cuts with 64 workers, a bucket deleted and created again, a memory
//! stream whose sequence goes back, a closed connection. Asserted from what the handlers
//! recorded and from the server's consumer list: nothing lost, duplicated or stale, no history
//! replayed, no consumer leaked, the first entry within 5 s of the server being back.

use std::time::{Duration, Instant};

use crate::common::{
    consumer_configs, jetstream, on_each_server, Events, RunningApp, EVENT_TIMEOUT,
};
use anyhow::Context as _;
use bytes::Bytes;
use faststream_core::kv::BucketConfig;
use faststream_core::{App, HookStage, KvMessage, KvWatch, State};
use faststream_testing::{NatsServer, TcpProxy};

/// Records `key@revision=value`.
async fn record(message: KvMessage, State(events): State<Events>) {
    events.push(format!(
        "{}@{}={}",
        message.key(),
        message.revision(),
        String::from_utf8_lossy(message.value())
    ));
}

/// Like [`record`], slowly: 1 ms per entry, so that a snapshot takes a while.
async fn record_slowly(message: KvMessage, events: State<Events>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    record(message, events).await;
}

fn revision(event: &str) -> u64 {
    event
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('='))
        .and_then(|(revision, _)| revision.parse().ok())
        .unwrap_or(0)
}

/// Creates `bucket` with `history` through a fresh connection.
async fn create_bucket(server: &NatsServer, bucket: &str, history: i64) -> anyhow::Result<()> {
    let broker = crate::common::connected_broker(server).await?;
    broker
        .key_value_with(BucketConfig::new(bucket).history(history))
        .await?;
    Ok(())
}

/// Puts through a fresh connection, retrying until the server answers.
async fn put_fresh(
    server: &NatsServer,
    bucket: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<u64> {
    faststream_testing::wait_for("the put after the restart", EVENT_TIMEOUT, || async {
        let store = jetstream(server).await?.get_key_value(bucket).await?;
        anyhow::Ok(Some(store.put(key, Bytes::from(value.to_owned())).await?))
    })
    .await
}

/// SIGKILL, restart on the same port and store; returns when the server accepts clients.
async fn crash_and_restart(server: &mut NatsServer) -> anyhow::Result<Instant> {
    server.kill().await?;
    server.restart().await?;
    Ok(Instant::now())
}

/// The first entry after a fault must arrive within this long of the server accepting
/// connections again (measured figures are far lower; see the printed lines).
const RESUME_BOUND: Duration = Duration::from_secs(5);

/// Entries of subscriber `name`, recorded as `name key@revision=value`.
#[derive(Clone, Default)]
struct Named(Events);

/// A handler recording `name key@revision=value`.
fn record_as(
    name: &'static str,
) -> impl Fn(
    KvMessage,
    State<Named>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |message, State(named)| {
        Box::pin(async move {
            named.0.push(format!(
                "{name} {}@{}={}",
                message.key(),
                message.revision(),
                String::from_utf8_lossy(message.value())
            ));
        })
    }
}

/// The events of subscriber `name`, without the name.
fn of(events: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{name} ");
    events
        .iter()
        .filter_map(|event| event.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Waits until the bucket's stream has exactly `expected` consumers, at most `within`.
async fn wait_for_consumers(
    server: &NatsServer,
    bucket: &str,
    expected: usize,
    within: Duration,
) -> anyhow::Result<()> {
    faststream_testing::wait_for(
        &format!("{expected} consumers on `{bucket}`"),
        within,
        || async {
            let names: Vec<String> = consumer_configs(server, bucket)
                .await?
                .into_iter()
                .map(|config| config.name.unwrap_or_default())
                .collect();
            let seen = format!("{} consumers: {names:?}", names.len());
            anyhow::Ok(((names.len() == expected).then_some(()), seen))
        },
    )
    .await
}

/// Records `key@revision=round` (the round is the value's first byte), 1 ms per entry.
async fn record_round(message: KvMessage, State(events): State<Events>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let round = message
        .value()
        .first()
        .map_or('?', |byte| char::from(*byte));
    events.push(format!("{}@{}={round}", message.key(), message.revision()));
}

mod dropped_handles;
mod outages;
mod recreations;
mod restarts;
mod streams;
