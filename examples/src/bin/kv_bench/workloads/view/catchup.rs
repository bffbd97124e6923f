//! `catchup IMPL BUCKET N`, the child side of the view's catch-up: connects, then times getting
//! every key's latest value of a bucket holding N keys (bucket lookup, watch and catch-up); RSS
//! is taken after connecting and again once caught up, with the map (and the watch) still held.

use std::time::Instant;

use anyhow::Context as _;
use faststream_core::kv::WatchEvent;
use faststream_core::KvWatch;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::{
    RAW_BY_SEQUENCE, RAW_COUNT, RAW_MAP, RAW_RANGES, VIEW, VIEW_BATCHED, VIEW_RAW, WATCH,
    WATCH_BATCHED,
};
use crate::broker::connected_broker;
use crate::common::{bucket, url, Flag, TIMEOUT};
use crate::measure::{rss_bytes, usage};
use crate::workloads::FRAMEWORK;

/// One catch-up; its JSON line.
pub async fn view_catchup(implementation: &str, n: usize) -> anyhow::Result<Value> {
    let bucket = bucket();
    let mut broker = None;
    let mut client = None;
    if implementation.starts_with(FRAMEWORK) {
        broker = Some(connected_broker().await?);
    } else {
        client = Some(async_nats::connect(url()).await?);
    }
    let broker = || {
        broker
            .as_ref()
            .context("the framework's variants connect a broker")
    };
    let rss_before = rss_bytes()?;
    let (cpu_before, _) = usage();
    let started = Instant::now();
    // What each side holds once caught up, kept until RSS is read.
    let held: Box<dyn std::any::Any>;
    // Consumers the framework's watch re-created during the catch-up (a gap: entries lost).
    let mut recreations = 0;
    let keys = match (implementation, client) {
        (VIEW | VIEW_BATCHED, _) => {
            let options = faststream_core::kv::KvViewOptions::new(bucket.clone())
                .batched_catch_up(implementation == VIEW_BATCHED);
            let view = broker()?.kv_view::<Flag>(options, ">").await?;
            let keys = view.len();
            recreations = faststream_core::kv::RecreateReason::ALL
                .iter()
                .map(|reason| view.status().recreations(*reason))
                .sum();
            held = Box::new(view);
            keys
        }
        (VIEW_RAW, _) => {
            let view = broker()?.kv_view_raw(bucket.clone(), ">").await?;
            let keys = view.len();
            held = Box::new(view);
            keys
        }
        (WATCH | WATCH_BATCHED, _) => {
            let options =
                KvWatch::new(bucket.clone()).batched_catch_up(implementation == WATCH_BATCHED);
            let mut watcher = broker()?.kv_watch(">", options).await?;
            let mut seen = 0;
            loop {
                match tokio::time::timeout(TIMEOUT, watcher.next_event())
                    .await?
                    .context("watch ended")?
                {
                    WatchEvent::Entry(entry) => {
                        std::hint::black_box(&entry);
                        seen += 1;
                    }
                    WatchEvent::CaughtUp(_) => break,
                    WatchEvent::StartedOver => seen = 0,
                    _ => {}
                }
            }
            held = Box::new(watcher);
            seen
        }
        (RAW_COUNT | RAW_MAP, Some(client)) => {
            let store = async_nats::jetstream::new(client)
                .get_key_value(&bucket)
                .await?;
            let mut watch = store.watch_with_history(">").await?;
            let mut map = std::collections::HashMap::new();
            let mut seen = 0;
            let decode = implementation == RAW_MAP;
            loop {
                let entry = tokio::time::timeout(TIMEOUT, watch.next())
                    .await?
                    .context("watch ended")??;
                seen += 1;
                if decode {
                    use async_nats::jetstream::kv::Operation;
                    match (
                        entry.operation,
                        serde_json::from_slice::<Flag>(&entry.value),
                    ) {
                        (Operation::Put, Ok(flag)) => {
                            map.insert(entry.key, flag);
                        }
                        _ => {
                            map.remove(&entry.key);
                        }
                    }
                } else {
                    std::hint::black_box(&entry);
                }
                if entry.seen_current {
                    break;
                }
            }
            let keys = if decode { map.len() } else { seen };
            held = Box::new((map, watch, store));
            keys
        }
        (RAW_BY_SEQUENCE | RAW_RANGES, Some(client)) => {
            let parts = if implementation == RAW_RANGES { 2 } else { 1 };
            let seen = read_by_sequence(client, &bucket, parts).await?;
            held = Box::new(());
            seen
        }
        other => anyhow::bail!("unknown view consumer {other:?}"),
    };
    let took = started.elapsed();
    let (cpu_after, peak_rss_kib) = usage();
    let rss_delta = rss_bytes()?.saturating_sub(rss_before);
    anyhow::ensure!(keys == n, "{implementation} saw {keys} keys, expected {n}");
    drop(held);
    Ok(json!({
        "impl": implementation,
        "mode": "view_catchup",
        "n": n,
        "seconds": took.as_secs_f64(),
        "keys_per_s": n as f64 / took.as_secs_f64(),
        "cpu_s": cpu_after.saturating_sub(cpu_before).as_secs_f64(),
        "rss_delta_kib": rss_delta / 1024,
        "bytes_per_key": rss_delta as f64 / n as f64,
        "peak_rss_kib": peak_rss_kib,
        "recreations": recreations,
    }))
}

/// Reads every message the bucket's stream holds (each key's latest in a bucket of one revision
/// per key) with `parts` raw ordered consumers from evenly spread start sequences, side by side,
/// each up to the next one's start; the number of messages read.
async fn read_by_sequence(
    client: async_nats::Client,
    bucket: &str,
    parts: u64,
) -> anyhow::Result<usize> {
    use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy};
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
    let info = stream.info().await?.clone();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let span = (last - first + 1).div_ceil(parts);
    let mut tasks = Vec::new();
    for part in 0..parts {
        let start = first + part * span;
        let end = (start + span - 1).min(last);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: format!("$KV.{bucket}.>"),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
            let mut seen = 0usize;
            while let Some(message) = tokio::time::timeout(TIMEOUT, messages.next()).await? {
                let message = message?;
                let sequence = message
                    .info()
                    .map_err(|error| anyhow::anyhow!("{error}"))?
                    .stream_sequence;
                if sequence > end {
                    break;
                }
                seen += 1;
                std::hint::black_box(&message);
                if sequence == end {
                    break;
                }
            }
            anyhow::Ok(seen)
        }));
    }
    let mut seen = 0;
    for task in tasks {
        seen += task.await??;
    }
    Ok(seen)
}
