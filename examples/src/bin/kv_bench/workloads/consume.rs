//! `consume MODE IMPL BUCKET N`, the child side of the replay, observe, slow and keys
//! workloads: one consumer in this process until it has handled N entries; its time, CPU time
//! and peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::broker::app;
use crate::common::{bucket, url, Progress, TIMEOUT};
use crate::measure::usage;
use crate::workloads::observe::{observed_app, Observed, TRACED, TRACED_DEFAULT, WITH_METRICS};
use crate::workloads::{keys, replay, slow, FRAMEWORK, RAW};

/// One consumer; its JSON line.
pub async fn consume(mode: &str, implementation: &str, n: usize) -> anyhow::Result<Value> {
    let (cpu_before, _) = usage();
    let took = match (mode, implementation) {
        ("replay", FRAMEWORK) => consume_framework(replay::HANDLERS, n).await?,
        ("replay", RAW) => consume_raw(n, true).await?,
        ("replay", WITH_METRICS) => {
            consume_observed(replay::HANDLERS, n, Observed::Metrics).await?
        }
        ("replay", TRACED) => {
            consume_observed(replay::HANDLERS, n, Observed::Spans(Some(1.0))).await?
        }
        ("replay", TRACED_DEFAULT) => {
            consume_observed(replay::HANDLERS, n, Observed::Spans(None)).await?
        }
        ("keys", FRAMEWORK) => consume_framework(keys::HANDLERS, n).await?,
        ("keys", RAW) => consume_raw(n, false).await?,
        ("slow1", FRAMEWORK) => consume_framework(slow::one_worker::HANDLERS, n).await?,
        ("slow64", FRAMEWORK) => consume_framework(slow::workers_64::HANDLERS, n).await?,
        other => anyhow::bail!("unknown consumer {other:?}"),
    };
    let (cpu_after, peak_rss_kib) = usage();
    let cpu = cpu_after.saturating_sub(cpu_before);
    Ok(json!({
        "impl": implementation,
        "mode": mode,
        "n": n,
        "seconds": took.as_secs_f64(),
        "msgs_per_s": n as f64 / took.as_secs_f64(),
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_msg": cpu.as_secs_f64() * 1e6 / n as f64,
        "peak_rss_kib": peak_rss_kib,
    }))
}

/// Runs the subscriber registered in `module` until it has handled `n` entries; time taken.
async fn consume_framework(module: &str, n: usize) -> anyhow::Result<Duration> {
    consume_observed(module, n, Observed::Nothing).await
}

/// The same, exporting what `observed` says.
async fn consume_observed(module: &str, n: usize, observed: Observed) -> anyhow::Result<Duration> {
    let progress = Arc::new(Progress::new(n));
    let app = app()
        .without_default_logging()
        .only_module(module)
        .with_state(Arc::clone(&progress));
    let app = observed_app(app, observed)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(TIMEOUT, progress.done.notified())
        .await
        .context("the handler did not see every entry")?;
    let took = started.elapsed();
    let _ = stop.send(());
    running.await??;
    Ok(took)
}

/// The same with a raw async-nats watcher; `history`: every revision, else latest per key.
async fn consume_raw(n: usize, history: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = async_nats::connect(url()).await?;
    let store = async_nats::jetstream::new(client)
        .get_key_value(bucket())
        .await?;
    let mut watch = if history {
        store.watch_from_revision("k.*", 1).await?
    } else {
        store.watch_with_history("k.*").await?
    };
    let mut seen = 0;
    while seen < n {
        let entry = tokio::time::timeout(TIMEOUT, watch.next())
            .await?
            .context("watch ended")??;
        std::hint::black_box(String::from_utf8(entry.value.to_vec())?);
        seen += 1;
    }
    Ok(started.elapsed())
}
