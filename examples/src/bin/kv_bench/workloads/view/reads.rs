//! `viewget MODE BUCKET K RATE SECONDS`, the child side of the view's reads: a view over the
//! bucket's K keys, caught up; a thread calls `get` on random keys for SECONDS while (MODE
//! `writer`) a task on its own connection changes RATE keys a second, or (MODE `idle`) nothing
//! changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faststream_core::KvView;
use serde_json::{json, Value};

use super::{GET_BATCH, VIEW};
use crate::broker::connected_broker;
use crate::common::{bucket, url, Flag, Rng};
use crate::data::write_paced;
use crate::measure::percentile;

/// Calls `view.get` on random keys for `duration` on this thread; returns the number of gets,
/// the time taken and every batch's time in nanoseconds.
fn read_loop(
    view: &KvView<Flag>,
    keys: &[String],
    duration: Duration,
) -> (u64, Duration, Vec<u64>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut batches = Vec::with_capacity(1 << 20);
    let mut hits = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        let batch = Instant::now();
        for _ in 0..GET_BATCH {
            if let Some(flag) = view.get(&keys[rng.below(keys.len())]) {
                hits += u64::from(flag.enabled) + (flag.n & 1);
            }
        }
        batches.push(u64::try_from(batch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    std::hint::black_box(hits);
    let reads = (batches.len() * GET_BATCH) as u64;
    (reads, started.elapsed(), batches)
}

/// One read run; its JSON line.
pub async fn view_reads(
    mode: &str,
    keys: usize,
    rate: usize,
    seconds: f64,
) -> anyhow::Result<Value> {
    let broker = connected_broker().await?;
    let view = broker.kv_view::<Flag>(bucket(), ">").await?;
    anyhow::ensure!(
        view.len() == keys,
        "the view has {} keys, expected {keys}",
        view.len()
    );
    let names: Vec<String> = (0..keys).map(|i| format!("k.{i}")).collect();
    let revision_before = view.revision();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = match mode {
        "writer" => {
            let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
            let stop = Arc::clone(&stop);
            Some(tokio::spawn(write_paced(js, bucket(), keys, rate, stop)))
        }
        "idle" => None,
        other => anyhow::bail!("unknown read mode {other:?}"),
    };
    let reader_view = view.clone();
    let duration = Duration::from_secs_f64(seconds);
    let (reads, took, mut batches) =
        tokio::task::spawn_blocking(move || read_loop(&reader_view, &names, duration)).await?;
    stop.store(true, Ordering::Relaxed);
    let (written, write_time) = match writer {
        Some(writer) => writer.await??,
        None => (0, Duration::ZERO),
    };
    anyhow::ensure!(!batches.is_empty(), "no reads");
    batches.sort_unstable();
    let per_get = |share: f64| percentile(&batches, share) as f64 / GET_BATCH as f64;
    Ok(json!({
        "impl": VIEW,
        "mode": format!("view_get_{mode}"),
        "keys": keys,
        "seconds": took.as_secs_f64(),
        "reads_per_s": reads as f64 / took.as_secs_f64(),
        "measured": format!("one Instant pair per batch of {GET_BATCH} gets on random keys; \
            p50/p99 are batch time / {GET_BATCH}, max_batch_ns the slowest whole batch \
            (an upper bound of the slowest get)"),
        "get_p50_ns": per_get(0.5),
        "get_p99_ns": per_get(0.99),
        "get_p999_ns": per_get(0.999),
        "max_batch_ns": batches[batches.len() - 1],
        "writer_target_per_s": if mode == "writer" { rate } else { 0 },
        "writer_puts_per_s": if written > 0 {
            written as f64 / write_time.as_secs_f64()
        } else {
            0.0
        },
        "view_revisions_advanced": view.revision().saturating_sub(revision_before),
    }))
}
