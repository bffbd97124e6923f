//! The messaging workloads: core publish -> handler throughput (`core_publish.rs`),
//! request/reply round trips (`request_reply.rs`) and a JetStream pull consumer with acks
//! (`pull.rs`), each consumer a `#[subscriber]` app, raw async-nats, or with `--python`
//! FastStream 0.7.8 (`examples/bench/faststream_nats_bench.py`), in a process of its own.
//! `serve.rs` is the protocol between the parent and those processes.

pub mod core_publish;
pub mod pull;
pub mod request_reply;
pub mod serve;

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

use crate::measure::{server_cpu, usage};
use crate::report::{compare, Runs};
use crate::workloads::{FRAMEWORK, RAW};
use serve::{python_available, Handled, Served, Side};

/// FastStream 0.7.8's consumers, from the anchor script.
pub const FASTSTREAM: &str = "faststream-py";
/// The subject of `core-publish` (the handler's attribute and the script spell it out).
pub const CORE_SUBJECT: &str = "bench.msg.core";
/// The subject of `request-reply`.
pub const ECHO_SUBJECT: &str = "svc.echo";
/// The subject of `js-pull`, the only one of its stream.
pub const PULL_SUBJECT: &str = "bench.js.pull";
/// The stream of `js-pull`, made by the parent.
pub const STREAM: &str = "BENCH_MSG";
/// The durable consumer of `js-pull`, removed before each run.
pub const DURABLE: &str = "bench";

/// What a consumer measured about itself when it was done.
pub struct Consumed {
    /// Its messages, for a consumer that counts them (a responder does not).
    handled: Option<Handled>,
    cpu: Duration,
    peak_rss_kib: u64,
}

impl Consumed {
    /// Done now with `handled`: this process's CPU time and peak RSS so far.
    pub fn now(handled: Handled) -> Self {
        Self {
            handled: Some(handled),
            ..Self::responder()
        }
    }

    /// A responder done now.
    pub fn responder() -> Self {
        let (cpu, peak_rss_kib) = usage();
        Self {
            handled: None,
            cpu,
            peak_rss_kib,
        }
    }
}

/// `msg-consumer MODE IMPL N BATCH`, the child side: one consumer in this process; its JSON
/// line (after the `ready` line). CPU time is counted from here, the consumer's start-up
/// included, as the FastStream script counts it from before its broker starts.
pub async fn consumer(
    mode: &str,
    implementation: &str,
    n: usize,
    batch: usize,
) -> anyhow::Result<Value> {
    let (cpu_before, _) = usage();
    let consumed = match (mode, implementation) {
        ("core", FRAMEWORK) => core_publish::framework(n).await?,
        ("core", RAW) => core_publish::raw(n).await?,
        ("reply", FRAMEWORK) => request_reply::framework().await?,
        ("reply", RAW) => request_reply::raw().await?,
        ("pull", FRAMEWORK) => pull::framework(n, batch).await?,
        ("pull", RAW) => pull::raw(n, batch).await?,
        other => anyhow::bail!("unknown messaging consumer {other:?}"),
    };
    let cpu = consumed.cpu.saturating_sub(cpu_before).as_secs_f64();
    let mut result = json!({
        "impl": implementation,
        "mode": mode,
        "cpu_s": cpu,
        "peak_rss_kib": consumed.peak_rss_kib,
    });
    if let Some(Handled { seen, took }) = consumed.handled {
        let counted = json!({
            "n": n,
            "handled": seen,
            "lost": n.saturating_sub(seen),
            "seconds": took.as_secs_f64(),
            "msgs_per_s": seen as f64 / took.as_secs_f64(),
            "cpu_us_per_msg": cpu * 1e6 / seen.max(1) as f64,
        });
        merge(&mut result, counted);
    }
    Ok(result)
}

/// Adds the fields of the object `extra` to the object `into`.
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// Starts `side` in `mode`, runs `during` once it is ready (publishing, requesting), then
/// stops it; its result line with the fields `during` returned and, with `NATS_SERVER_PID`,
/// the server's CPU time over the run.
pub async fn consumer_result<F, Fut>(
    side: Side,
    mode: &str,
    n: usize,
    batch: usize,
    during: F,
) -> anyhow::Result<Value>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let server_before = server_cpu();
    let served = Served::start(side, mode, n, batch).await?;
    let extra = during().await?;
    let mut result = served.finish().await?;
    merge(&mut result, extra);
    if let (Some(before), Some(after)) = (server_before, server_cpu()) {
        result["server_cpu_s"] = json!(after.saturating_sub(before).as_secs_f64());
    }
    Ok(result)
}

/// [`compare`] over faststream-rs, raw async-nats and, with `with_python` (if FastStream is
/// installed), FastStream: `measure` for each side `repeats` times, alternating; the runs in
/// that order.
pub async fn run_compared<F, Fut>(
    with_python: bool,
    repeats: usize,
    mut measure: F,
) -> anyhow::Result<Vec<Runs>>
where
    F: FnMut(Side) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let mut sides = vec![FRAMEWORK, RAW];
    if with_python && python_available().await {
        sides.push(FASTSTREAM);
    }
    compare(&sides, repeats, |name| {
        measure(match name.as_str() {
            FASTSTREAM => Side::Python,
            FRAMEWORK => Side::Rust(FRAMEWORK),
            _ => Side::Rust(RAW),
        })
    })
    .await
}
