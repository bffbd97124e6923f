//! `latency M`: put -> handler latency over M round trips. Writer and consumer in one process,
//! as in the anchor script; both sides alike: the watch runs in its own task and reports through
//! a channel, and the writer is another task on the same connection, waiting for each report
//! before the next put.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use faststream_core::{after_startup, subscriber, KvWatch, NatsBroker, State};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::anchors::python;
use crate::broker::{app, connected_broker};
use crate::child::{compare_children, Compared};
use crate::cli::LatencySizes;
use crate::common::{bucket, url, TIMEOUT};
use crate::data::drop_bucket;
use crate::measure::percentile;
use crate::report::{emit, Summary};
use crate::workloads::{FRAMEWORK, RAW};

/// Latency runs are bimodal with tokio's thread placement: more runs, and the best one too.
const LATENCY_REPEATS: usize = 5;
/// Round trips before the measured ones.
const WARM_UP: usize = 20;

/// Nanoseconds since this process's clock base: what the latency values carry.
static CLOCK: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_nanos() -> u64 {
    u64::try_from(CLOCK.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The latency of a value `t<nanos>` written by [`write_rounds`] in this process.
fn latency_of(value: &[u8]) -> Option<u64> {
    let sent: u64 = std::str::from_utf8(value)
        .ok()?
        .strip_prefix('t')?
        .parse()
        .ok()?;
    Some(now_nanos().saturating_sub(sent))
}

/// One latency run's channels: the handler (or raw watch) reports each latency, the writer
/// waits for it before the next put and hands all samples back when done.
#[derive(Clone)]
struct LatencyRun {
    rounds: usize,
    reports: Arc<Mutex<Option<mpsc::UnboundedReceiver<u64>>>>,
    samples: Arc<Mutex<Option<oneshot::Sender<Vec<u64>>>>>,
}

#[subscriber("lat", kv_watch = KvWatch::new(bucket()))]
async fn handler(msg: String, State(reports): State<mpsc::UnboundedSender<u64>>) {
    if let Some(latency) = latency_of(msg.as_bytes()) {
        let _ = reports.send(latency);
    }
}

/// The writer, as a service would write it: a task started after start-up, putting on the
/// app's own connection.
#[after_startup]
async fn start_writer(broker: NatsBroker, State(run): State<LatencyRun>) -> anyhow::Result<()> {
    let store = broker.key_value(&bucket()).await?;
    tokio::spawn(write_rounds(store.store().clone(), run));
    Ok(())
}

/// Puts a timestamp, waits for its report, `WARM_UP + rounds` times; sends the samples back.
async fn write_rounds(store: async_nats::jetstream::kv::Store, run: LatencyRun) {
    let reports = run.reports.lock().ok().and_then(|mut slot| slot.take());
    let done = run.samples.lock().ok().and_then(|mut slot| slot.take());
    let (Some(mut reports), Some(done)) = (reports, done) else {
        return;
    };
    let mut samples = Vec::with_capacity(run.rounds);
    for round in 0..WARM_UP + run.rounds {
        if store
            .put("lat", format!("t{}", now_nanos()).into())
            .await
            .is_err()
        {
            return;
        }
        let Ok(Some(latency)) = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await
        else {
            return;
        };
        if round >= WARM_UP {
            samples.push(latency);
        }
    }
    let _ = done.send(samples);
}

/// `latency-run IMPL BUCKET M`, the child side: one run of `m` round trips; its JSON line.
pub async fn latency(implementation: &str, m: usize) -> anyhow::Result<Value> {
    let (reports_tx, reports) = mpsc::unbounded_channel::<u64>();
    let (samples_tx, samples_rx) = oneshot::channel::<Vec<u64>>();
    let run = LatencyRun {
        rounds: m,
        reports: Arc::new(Mutex::new(Some(reports))),
        samples: Arc::new(Mutex::new(Some(samples_tx))),
    };
    let mut samples = if implementation == FRAMEWORK {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app()
            .without_default_logging()
            .only_module(module_path!())
            .with_state(reports_tx)
            .with_state(run);
        let app_task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let samples = tokio::time::timeout(TIMEOUT, samples_rx).await??;
        let _ = stop.send(());
        app_task.await??;
        samples
    } else {
        // The parent made the bucket (get_key_value also works on nats-server 2.9).
        let client = async_nats::connect(url()).await?;
        let store = async_nats::jetstream::new(client)
            .get_key_value(bucket())
            .await?;
        let mut watch = store.watch("lat").await?;
        let watch_task = tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                if let Some(latency) = latency_of(&entry.value) {
                    let _ = reports_tx.send(latency);
                }
            }
        });
        tokio::spawn(write_rounds(store, run));
        let samples = tokio::time::timeout(TIMEOUT, samples_rx).await??;
        watch_task.abort();
        samples
    };
    anyhow::ensure!(!samples.is_empty(), "no latency samples");
    samples.sort_unstable();
    Ok(json!({
        "impl": implementation,
        "mode": "latency",
        "m": m,
        "p50_us": percentile(&samples, 0.5) as f64 / 1e3,
        "p99_us": percentile(&samples, 0.99) as f64 / 1e3,
    }))
}

/// The p50 of the median and of the best run, framework against raw (and FastStream's with
/// `--python`).
pub async fn run(
    sizes: LatencySizes,
    pid: u32,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let m = sizes.m.to_string();
    let bucket = format!("bench_latency_{pid}");
    let broker = connected_broker().await?;
    broker.key_value(&bucket).await?;
    let runs = compare_children(
        &[FRAMEWORK, RAW],
        LATENCY_REPEATS,
        Compared::LatencyRun,
        &bucket,
        std::slice::from_ref(&m),
    )
    .await?;
    drop_bucket(&bucket).await?;
    let (framework, raw) = (&runs[0], &runs[1]);
    summary.insert(
        "latency_p50_vs_raw".into(),
        json!(framework.median("p50_us") / raw.median("p50_us")),
    );
    summary.insert(
        "latency_best_p50_vs_raw".into(),
        json!(framework.lowest("p50_us") / raw.lowest("p50_us")),
    );
    if with_python {
        if let Some(py) = python("faststream_kv_bench.py", &["latency", &m]).await {
            emit(&py);
        }
    }
    Ok(())
}
