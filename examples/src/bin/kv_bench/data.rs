//! Writing the workloads' data: fresh buckets filled before a consumer starts, writers running
//! alongside one, and removing the buckets after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::connected_broker;
use crate::common::{flag_json, url, Rng};

/// Writes `n` entries `v<i>` over `keys` keys to a fresh bucket with history 64.
pub async fn prefill(bucket: &str, n: usize, keys: usize) -> anyhow::Result<()> {
    prefill_with(bucket, n, keys, |i| format!("v{i}").into()).await
}

/// Writes one entry `{"enabled":true,"n":i}` to each of `keys` keys `k.0` ... of a fresh bucket.
pub async fn prefill_flags(bucket: &str, keys: usize) -> anyhow::Result<()> {
    prefill_with(bucket, keys, keys, |i| flag_json(i as u64)).await
}

/// Writes `n` entries over `keys` keys `k.0` ... to a fresh bucket with history 64, entry `i`
/// with the value `value(i)` (publishes pipelined, 512 acks outstanding).
async fn prefill_with(
    bucket: &str,
    n: usize,
    keys: usize,
    value: impl Fn(usize) -> bytes::Bytes,
) -> anyhow::Result<()> {
    let client = async_nats::connect(url()).await?;
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(format!("KV_{bucket}")).await;
    let broker = connected_broker().await?;
    broker
        .key_value_with(faststream_core::kv::BucketConfig::new(bucket).history(64))
        .await?;
    write_pipelined(&js, bucket, n, keys, value).await
}

/// Puts `n` entries over `keys` keys `k.0` ... of `bucket`, entry `i` with the value
/// `value(i)`, as fast as the server takes them: publishes pipelined, 512 acks outstanding.
pub async fn write_pipelined(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    n: usize,
    keys: usize,
    value: impl Fn(usize) -> bytes::Bytes,
) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(512);
    for i in 0..n {
        let subject = format!("$KV.{bucket}.k.{}", i % keys);
        acks.push(js.publish(subject, value(i)).await?);
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Puts `rate` changes a second to random keys `k.<i>` (of `keys`) of `bucket`, in batches every
/// 10 ms (publishes pipelined, then their acks awaited), until `stop`; returns the puts
/// acknowledged and the time taken.
pub async fn write_paced(
    js: async_nats::jetstream::Context,
    bucket: String,
    keys: usize,
    rate: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, Duration)> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut ticker = tokio::time::interval(TICK);
    let mut acks = Vec::with_capacity(per_tick);
    let mut written = 0;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        for _ in 0..per_tick {
            let subject = format!("$KV.{bucket}.k.{}", rng.below(keys));
            acks.push(js.publish(subject, flag_json(rng.next() % 1000)).await?);
        }
        for ack in acks.drain(..) {
            ack.await?;
            written += 1;
        }
    }
    Ok((written, started.elapsed()))
}

/// Deletes the bucket's stream `KV_<bucket>` (if it is gone already, nothing happens).
pub async fn drop_bucket(bucket: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url()).await?;
    let _ = async_nats::jetstream::new(client)
        .delete_stream(format!("KV_{bucket}"))
        .await;
    Ok(())
}
