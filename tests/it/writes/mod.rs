//! Writes that cannot lose an update (guide chapter `writes`): JSON values, read-modify-write
//! under contention (tasks and processes), write-back from a handler, atomic commits of several
//! keys (nats-server 2.12+) racing other writers and a server kill, and what each reader sees of
//! a commit. One file per promise.

use faststream_core::kv::BucketConfig;
use faststream_core::KeyValue;
use faststream_testing::NatsServer;

use crate::common::connected_broker;

mod atomic;
mod atomic_race;
mod atomic_readers;
mod atomic_restart;
mod modify;
mod processes;
mod typed;
mod write_back;

/// `bucket` allowing atomic writes, keeping `history` revisions per key, through a fresh
/// connection.
async fn atomic_bucket(
    server: &NatsServer,
    bucket: &str,
    history: i64,
) -> anyhow::Result<KeyValue> {
    let broker = connected_broker(server).await?;
    Ok(broker
        .key_value_with(
            BucketConfig::new(bucket)
                .history(history)
                .allow_atomic(true),
        )
        .await?)
}
