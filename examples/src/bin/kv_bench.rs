//! The benchmark: the workloads of the FastStream anchor scripts (the project keeps its copy in
//! `examples/bench/`), through a `#[subscriber]` handler and through a raw async-nats watcher,
//! side by side in one run against the server at `NATS_URL`. Prints one JSON line per result,
//! then one summary line with the ratios.
//!
//! ```text
//! cargo run --release -p examples --bin kv_bench                    # everything, default sizes
//! cargo run --release -p examples --bin kv_bench -- --python        # plus the FastStream anchors
//! cargo run --release -p examples --bin kv_bench -- replay 20000 1000
//! cargo run --release -p examples --bin kv_bench -- observe 20000 1000
//! cargo run --release -p examples --bin kv_bench -- latency 500
//! cargo run --release -p examples --bin kv_bench -- slow 2000 1000
//! cargo run --release -p examples --bin kv_bench -- keys 10000
//! cargo run --release -p examples --bin kv_bench -- view 100000 10000 10000 2
//! cargo run --release -p examples --bin kv_bench -- group 50000 1000 40000 10000 8 48 2000 3
//! ```
//!
//! `observe N KEYS`: the cost of observability on the replay workload, five runs of each side,
//! alternating: the plain subscriber (spans compiled in, disabled at their level), the same
//! with `/metrics` served (every call counted and timed), with every entry's span exported
//! through the OpenTelemetry layer and the SDK's batch processor (to an exporter that drops
//! the batches), with the default share of entries traced (1%), and raw async-nats.
//!
//! `view N K RATE SECONDS`: bucket state. A `KvView`'s catch-up over `N` keys against a raw
//! `watch_with_history` (counting, and decoding into a `HashMap`), with the RSS each adds per
//! key; then `get` on a view of `K` keys for `SECONDS`, idle and while a writer on its own
//! connection changes `RATE` keys a second.
//!
//! `group N KEYS SLOW_N SLOW_KEYS SLOW_WORKERS SLOW_PARTITIONS RATE REPEATS`: consumer groups
//! (nats-server 2.11+), every group with `session_timeout` 2 s, each run on a fresh bucket in a
//! process of its own, `REPEATS` runs of each side, alternating:
//! - a writer puts `N` changes over `KEYS` keys as fast as it can (pipelined) while the
//!   consumer handles them (counts, returns `Ok`), timed from the first put to the last change
//!   handled: one group member against a raw durable pull consumer on `KV_<bucket>` (explicit
//!   acks, one per message) and, for information, the plain watch subscriber and the group's
//!   design built with async-nats alone (a partitioned mirror read by one pull consumer, or by
//!   one per partition with `max_ack_pending` 1);
//! - the same with a handler awaiting 1 ms, `SLOW_N` changes over `SLOW_KEYS` keys: three
//!   members (three apps in one process) against one, `max_workers` `SLOW_WORKERS` on each
//!   and `SLOW_PARTITIONS` partitions; then with `max_workers` 16 and the default 16
//!   partitions, which bound the calls at once whatever the members;
//! - membership changes while a writer changes `RATE` random keys of `KEYS` a second: a second
//!   member joins (rebalance), it stops (graceful hand-over), a member in a child process is
//!   killed with SIGKILL (takeover); the time until the survivor handles the moved partitions.
//!
//! With `NATS_SERVER_PID` set (the server on this machine), the live runs also report the
//! server's CPU time.
//!
//! Every consumer runs in its own process (this binary, started with `consume ...`), so that
//! its peak RSS and CPU time are its own; the parent writes the data first. To profile one
//! consumer alone (e.g. under `valgrind --tool=callgrind`):
//!
//! ```text
//! kv_bench prefill bench 20000 1000
//! kv_bench consume replay faststream-rs bench 20000     # or async-nats-raw
//! kv_bench prefill-view bench 100000
//! kv_bench catchup faststream-rs-view bench 100000     # or async-nats-raw, ...
//! ```

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::kv::group::{GroupInfo, GroupSettings, KvGroup, DEFAULT_PARTITIONS};
use faststream_core::kv::WatchEvent;
use faststream_core::{subscriber, App, HookStage, KvView, KvWatch, NatsBroker, State};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

const FRAMEWORK: &str = "faststream-rs";
const RAW: &str = "async-nats-raw";
/// The framework with `/metrics` served: every call counted and timed.
const WITH_METRICS: &str = "faststream-rs-metrics";
/// The framework exporting spans through the OpenTelemetry layer (to an exporter that drops
/// the batches: the layer, the SDK and its batching are measured, not a network): a span for
/// every entry, and for the default share of entries.
const TRACED: &str = "faststream-rs-traced";
const TRACED_DEFAULT: &str = "faststream-rs-traced-default";
const TIMEOUT: Duration = Duration::from_secs(300);

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| faststream_core::DEFAULT_NATS_URL.to_owned())
}

// ---------------------------------------------------------------------------------------------
// The consumers, each in its own process.
// ---------------------------------------------------------------------------------------------

/// The bucket the registered subscribers watch (set from the command line).
static BUCKET: OnceLock<String> = OnceLock::new();

fn bucket() -> String {
    BUCKET.get().cloned().unwrap_or_default()
}

/// Counts handled entries and wakes the benchmark at the target.
struct Progress {
    handled: AtomicUsize,
    target: usize,
    done: Notify,
}

impl Progress {
    fn handled_one(&self) {
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

mod replay {
    use super::*;

    #[subscriber("k.*", kv_watch = KvWatch::new(bucket()).include_history(true).declare(false))]
    async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
        std::hint::black_box(msg);
        progress.handled_one();
    }
}

mod keys {
    use super::*;

    #[subscriber("k.*", kv_watch = KvWatch::new(bucket()).declare(false))]
    async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
        std::hint::black_box(msg);
        progress.handled_one();
    }
}

mod slow1 {
    use super::*;

    #[subscriber("k.*", kv_watch = KvWatch::new(bucket()).include_history(true).declare(false))]
    async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
        std::hint::black_box(msg);
        tokio::time::sleep(Duration::from_millis(1)).await;
        progress.handled_one();
    }
}

mod slow64 {
    use super::*;

    #[subscriber(
        "k.*",
        kv_watch = KvWatch::new(bucket()).include_history(true).declare(false),
        max_workers = 64
    )]
    async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
        std::hint::black_box(msg);
        tokio::time::sleep(Duration::from_millis(1)).await;
        progress.handled_one();
    }
}

/// Nanoseconds since this process's clock base: what the latency values carry.
static CLOCK: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_nanos() -> u64 {
    u64::try_from(CLOCK.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

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
    reports: Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<u64>>>>,
    samples: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Vec<u64>>>>>,
}

mod latency {
    use super::*;
    use faststream_core::after_startup;

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
}

/// Puts a timestamp, waits for its report, `WARM_UP + rounds` times; sends the samples back.
async fn write_rounds(store: async_nats::jetstream::kv::Store, run: LatencyRun) {
    const WARM_UP: usize = 20;
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

/// CPU time (user + system) and peak RSS of this process.
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (
        time(usage.ru_utime) + time(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

/// What a framework consumer exports besides its work.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Observed {
    Nothing,
    Metrics,
    /// Spans through the OpenTelemetry layer for this share of entries (`None`: the default).
    Spans(Option<f64>),
}

/// A span exporter that drops every batch.
#[derive(Debug)]
struct DropSpans;

impl opentelemetry_sdk::trace::SpanExporter for DropSpans {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// Runs `module`'s registered subscriber until it has handled `n` entries; seconds taken.
async fn consume_framework(module: &str, n: usize) -> anyhow::Result<Duration> {
    consume_observed(module, n, Observed::Nothing).await
}

async fn consume_observed(module: &str, n: usize, observed: Observed) -> anyhow::Result<Duration> {
    let progress = Arc::new(Progress {
        handled: AtomicUsize::new(0),
        target: n,
        done: Notify::new(),
    });
    let mut app = App::new(NatsBroker::new(url()))
        .without_default_logging()
        .only_module(format!("kv_bench::{module}"))
        .with_state(Arc::clone(&progress));
    match observed {
        Observed::Nothing => {}
        Observed::Metrics => app = app.http("127.0.0.1:0"),
        Observed::Spans(share) => {
            use opentelemetry_sdk::trace::SdkTracerProvider;
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;

            let tracer_provider = SdkTracerProvider::builder()
                .with_batch_exporter(DropSpans)
                .build();
            let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
            let mut otlp = faststream_core::otlp::Otlp::new(tracer_provider, meter_provider);
            if let Some(share) = share {
                otlp = otlp.entry_sampling(share);
            }
            tracing_subscriber::registry()
                .with(otlp.layer())
                .try_init()?;
            app = app.otlp(otlp);
        }
    }
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

/// `consume MODE IMPL N`: one consumer; prints its JSON line.
async fn consume(mode: &str, implementation: &str, n: usize) -> anyhow::Result<Value> {
    let (cpu_before, _) = usage();
    let took = match (mode, implementation) {
        ("replay", FRAMEWORK) => consume_framework("replay", n).await?,
        ("replay", RAW) => consume_raw(n, true).await?,
        ("replay", WITH_METRICS) => consume_observed("replay", n, Observed::Metrics).await?,
        ("replay", TRACED) => consume_observed("replay", n, Observed::Spans(Some(1.0))).await?,
        ("replay", TRACED_DEFAULT) => consume_observed("replay", n, Observed::Spans(None)).await?,
        ("keys", FRAMEWORK) => consume_framework("keys", n).await?,
        ("keys", RAW) => consume_raw(n, false).await?,
        ("slow1", FRAMEWORK) => consume_framework("slow1", n).await?,
        ("slow64", FRAMEWORK) => consume_framework("slow64", n).await?,
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

// ---------------------------------------------------------------------------------------------
// Latency: writer and consumer in one process, as in the anchor script.
// ---------------------------------------------------------------------------------------------

/// Both sides alike: the watch runs in its own task and reports through a channel, and the
/// writer is another task on the same connection.
async fn latency(implementation: &str, m: usize) -> anyhow::Result<Value> {
    let (reports_tx, reports) = mpsc::unbounded_channel::<u64>();
    let (samples_tx, samples_rx) = tokio::sync::oneshot::channel::<Vec<u64>>();
    let run = LatencyRun {
        rounds: m,
        reports: Arc::new(std::sync::Mutex::new(Some(reports))),
        samples: Arc::new(std::sync::Mutex::new(Some(samples_tx))),
    };
    let mut samples = if implementation == FRAMEWORK {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = App::new(NatsBroker::new(url()))
            .without_default_logging()
            .only_module("kv_bench::latency")
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
        // The orchestrator made the bucket (get_key_value also works on nats-server 2.9).
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
    let percentile = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(json!({
        "impl": implementation,
        "mode": "latency",
        "m": m,
        "p50_us": percentile(0.5) as f64 / 1e3,
        "p99_us": percentile(0.99) as f64 / 1e3,
    }))
}

// ---------------------------------------------------------------------------------------------
// Bucket state: a KvView's catch-up, memory per key, and reads while a writer changes the bucket.
// ---------------------------------------------------------------------------------------------

/// A view over `k.*` decoded from JSON (`kv_view::<Flag>`).
const VIEW: &str = "faststream-rs-view";
/// The same view without decoding (`kv_view_raw`): separates decoding from the map's cost.
const VIEW_RAW: &str = "faststream-rs-view-raw";
/// FastStream's own watch (`kv_watch`, what the view reads), counting entries until
/// `CaughtUp`: separates the watch from the view's map.
const WATCH: &str = "faststream-rs-watch";
/// A raw `watch_with_history(">")`, counting entries until one has `seen_current`.
const RAW_COUNT: &str = "async-nats-raw";
/// The same, decoding each value into `Flag` and inserting it into a `std` `HashMap`: what a
/// user would write by hand.
const RAW_MAP: &str = "async-nats-raw-map";

/// The value of every key in the view workloads, e.g. `{"enabled":true,"n":123}`.
#[derive(serde::Deserialize)]
struct Flag {
    enabled: bool,
    n: u64,
}

fn flag_json(n: u64) -> bytes::Bytes {
    format!(r#"{{"enabled":true,"n":{n}}}"#).into()
}

/// A small xorshift generator: random keys without a dependency, a few cycles per number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// This process's resident set, from `/proc/self/statm`.
fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("/proc/self/statm has no resident field")?
        .parse()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// `catchup IMPL BUCKET N`: connects, then times getting every key's latest value of a bucket
/// holding `n` keys (bucket lookup, watch and catch-up); RSS is taken after connecting and
/// again once caught up, with the map (and the watch) still held.
async fn view_catchup(implementation: &str, n: usize) -> anyhow::Result<Value> {
    let bucket = bucket();
    let broker = NatsBroker::new(url());
    let mut client = None;
    if implementation.starts_with(FRAMEWORK) {
        broker.connect().await?;
    } else {
        client = Some(async_nats::connect(url()).await?);
    }
    let rss_before = rss_bytes()?;
    let (cpu_before, _) = usage();
    let started = Instant::now();
    // What each side holds once caught up, kept until RSS is read.
    let held: Box<dyn std::any::Any>;
    let keys = match (implementation, client) {
        (VIEW, _) => {
            let view = broker
                .kv_view::<Flag>(KvWatch::new(bucket.clone()), ">")
                .await?;
            let keys = view.len();
            held = Box::new(view);
            keys
        }
        (VIEW_RAW, _) => {
            let view = broker
                .kv_view_raw(KvWatch::new(bucket.clone()), ">")
                .await?;
            let keys = view.len();
            held = Box::new(view);
            keys
        }
        (WATCH, _) => {
            let mut watcher = broker.kv_watch(">", KvWatch::new(bucket.clone())).await?;
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
    }))
}

/// Gets timed together: one `Instant` pair per batch, so the clock's own cost (about 20 ns a
/// read) stays out of the per-get figure.
const GET_BATCH: usize = 32;

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

/// Puts `rate` changes a second to random keys of the bucket, in batches every 10 ms (publishes
/// pipelined, then their acks awaited), until `stop`; returns the puts acknowledged and the
/// time taken.
async fn write_paced(
    js: async_nats::jetstream::Context,
    keys: usize,
    rate: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, Duration)> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let bucket = bucket();
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

/// `viewget MODE BUCKET K RATE SECONDS`: a view over the bucket's `k` keys, caught up; a thread
/// calls `get` on random keys for `seconds` while (MODE `writer`) a task on its own connection
/// changes `rate` keys a second, or (MODE `idle`) nothing changes.
async fn view_reads(mode: &str, keys: usize, rate: usize, seconds: f64) -> anyhow::Result<Value> {
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    let view = broker.kv_view::<Flag>(KvWatch::new(bucket()), ">").await?;
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
            Some(tokio::spawn(write_paced(js, keys, rate, Arc::clone(&stop))))
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
    let percentile = |p: f64| batches[((batches.len() as f64 * p) as usize).min(batches.len() - 1)];
    let per_get = |nanos: u64| nanos as f64 / GET_BATCH as f64;
    Ok(json!({
        "impl": VIEW,
        "mode": format!("view_get_{mode}"),
        "keys": keys,
        "seconds": took.as_secs_f64(),
        "reads_per_s": reads as f64 / took.as_secs_f64(),
        "measured": format!("one Instant pair per batch of {GET_BATCH} gets on random keys; \
            p50/p99 are batch time / {GET_BATCH}, max_batch_ns the slowest whole batch \
            (an upper bound of the slowest get)"),
        "get_p50_ns": per_get(percentile(0.5)),
        "get_p99_ns": per_get(percentile(0.99)),
        "get_p999_ns": per_get(percentile(0.999)),
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

/// Writes one entry `{"enabled":true,"n":i}` to each of `keys` keys `k.0` ... of a fresh bucket.
async fn prefill_flags(bucket: &str, keys: usize) -> anyhow::Result<()> {
    prefill_with(bucket, keys, keys, |i| flag_json(i as u64)).await
}

// ---------------------------------------------------------------------------------------------
// Consumer groups: live traffic through group members, and the times of membership changes.
// ---------------------------------------------------------------------------------------------

/// Members of a consumer group (`KvWatch::group`), each an `App` with its own connection.
const GROUP: &str = "faststream-rs-group";
/// A durable pull consumer on the bucket's stream `KV_<bucket>`, explicit acks, reading
/// `messages()` and acknowledging each message.
const RAW_PULL: &str = "async-nats-raw-pull";
/// Today's plain watch subscriber (`KvWatch::new(bucket)` without a group).
const PLAIN: &str = "faststream-rs-plain-watch";
/// For information, the group's design without faststream-rs: a partitioned mirror of the
/// bucket made with async-nats, read by one raw pull consumer ...
const RAW_MIRROR: &str = "async-nats-raw-pull-mirror";
/// ... or by one raw pull consumer per partition with `max_ack_pending` 1, as a group's.
const RAW_PARTITIONS: &str = "async-nats-raw-pull-partitions";
/// The group of every group workload (each run has a fresh bucket, so a fresh group).
const GROUP_NAME: &str = "bench";
/// The session timeout of every group workload (the default is 5 s): the membership changes
/// take about that long; the others start sooner (members heartbeat every fifth of it).
const GROUP_SESSION: Duration = Duration::from_secs(2);
/// How long a group workload waits for members to join, balance or take over.
const GROUP_WAIT: Duration = Duration::from_secs(60);

/// One live-traffic run: a writer puts `n` changes over `keys` keys as fast as it can while
/// `members` consumers handle them, each with `workers` calls at once, the handler awaiting
/// `handler_ms` (0: it only counts).
#[derive(Debug, Clone, Copy)]
struct LiveRun {
    n: usize,
    keys: usize,
    members: usize,
    workers: usize,
    partitions: u16,
    handler_ms: u64,
}

impl LiveRun {
    fn args(&self) -> Vec<String> {
        [
            self.n,
            self.keys,
            self.members,
            self.workers,
            usize::from(self.partitions),
            usize::try_from(self.handler_ms).unwrap_or(usize::MAX),
        ]
        .map(|value| value.to_string())
        .to_vec()
    }

    fn parse(args: &[String], from: usize) -> anyhow::Result<Self> {
        Ok(Self {
            n: arg(args, from, 20_000)?,
            keys: arg(args, from + 1, 1_000)?,
            members: arg(args, from + 2, 1)?,
            workers: arg(args, from + 3, 1)?,
            partitions: arg(args, from + 4, DEFAULT_PARTITIONS)?,
            handler_ms: arg(args, from + 5, 0)?,
        })
    }
}

/// How long the slow handler awaits.
#[derive(Clone, Copy)]
struct HandlerDelay(Duration);

/// Each app's `after_startup` hook reports here: with `wait_for_catch_up`, a group member has
/// joined and a plain watch has caught up.
#[derive(Clone)]
struct Started(mpsc::UnboundedSender<()>);

async fn report_started(State(started): State<Started>) {
    let _ = started.0.send(());
}

/// The fast handler: counts and returns `Ok`.
async fn count(msg: String, State(progress): State<Arc<Progress>>) -> anyhow::Result<()> {
    std::hint::black_box(msg);
    progress.handled_one();
    Ok(())
}

/// The slow handler: awaits the delay, then counts.
async fn count_slowly(
    msg: String,
    State(progress): State<Arc<Progress>>,
    State(delay): State<HandlerDelay>,
) -> anyhow::Result<()> {
    std::hint::black_box(msg);
    tokio::time::sleep(delay.0).await;
    progress.handled_one();
    Ok(())
}

/// An app running in a task of this process, stopped gracefully through `stop`.
struct RunningApp {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<faststream_core::Result<()>>,
}

impl RunningApp {
    fn spawn(app: App) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// The watch of a group member of the live workloads.
fn group_watch(bucket: &str, run: &LiveRun) -> KvWatch {
    KvWatch::new(bucket.to_owned())
        .include_history(true)
        .declare(false)
        .max_workers(run.workers)
        .group(
            GroupSettings::new(GROUP_NAME)
                .partitions(run.partitions)
                .session_timeout(GROUP_SESSION),
        )
}

/// Starts `run.members` apps with the counting handler on `watch`, and waits until each has
/// started (joined its group, or caught up).
async fn start_counting_apps(
    watch: &KvWatch,
    run: &LiveRun,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<RunningApp>> {
    let (started, mut reports) = mpsc::unbounded_channel();
    let mut apps = Vec::with_capacity(run.members);
    for _ in 0..run.members {
        let app = App::new(NatsBroker::new(url()))
            .without_registered()
            .without_default_logging()
            .wait_for_catch_up(GROUP_WAIT)
            .with_state(Arc::clone(progress))
            .with_state(HandlerDelay(Duration::from_millis(run.handler_ms)))
            .with_state(Started(started.clone()))
            .hook(HookStage::AfterStartup, "started", report_started);
        let app = if run.handler_ms == 0 {
            app.subscriber("count", "k.*", watch.clone(), count)
        } else {
            app.subscriber("count", "k.*", watch.clone(), count_slowly)
        };
        apps.push(RunningApp::spawn(app));
    }
    for _ in 0..run.members {
        tokio::time::timeout(GROUP_WAIT, reports.recv())
            .await
            .context("an app did not start")?
            .context("an app ended while starting")?;
    }
    Ok(apps)
}

/// Waits until `info` shows `members` members, the partitions assigned to them balanced (within
/// one) and, if `pinned`, each pinned to the member it is assigned to.
async fn wait_balanced(group: &KvGroup, members: usize, pinned: bool) -> anyhow::Result<GroupInfo> {
    let started = Instant::now();
    loop {
        let info = group.info().await?;
        if is_balanced(&info, members, pinned) {
            return Ok(info);
        }
        anyhow::ensure!(
            started.elapsed() < GROUP_WAIT,
            "the group did not balance over {members} members in {GROUP_WAIT:?}: {info:?}"
        );
        // Not faster: each `info()` leaves an ephemeral consumer on the members bucket for 30 s
        // (it lists the keys with an ordered consumer); polled every 20 ms for a minute, the
        // server refused more ("maximum consumers limit reached", members included).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_balanced(info: &GroupInfo, members: usize, pinned: bool) -> bool {
    let partitions = info.partitions.len();
    let (least, most) = (partitions / members, partitions.div_ceil(members));
    let assigned: usize = info
        .members
        .iter()
        .map(|member| member.partitions.len())
        .sum();
    info.members.len() == members
        && assigned == partitions
        && info
            .members
            .iter()
            .all(|member| (least..=most).contains(&member.partitions.len()))
        && (!pinned
            || info.partitions.iter().all(|partition| {
                info.members.iter().any(|member| {
                    partition.pinned_to.as_deref() == Some(member.id.as_str())
                        && member.partitions.contains(&partition.partition)
                })
            }))
}

/// Reads a raw pull consumer with `messages()` in a task: decodes each value, counts it and
/// acknowledges it.
async fn spawn_raw_reader(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    progress: Arc<Progress>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| anyhow::anyhow!("{error}"))?;
            std::hint::black_box(String::from_utf8(message.payload.to_vec())?);
            progress.handled_one();
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        Ok(())
    }))
}

/// The raw async-nats consumers: [`RAW_PULL`], one durable pull consumer on `KV_<bucket>`; or,
/// on a partitioned mirror of the bucket made with async-nats (the subject transform a group
/// uses, `partitions` partitions), [`RAW_MIRROR`], one pull consumer, or [`RAW_PARTITIONS`], one
/// per partition with `max_ack_pending` 1. Explicit acks, every change from the start.
async fn start_raw(
    implementation: &str,
    bucket: &str,
    partitions: u16,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let (stream, filters): (stream::Stream, Vec<(String, i64)>) = if implementation == RAW_PULL {
        let stream = js.get_stream(format!("KV_{bucket}")).await?;
        (stream, vec![(format!("$KV.{bucket}.k.*"), 0)])
    } else {
        let mirror = js
            .create_stream(stream::Config {
                name: format!("RAWG_{bucket}"),
                mirror: Some(stream::Source {
                    name: format!("KV_{bucket}"),
                    subject_transforms: vec![stream::SubjectTransform {
                        source: format!("$KV.{bucket}.k.*"),
                        destination: format!(
                            "p.{{{{partition({partitions})}}}}.k.{{{{wildcard(1)}}}}"
                        ),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let filters = if implementation == RAW_PARTITIONS {
            (0..partitions).map(|p| (format!("p.{p}.>"), 1)).collect()
        } else {
            vec![("p.>".to_owned(), 0)]
        };
        (mirror, filters)
    };
    let mut tasks = Vec::with_capacity(filters.len());
    for (index, (filter_subject, max_ack_pending)) in filters.into_iter().enumerate() {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("raw{index}")),
                filter_subject,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                max_ack_pending,
                ..Default::default()
            })
            .await?;
        tasks.push(spawn_raw_reader(consumer, Arc::clone(progress)).await?);
    }
    Ok(tasks)
}

/// CPU time (user + system) of the process `NATS_SERVER_PID` names, if it is set and readable:
/// on one machine, the server's share of a workload's cost.
fn server_cpu() -> Option<Duration> {
    let pid: u32 = std::env::var("NATS_SERVER_PID").ok()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / per_second.max(1) as f64,
    ))
}

/// `grouplive IMPL PREFIX N KEYS MEMBERS WORKERS PARTITIONS HANDLER_MS`: on a fresh bucket
/// `PREFIX_<pid>`, starts the consumers (group members, a raw pull consumer or plain watch
/// subscribers) and waits until they are ready; then a writer on its own connection puts `N`
/// changes over `KEYS` keys as fast as it can (pipelined, 512 acks outstanding). Timed from
/// before the first put to the last change handled, so a group's copy into its mirror counts.
async fn group_live(implementation: &str, prefix: &str, run: LiveRun) -> anyhow::Result<Value> {
    let bucket = format!("{prefix}_{}", std::process::id());
    anyhow::ensure!(
        run.n <= run.keys * usize::try_from(faststream_core::kv::MAX_HISTORY).unwrap_or(1),
        "{} changes over {} keys exceed the bucket's history: some would never be delivered",
        run.n,
        run.keys
    );
    prefill(&bucket, 0, run.keys).await?;
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    let progress = Arc::new(Progress {
        handled: AtomicUsize::new(0),
        target: run.n,
        done: Notify::new(),
    });
    let (cpu_before, _) = usage();
    let (apps, raw) = match implementation {
        GROUP => {
            let apps = start_counting_apps(&group_watch(&bucket, &run), &run, &progress).await?;
            let group = broker.kv_group(&bucket, GROUP_NAME).await?;
            wait_balanced(&group, run.members, false).await?;
            (apps, Vec::new())
        }
        PLAIN => {
            let watch = KvWatch::new(bucket.clone())
                .include_history(true)
                .declare(false)
                .max_workers(run.workers);
            (
                start_counting_apps(&watch, &run, &progress).await?,
                Vec::new(),
            )
        }
        RAW_PULL | RAW_MIRROR | RAW_PARTITIONS => (
            Vec::new(),
            start_raw(implementation, &bucket, run.partitions, &progress).await?,
        ),
        other => anyhow::bail!("unknown live consumer {other:?}"),
    };
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let server_before = server_cpu();
    let started = Instant::now();
    let writer = {
        let bucket = bucket.clone();
        tokio::spawn(async move {
            write_pipelined(&js, &bucket, run.n, run.keys, |i| format!("v{i}").into()).await?;
            anyhow::Ok(started.elapsed())
        })
    };
    tokio::time::timeout(TIMEOUT, progress.done.notified())
        .await
        .context("the consumers did not handle every change")?;
    let took = started.elapsed();
    let server_after = server_cpu();
    let write_time = writer.await??;
    let (cpu_after, peak_rss_kib) = usage();
    for app in apps {
        app.stop().await?;
    }
    for task in raw {
        task.abort();
    }
    if implementation == GROUP {
        broker.kv_group(&bucket, GROUP_NAME).await?.delete().await?;
    }
    if matches!(implementation, RAW_MIRROR | RAW_PARTITIONS) {
        let client = async_nats::connect(url()).await?;
        let _ = async_nats::jetstream::new(client)
            .delete_stream(format!("RAWG_{bucket}"))
            .await;
    }
    drop_bucket(&bucket).await?;
    Ok(json!({
        "impl": implementation,
        "mode": if run.handler_ms == 0 { "group_live" } else { "group_slow" },
        "n": run.n,
        "keys": run.keys,
        "members": if matches!(implementation, GROUP | PLAIN) { run.members } else { 1 },
        "max_workers": if matches!(implementation, GROUP | PLAIN) { json!(run.workers) } else { Value::Null },
        "partitions": if matches!(implementation, GROUP | RAW_MIRROR | RAW_PARTITIONS) {
            json!(run.partitions)
        } else {
            Value::Null
        },
        "handler_ms": run.handler_ms,
        "seconds": took.as_secs_f64(),
        "msgs_per_s": run.n as f64 / took.as_secs_f64(),
        "writer_puts_per_s": run.n as f64 / write_time.as_secs_f64(),
        "cpu_s": cpu_after.saturating_sub(cpu_before).as_secs_f64(),
        "server_cpu_s": server_before
            .zip(server_after)
            .map(|(before, after)| after.saturating_sub(before).as_secs_f64()),
        "session_timeout_s": if implementation == GROUP {
            json!(GROUP_SESSION.as_secs_f64())
        } else {
            Value::Null
        },
        "peak_rss_kib": peak_rss_kib,
    }))
}

/// What one app of the membership workload handled: when, and which key (`k.<index>`).
#[derive(Default)]
struct Handled(std::sync::Mutex<Vec<(Instant, u32)>>);

impl Handled {
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |log| log.len())
    }

    /// The first time, from entry `from` on and not before `since`, a change of each of
    /// `partitions` was handled (`partition_of` maps a key's index to its partition).
    fn first_per_partition(
        &self,
        from: usize,
        since: Instant,
        partitions: &[u16],
        partition_of: &std::collections::HashMap<u32, u16>,
    ) -> std::collections::HashMap<u16, Instant> {
        let mut first = std::collections::HashMap::new();
        let Ok(log) = self.0.lock() else {
            return first;
        };
        for (at, key) in log.iter().skip(from) {
            if *at < since {
                continue;
            }
            if let Some(partition) = partition_of.get(key) {
                if partitions.contains(partition) {
                    first.entry(*partition).or_insert(*at);
                }
            }
        }
        first
    }
}

/// The handler of the membership workload: awaits 1 ms (so that members are busy when they
/// join, stop or die), then records the change.
async fn track(message: faststream_core::KvMessage, State(handled): State<Arc<Handled>>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let key = message
        .key()
        .strip_prefix("k.")
        .and_then(|index| index.parse().ok());
    if let (Some(key), Ok(mut log)) = (key, handled.0.lock()) {
        log.push((Instant::now(), key));
    }
}

/// The watch of every member of the membership workload (`max_workers` 16: a member can use
/// all its partitions).
fn membership_watch(bucket: &str) -> KvWatch {
    KvWatch::new(bucket.to_owned())
        .declare(false)
        .max_workers(16)
        .group(
            GroupSettings::new(GROUP_NAME)
                .partitions(DEFAULT_PARTITIONS)
                .session_timeout(GROUP_SESSION),
        )
}

/// A member of the membership workload in this process, recording what it handles.
fn tracking_member(bucket: &str, handled: &Arc<Handled>, started: &Started) -> App {
    App::new(NatsBroker::new(url()))
        .without_registered()
        .without_default_logging()
        .wait_for_catch_up(GROUP_WAIT)
        .with_state(Arc::clone(handled))
        .with_state(started.clone())
        .hook(HookStage::AfterStartup, "started", report_started)
        .subscriber("track", "k.*", membership_watch(bucket), track)
}

/// `groupmember BUCKET`: a member of the membership workload's group in a process of its own,
/// handling changes (doing nothing with them) until it is stopped or killed.
async fn group_member(bucket: &str) -> anyhow::Result<()> {
    async fn ignore(message: faststream_core::KvMessage) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        std::hint::black_box(message);
    }
    App::new(NatsBroker::new(url()))
        .without_registered()
        .without_default_logging()
        .subscriber("ignore", "k.*", membership_watch(bucket), ignore)
        .run()
        .await?;
    Ok(())
}

/// Waits until `handled` (from entry `from` on) holds a change handled after `since` in each
/// of `partitions`; returns the seconds from `since` to the first such change and to the
/// last partition's first.
async fn wait_handled(
    handled: &Handled,
    from: usize,
    since: Instant,
    partitions: &[u16],
    partition_of: &std::collections::HashMap<u32, u16>,
) -> anyhow::Result<(f64, f64)> {
    loop {
        let first = handled.first_per_partition(from, since, partitions, partition_of);
        if first.len() == partitions.len() {
            let seconds = |at: Option<&Instant>| {
                at.map_or(f64::NAN, |at| at.duration_since(since).as_secs_f64())
            };
            return Ok((seconds(first.values().min()), seconds(first.values().max())));
        }
        anyhow::ensure!(
            since.elapsed() < GROUP_WAIT,
            "partitions {partitions:?} not all handled after {GROUP_WAIT:?}: {:?} were",
            first.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The key index -> partition map of a group, read from its mirror's subjects
/// (`p.<partition>.k.<index>`).
async fn partitions_of_keys(
    bucket: &str,
    keys: usize,
) -> anyhow::Result<std::collections::HashMap<u32, u16>> {
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let stream = js.get_stream(format!("KVG_{bucket}_{GROUP_NAME}")).await?;
    let mut subjects = stream.info_with_subjects("p.>").await?;
    let mut map = std::collections::HashMap::with_capacity(keys);
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject?;
        let mut tokens = subject.split('.').skip(1);
        let partition = tokens.next().and_then(|token| token.parse().ok());
        let key = tokens.nth(1).and_then(|token| token.parse().ok());
        if let (Some(partition), Some(key)) = (partition, key) {
            map.insert(key, partition);
        }
    }
    anyhow::ensure!(
        map.len() == keys,
        "the mirror has {} of {keys} keys",
        map.len()
    );
    Ok(map)
}

/// The partitions assigned to the member other than `other`.
fn partitions_of_newcomer(info: &GroupInfo, other: &str) -> anyhow::Result<(String, Vec<u16>)> {
    info.members
        .iter()
        .find(|member| member.id != other)
        .map(|member| (member.id.clone(), member.partitions.clone()))
        .with_context(|| format!("no second member in {info:?}"))
}

/// `grouptimes IMPL PREFIX KEYS RATE`: membership changes on a fresh bucket of `KEYS` keys
/// while a writer changes `RATE` random keys a second, each member with the session timeout
/// [`GROUP_SESSION`] and a handler awaiting 1 ms (`max_workers` 16):
/// - rebalance: member B (an app in this process) joins member A's group; seconds from its
///   start until it has joined, until B has handled a change of each partition it took
///   over, and until `info()` shows the partitions balanced and pinned (heartbeats, which
///   carry the pins, are written every fifth of the session timeout);
/// - graceful hand-over: B stops; seconds until A handles a change of one of B's partitions,
///   and of each;
/// - takeover: member C (this binary, `groupmember`, in a child process) joins and is killed
///   with SIGKILL once balanced; seconds until A handles a change of one of C's partitions,
///   and of each.
async fn group_times(prefix: &str, keys: usize, rate: usize) -> anyhow::Result<Value> {
    let bucket = format!("{prefix}_{}", std::process::id());
    let _ = BUCKET.set(bucket.clone());
    prefill_flags(&bucket, keys).await?;
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    let (started, mut reports) = mpsc::unbounded_channel();
    let started = Started(started);

    // Member A, then the writer.
    let handled_a = Arc::new(Handled::default());
    let a = RunningApp::spawn(tracking_member(&bucket, &handled_a, &started));
    tokio::time::timeout(GROUP_WAIT, reports.recv())
        .await
        .context("member A did not join")?;
    let group = broker.kv_group(&bucket, GROUP_NAME).await?;
    let partition_of = partitions_of_keys(&bucket, keys).await?;
    let info = wait_balanced(&group, 1, false).await?;
    let a_id = info.members[0].id.clone();
    let stop_writer = Arc::new(AtomicBool::new(false));
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let writer = tokio::spawn(write_paced(js, keys, rate, Arc::clone(&stop_writer)));
    wait_balanced(&group, 1, true).await?;

    // Rebalance: B joins.
    let handled_b = Arc::new(Handled::default());
    let since = Instant::now();
    let b = RunningApp::spawn(tracking_member(&bucket, &handled_b, &started));
    tokio::time::timeout(GROUP_WAIT, reports.recv())
        .await
        .context("member B did not join")?;
    let joined = since.elapsed().as_secs_f64();
    // B's partitions as the balanced assignment says (its first heartbeat, written before it
    // has read the others', may claim every partition).
    let info = wait_balanced(&group, 2, false).await?;
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let (_, rebalance_handled) = wait_handled(&handled_b, 0, since, &moved, &partition_of).await?;
    let info = wait_balanced(&group, 2, true).await?;
    let rebalance_info = since.elapsed().as_secs_f64();

    // Graceful hand-over: B stops.
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let from = handled_a.len();
    let since = Instant::now();
    b.stop().await?;
    let stopped = since.elapsed().as_secs_f64();
    let (handover_first, handover_all) =
        wait_handled(&handled_a, from, since, &moved, &partition_of).await?;
    wait_balanced(&group, 1, true).await?;

    // Takeover: C joins in a child process, then dies without leaving.
    let mut c = tokio::process::Command::new(std::env::current_exe()?)
        .args(["groupmember", &bucket])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let info = wait_balanced(&group, 2, true).await?;
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let from = handled_a.len();
    let since = Instant::now();
    c.start_kill()?;
    let (takeover_first, takeover_all) =
        wait_handled(&handled_a, from, since, &moved, &partition_of).await?;
    let _ = c.wait().await;

    stop_writer.store(true, Ordering::Relaxed);
    let (written, write_time) = writer.await??;
    a.stop().await?;
    group.delete().await?;
    drop_bucket(&bucket).await?;
    Ok(json!({
        "impl": GROUP,
        "mode": "group_times",
        "keys": keys,
        "partitions": DEFAULT_PARTITIONS,
        "session_timeout_s": GROUP_SESSION.as_secs_f64(),
        "writer_puts_per_s": written as f64 / write_time.as_secs_f64(),
        "rebalance_joined_s": joined,
        "rebalance_handled_s": rebalance_handled,
        "rebalance_info_s": rebalance_info,
        "handover_stop_s": stopped,
        "handover_first_s": handover_first,
        "handover_all_s": handover_all,
        "takeover_first_s": takeover_first,
        "takeover_all_s": takeover_all,
    }))
}

// ---------------------------------------------------------------------------------------------
// The orchestrator.
// ---------------------------------------------------------------------------------------------

/// Writes `n` entries over `keys` keys to a fresh bucket with history 64.
async fn prefill(bucket: &str, n: usize, keys: usize) -> anyhow::Result<()> {
    prefill_with(bucket, n, keys, |i| format!("v{i}").into()).await
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
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    broker
        .key_value_with(faststream_core::kv::BucketConfig::new(bucket).history(64))
        .await?;
    write_pipelined(&js, bucket, n, keys, value).await
}

/// Puts `n` entries over `keys` keys `k.0` ... of `bucket`, entry `i` with the value
/// `value(i)`, as fast as the server takes them: publishes pipelined, 512 acks outstanding.
async fn write_pipelined(
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

async fn drop_bucket(bucket: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url()).await?;
    let _ = async_nats::jetstream::new(client)
        .delete_stream(format!("KV_{bucket}"))
        .await;
    Ok(())
}

/// Runs this binary with `args` and returns the JSON line it printed.
async fn child(args: &[String]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{args:?} failed: {}",
        output.status
    );
    let line = String::from_utf8(output.stdout)?;
    serde_json::from_str(line.trim()).with_context(|| format!("{args:?} printed {line:?}"))
}

/// Runs an anchor script of `examples/bench` with `python3`, if FastStream is installed.
async fn python(script: &str, args: &[&str]) -> Option<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
    let output = tokio::process::Command::new("python3")
        .arg(format!("{dir}/{script}"))
        .args(args)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        eprintln!("(skipped {script} {args:?}: it failed; `pip install faststream[nats]==0.7.8`?)");
        return None;
    }
    serde_json::from_slice(output.stdout.trim_ascii()).ok()
}

fn emit(value: &Value) {
    println!("{value}");
}

fn number(value: &Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or(f64::NAN)
}

async fn consumer(
    mode: &str,
    implementation: &str,
    bucket: &str,
    n: usize,
) -> anyhow::Result<Value> {
    let args = ["consume", mode, implementation, bucket, &n.to_string()].map(str::to_owned);
    child(&args).await
}

/// How many times each side of a comparison runs (alternating).
const REPEATS: usize = 3;
/// The observability overheads are a few percent: more runs, for a steadier median.
const OBSERVE_REPEATS: usize = 5;
/// Latency runs are bimodal with tokio's thread placement: more runs, and the best one too.
const LATENCY_REPEATS: usize = 5;

/// Every run of one implementation in a comparison.
struct Runs(Vec<Value>);

impl Runs {
    fn sorted_by(&self, field: &str) -> Vec<&Value> {
        let mut runs: Vec<&Value> = self.0.iter().collect();
        runs.sort_by(|a, b| number(a, field).total_cmp(&number(b, field)));
        runs
    }

    fn median(&self, field: &str) -> f64 {
        let runs = self.sorted_by(field);
        runs.get(runs.len() / 2)
            .map_or(f64::NAN, |run| number(run, field))
    }

    /// The lowest value: the best run for times, sizes and latencies.
    fn lowest(&self, field: &str) -> f64 {
        self.sorted_by(field)
            .first()
            .map_or(f64::NAN, |run| number(run, field))
    }
}

/// Runs `measure` for each implementation `repeats` times, alternating, printing every result;
/// returns the runs per implementation, in the order given.
async fn compare<F, Fut>(
    implementations: &[&str],
    repeats: usize,
    mut measure: F,
) -> anyhow::Result<Vec<Runs>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); implementations.len()];
    for _ in 0..repeats {
        for (index, implementation) in implementations.iter().enumerate() {
            let result = measure((*implementation).to_owned()).await?;
            emit(&result);
            results[index].push(result);
        }
    }
    Ok(results.into_iter().map(Runs).collect())
}

/// [`compare`] over child processes: `kv_bench <command> <variant> <bucket> <extra...>` for each
/// variant.
async fn compare_children(
    variants: &[&str],
    repeats: usize,
    command: &str,
    bucket: &str,
    extra: &[String],
) -> anyhow::Result<Vec<Runs>> {
    compare(variants, repeats, |variant| {
        let mut args = vec![command.to_owned(), variant, bucket.to_owned()];
        args.extend_from_slice(extra);
        async move { child(&args).await }
    })
    .await
}

struct Sizes {
    replay: (usize, usize),
    latency: usize,
    slow: (usize, usize),
    keys: usize,
    /// Keys of the catch-up bucket, keys of the read bucket, writer changes a second, seconds
    /// of reading.
    view: (usize, usize, usize, f64),
    group: GroupSizes,
}

/// The sizes of the group workloads: `group N KEYS SLOW_N SLOW_KEYS SLOW_WORKERS
/// SLOW_PARTITIONS RATE REPEATS`.
#[derive(Debug, Clone, Copy)]
struct GroupSizes {
    /// Changes and keys of the live-traffic runs with the fast handler.
    n: usize,
    keys: usize,
    /// Changes and keys of the slow-handler runs, `max_workers` of every member and partitions
    /// of their group. 40,000 changes: three members handle 20,000 in about 2 s, of which the
    /// start and the draining of the last partitions are a noticeable part.
    slow_n: usize,
    slow_keys: usize,
    slow_workers: usize,
    slow_partitions: u16,
    /// Changes a second written during the membership changes.
    rate: usize,
    /// Runs of each side of each comparison.
    repeats: usize,
}

impl GroupSizes {
    const DEFAULT: Self = Self {
        n: 50_000,
        keys: 1_000,
        slow_n: 40_000,
        slow_keys: 10_000,
        slow_workers: 8,
        slow_partitions: 48,
        rate: 2_000,
        repeats: REPEATS,
    };

    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let default = Self::DEFAULT;
        Ok(Self {
            n: arg(args, 1, default.n)?,
            keys: arg(args, 2, default.keys)?,
            slow_n: arg(args, 3, default.slow_n)?,
            slow_keys: arg(args, 4, default.slow_keys)?,
            slow_workers: arg(args, 5, default.slow_workers)?,
            slow_partitions: arg(args, 6, default.slow_partitions)?,
            rate: arg(args, 7, default.rate)?,
            repeats: arg(args, 8, default.repeats)?,
        })
    }
}

async fn run_all(sizes: Sizes, with_python: bool, only: Option<&str>) -> anyhow::Result<()> {
    let pid = std::process::id();
    let wanted = |mode: &str| only.is_none_or(|only| only == mode);
    let mut summary = serde_json::Map::new();

    if wanted("replay") {
        let (n, keys) = sizes.replay;
        let bucket = format!("bench_replay_{pid}");
        prefill(&bucket, n, keys).await?;
        let runs = compare(&[FRAMEWORK, RAW], REPEATS, |implementation| {
            let bucket = bucket.clone();
            async move { consumer("replay", &implementation, &bucket, n).await }
        })
        .await?;
        drop_bucket(&bucket).await?;
        let (framework, raw) = (&runs[0], &runs[1]);
        let throughput = framework.median("msgs_per_s");
        summary.insert(
            "replay_throughput_vs_raw".into(),
            json!(throughput / raw.median("msgs_per_s")),
        );
        summary.insert(
            "cpu_per_entry_vs_raw".into(),
            json!(framework.median("cpu_us_per_msg") / raw.median("cpu_us_per_msg")),
        );
        if with_python {
            let (n, keys) = (n.to_string(), keys.to_string());
            if let Some(py) = python("faststream_kv_bench.py", &["replay", &n, &keys]).await {
                emit(&py);
                summary.insert(
                    "replay_throughput_vs_faststream".into(),
                    json!(throughput / number(&py, "msgs_per_s")),
                );
            }
        }
    }

    if wanted("observe") {
        let (n, keys) = sizes.replay;
        let bucket = format!("bench_observe_{pid}");
        prefill(&bucket, n, keys).await?;
        let variants = [FRAMEWORK, WITH_METRICS, TRACED, TRACED_DEFAULT, RAW];
        let runs = compare(&variants, OBSERVE_REPEATS, |implementation| {
            let bucket = bucket.clone();
            async move { consumer("replay", &implementation, &bucket, n).await }
        })
        .await?;
        drop_bucket(&bucket).await?;
        let [plain, metrics, traced, sampled, raw] = &runs[..] else {
            anyhow::bail!("expected five runs");
        };
        let cpu = |runs: &Runs| runs.median("cpu_us_per_msg");
        let throughput = |runs: &Runs| runs.median("msgs_per_s");
        summary.insert(
            "metrics_throughput_vs_off".into(),
            json!(throughput(metrics) / throughput(plain)),
        );
        summary.insert(
            "metrics_cpu_per_entry_vs_off".into(),
            json!(cpu(metrics) / cpu(plain)),
        );
        summary.insert(
            "spans_off_cpu_per_entry_vs_raw".into(),
            json!(cpu(plain) / cpu(raw)),
        );
        summary.insert(
            "spans_all_cpu_per_entry_vs_raw".into(),
            json!(cpu(traced) / cpu(raw)),
        );
        summary.insert(
            "spans_default_cpu_per_entry_vs_raw".into(),
            json!(cpu(sampled) / cpu(raw)),
        );
    }

    if wanted("latency") {
        let m = sizes.latency.to_string();
        let bucket = format!("bench_latency_{pid}");
        let broker = NatsBroker::new(url());
        broker.connect().await?;
        broker.key_value(&bucket).await?;
        let runs = compare_children(
            &[FRAMEWORK, RAW],
            LATENCY_REPEATS,
            "latency",
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
    }

    if wanted("slow") {
        let (n, keys) = sizes.slow;
        let bucket = format!("bench_slow_{pid}");
        prefill(&bucket, n, keys).await?;
        let one = consumer("slow1", FRAMEWORK, &bucket, n).await?;
        let many = consumer("slow64", FRAMEWORK, &bucket, n).await?;
        drop_bucket(&bucket).await?;
        emit(&one);
        emit(&many);
        summary.insert(
            "slow_64_workers_vs_1".into(),
            json!(number(&many, "msgs_per_s") / number(&one, "msgs_per_s")),
        );
        if with_python {
            let (n, keys) = (n.to_string(), keys.to_string());
            if let Some(py) = python("faststream_kv_bench.py", &["slow", &n, &keys]).await {
                emit(&py);
                summary.insert(
                    "slow_64_workers_vs_faststream".into(),
                    json!(number(&many, "msgs_per_s") / number(&py, "msgs_per_s")),
                );
            }
        }
    }

    if wanted("keys") {
        let keys = sizes.keys;
        let bucket = format!("bench_keys_{pid}");
        prefill(&bucket, keys, keys).await?;
        let runs = compare(&[FRAMEWORK, RAW], REPEATS, |implementation| {
            let bucket = bucket.clone();
            async move { consumer("keys", &implementation, &bucket, keys).await }
        })
        .await?;
        drop_bucket(&bucket).await?;
        summary.insert(
            "peak_rss_10k_keys_vs_raw".into(),
            json!(runs[0].median("peak_rss_kib") / runs[1].median("peak_rss_kib")),
        );
    }

    if wanted("view") {
        let (n, keys, rate, seconds) = sizes.view;
        let bucket = format!("bench_view_{pid}");
        prefill_flags(&bucket, n).await?;
        let runs = compare_children(
            &[VIEW, RAW_COUNT, RAW_MAP, VIEW_RAW, WATCH],
            REPEATS,
            "catchup",
            &bucket,
            &[n.to_string()],
        )
        .await?;
        drop_bucket(&bucket).await?;
        let (view, raw, raw_map, view_raw, watch) =
            (&runs[0], &runs[1], &runs[2], &runs[3], &runs[4]);
        // Speed ratios: raw time / view time, so above 1 the view is faster.
        let speed = |of: &Runs, against: &Runs| against.median("seconds") / of.median("seconds");
        let best = |of: &Runs, against: &Runs| against.lowest("seconds") / of.lowest("seconds");
        summary.insert("view_catchup_vs_raw".into(), json!(speed(view, raw)));
        summary.insert("view_catchup_best_vs_raw".into(), json!(best(view, raw)));
        summary.insert(
            "view_catchup_cpu_vs_raw".into(),
            json!(raw.median("cpu_s") / view.median("cpu_s")),
        );
        summary.insert(
            "view_catchup_vs_raw_map".into(),
            json!(speed(view, raw_map)),
        );
        summary.insert(
            "view_raw_catchup_vs_raw".into(),
            json!(speed(view_raw, raw)),
        );
        summary.insert("watch_catchup_vs_raw".into(), json!(speed(watch, raw)));
        summary.insert(
            "view_bytes_per_key".into(),
            json!(view.median("bytes_per_key")),
        );
        summary.insert(
            "raw_map_bytes_per_key".into(),
            json!(raw_map.median("bytes_per_key")),
        );
        eprintln!(
            "view catch-up, {n} keys (median of {REPEATS}; best): kv_view {:.3} s ({:.3}), \
             raw watch {:.3} s ({:.3}), raw watch + serde + HashMap {:.3} s ({:.3}), \
             kv_view_raw {:.3} s ({:.3}), kv_watch alone {:.3} s ({:.3}); raw/view {:.2}x \
             (best {:.2}x)",
            view.median("seconds"),
            view.lowest("seconds"),
            raw.median("seconds"),
            raw.lowest("seconds"),
            raw_map.median("seconds"),
            raw_map.lowest("seconds"),
            view_raw.median("seconds"),
            view_raw.lowest("seconds"),
            watch.median("seconds"),
            watch.lowest("seconds"),
            speed(view, raw),
            best(view, raw),
        );
        eprintln!(
            "CPU time of the catch-up (median): kv_view {:.3} s, raw watch {:.3} s, \
             raw watch + serde + HashMap {:.3} s, kv_view_raw {:.3} s, kv_watch alone {:.3} s",
            view.median("cpu_s"),
            raw.median("cpu_s"),
            raw_map.median("cpu_s"),
            view_raw.median("cpu_s"),
            watch.median("cpu_s"),
        );
        eprintln!(
            "memory per key (RSS after catch-up - before, / {n}): kv_view {:.0} B, \
             raw HashMap<String, Flag> {:.0} B, kv_view_raw {:.0} B",
            view.median("bytes_per_key"),
            raw_map.median("bytes_per_key"),
            view_raw.median("bytes_per_key"),
        );

        let bucket = format!("bench_view_get_{pid}");
        prefill_flags(&bucket, keys).await?;
        let extra = [keys.to_string(), rate.to_string(), seconds.to_string()];
        let runs =
            compare_children(&["idle", "writer"], REPEATS, "viewget", &bucket, &extra).await?;
        drop_bucket(&bucket).await?;
        let (idle, writer) = (&runs[0], &runs[1]);
        for (name, runs) in [("idle", idle), ("writer", writer)] {
            for field in ["get_p50_ns", "get_p99_ns", "reads_per_s"] {
                summary.insert(format!("view_{field}_{name}"), json!(runs.median(field)));
            }
        }
        summary.insert(
            "view_get_p99_writer_vs_idle".into(),
            json!(writer.median("get_p99_ns") / idle.median("get_p99_ns")),
        );
        summary.insert(
            "view_writer_puts_per_s".into(),
            json!(writer.median("writer_puts_per_s")),
        );
        eprintln!(
            "view get, {keys} keys, {seconds} s per run (median of {REPEATS}; batches of \
             {GET_BATCH} timed together): idle p50 {:.0} ns p99 {:.0} ns, {:.1} M gets/s; \
             writer at {:.0}/s (target {rate}/s): p50 {:.0} ns p99 {:.0} ns, {:.1} M gets/s; \
             slowest batch of {GET_BATCH} {:.1} us idle, {:.1} us writer",
            idle.median("get_p50_ns"),
            idle.median("get_p99_ns"),
            idle.median("reads_per_s") / 1e6,
            writer.median("writer_puts_per_s"),
            writer.median("get_p50_ns"),
            writer.median("get_p99_ns"),
            writer.median("reads_per_s") / 1e6,
            idle.median("max_batch_ns") / 1e3,
            writer.median("max_batch_ns") / 1e3,
        );
    }

    if wanted("group") {
        // Groups need nats-server 2.11; run alone, an older server fails with the reason.
        let version = async_nats::connect(url()).await?.server_info().version;
        let at_least_2_11 = {
            let mut parts = version
                .split('.')
                .map(|part| part.parse::<u32>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 11)
        };
        if only.is_some() || at_least_2_11 {
            run_group(sizes.group, &mut summary).await?;
        } else {
            eprintln!("(skipped the group workloads: nats-server {version}, groups need 2.11)");
        }
    }

    emit(&json!({ "summary": summary }));
    Ok(())
}

/// The values of `field` in run order (times `scale`), for the figures printed beside the
/// medians.
fn each(runs: &Runs, field: &str, scale: f64) -> String {
    let values: Vec<String> = runs
        .0
        .iter()
        .map(|run| format!("{:.0}", number(run, field) * scale))
        .collect();
    values.join(", ")
}

/// The consumer-group workloads: one member against raw pull consumers (and the plain watch)
/// on live traffic; three members against one with a slow handler; the times of membership
/// changes. Each run in a child process of its own, on a fresh bucket (so a fresh group,
/// deleted after).
async fn run_group(
    sizes: GroupSizes,
    summary: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let prefix = format!("bench_group_{}", std::process::id());
    let GroupSizes {
        n, keys, repeats, ..
    } = sizes;
    let throughput = |runs: &Runs| runs.median("msgs_per_s");
    let rate = |runs: &Runs| {
        format!(
            "{:.0}/s ({})",
            throughput(runs),
            each(runs, "msgs_per_s", 1.0)
        )
    };

    // One member against raw async-nats, a fast handler.
    let fast = LiveRun {
        n,
        keys,
        members: 1,
        workers: 1,
        partitions: DEFAULT_PARTITIONS,
        handler_ms: 0,
    };
    let runs = compare_children(
        &[GROUP, RAW_PULL, PLAIN, RAW_MIRROR, RAW_PARTITIONS],
        repeats,
        "grouplive",
        &prefix,
        &fast.args(),
    )
    .await?;
    let (group, raw, plain, mirror, partitions) =
        (&runs[0], &runs[1], &runs[2], &runs[3], &runs[4]);
    let vs = |of: &Runs, against: &Runs| throughput(of) / throughput(against);
    summary.insert("group_throughput_vs_raw_pull".into(), json!(vs(group, raw)));
    summary.insert(
        "plain_watch_throughput_vs_raw_pull".into(),
        json!(vs(plain, raw)),
    );
    summary.insert(
        "group_throughput_vs_plain_watch".into(),
        json!(vs(group, plain)),
    );
    summary.insert(
        "group_throughput_vs_raw_partitions".into(),
        json!(vs(group, partitions)),
    );
    eprintln!(
        "group, live traffic: {n} changes over {keys} keys, a writer putting them pipelined (512 \
         acks outstanding) while the consumer handles them (counts, returns Ok); timed from the \
         first put to the last change handled, so a group's copy into its mirror counts (median \
         of {repeats}; each run): 1 group member ({DEFAULT_PARTITIONS} partitions, max_workers \
         1) {}; raw durable pull consumer on KV_<bucket>, ack per message {}; plain watch \
         subscriber {}; group/raw {:.2}x (target >= 0.9x), plain/raw {:.2}x, group/plain \
         {:.2}x",
        rate(group),
        rate(raw),
        rate(plain),
        vs(group, raw),
        vs(plain, raw),
        vs(group, plain),
    );
    eprintln!(
        "  the group's design without faststream-rs (a partitioned mirror made with async-nats): \
         one raw pull consumer on the mirror {} ({:.2}x raw); one raw pull consumer per \
         partition, max_ack_pending 1 {} ({:.2}x raw); group/that {:.2}x",
        rate(mirror),
        vs(mirror, raw),
        rate(partitions),
        vs(partitions, raw),
        vs(group, partitions),
    );

    let per_change = |runs: &Runs, field: &str| runs.median(field) * 1e6 / n as f64;
    if !per_change(group, "server_cpu_s").is_nan() {
        eprintln!(
            "  CPU per change (median; the consumer's process includes the writer, the server's \
             from NATS_SERVER_PID): group {:.1} us + server {:.1} us, raw pull {:.1} us + {:.1} \
             us, plain watch {:.1} us + {:.1} us, raw pull on the mirror {:.1} us + {:.1} us, \
             raw per partition {:.1} us + {:.1} us",
            per_change(group, "cpu_s"),
            per_change(group, "server_cpu_s"),
            per_change(raw, "cpu_s"),
            per_change(raw, "server_cpu_s"),
            per_change(plain, "cpu_s"),
            per_change(plain, "server_cpu_s"),
            per_change(mirror, "cpu_s"),
            per_change(mirror, "server_cpu_s"),
            per_change(partitions, "cpu_s"),
            per_change(partitions, "server_cpu_s"),
        );
    }

    // Three members against one, a handler awaiting 1 ms.
    let slow = |members, workers, partitions| LiveRun {
        n: sizes.slow_n,
        keys: sizes.slow_keys,
        members,
        workers,
        partitions,
        handler_ms: 1,
    };
    let members = |workers: usize, partitions: u16| {
        let prefix = prefix.clone();
        compare(&["1", "3"], repeats, move |members| {
            let mut args = vec!["grouplive".to_owned(), GROUP.to_owned(), prefix.clone()];
            args.extend(slow(members.parse().unwrap_or(1), workers, partitions).args());
            async move { child(&args).await }
        })
    };
    let (workers, partitions) = (sizes.slow_workers, sizes.slow_partitions);
    let runs = members(workers, partitions).await?;
    let (one, three) = (&runs[0], &runs[1]);
    summary.insert("group_3_members_vs_1".into(), json!(vs(three, one)));
    eprintln!(
        "group, slow handler (awaits 1 ms), {} changes over {} keys, live as above; max_workers \
         {workers} on every member of both sides and {partitions} partitions, so that one member \
         is bound by its workers and each of three holds {} partitions for its {workers} workers \
         (median of {repeats}; each run): 1 member {}, 3 members (3 apps in one process) {}; 3/1 \
         {:.2}x (target >= 2.5x)",
        sizes.slow_n,
        sizes.slow_keys,
        usize::from(partitions).div_ceil(3),
        rate(one),
        rate(three),
        vs(three, one),
    );
    let runs = members(16, DEFAULT_PARTITIONS).await?;
    let (one, three) = (&runs[0], &runs[1]);
    summary.insert(
        "group_3_members_vs_1_default_partitions".into(),
        json!(vs(three, one)),
    );
    eprintln!(
        "  the same with max_workers 16 and the default {DEFAULT_PARTITIONS} partitions: one \
         change in flight per partition, so at most {DEFAULT_PARTITIONS} calls at once however \
         many members: 1 member {}, 3 members {}; 3/1 {:.2}x",
        rate(one),
        rate(three),
        vs(three, one),
    );

    // Membership changes.
    let extra = [keys.to_string(), sizes.rate.to_string()];
    let runs = compare_children(&[GROUP], repeats, "grouptimes", &prefix, &extra).await?;
    let times = &runs[0];
    for field in [
        "rebalance_handled_s",
        "rebalance_info_s",
        "handover_first_s",
        "handover_all_s",
        "takeover_first_s",
        "takeover_all_s",
    ] {
        summary.insert(format!("group_{field}"), json!(times.median(field)));
    }
    let ms = |field: &str| {
        format!(
            "{:.0} ms ({})",
            times.median(field) * 1e3,
            each(times, field, 1e3)
        )
    };
    eprintln!(
        "group membership changes: {DEFAULT_PARTITIONS} partitions, session_timeout {:?} (the \
         default is {:?}), members awaiting 1 ms per change with max_workers 16, a writer \
         changing {} random keys of {keys} a second (median of {repeats}; each run): rebalance \
         (a 2nd member starts): joined {}, handled a change of each partition it took over {}, \
         info() balanced and pinned {} (heartbeats every {:?}); graceful hand-over (it stops): \
         the survivor handles a change of one of its partitions {}, of each {}; takeover (a \
         member in a child process killed with SIGKILL): one {}, each {}",
        GROUP_SESSION,
        faststream_core::kv::group::DEFAULT_SESSION_TIMEOUT,
        sizes.rate,
        ms("rebalance_joined_s"),
        ms("rebalance_handled_s"),
        ms("rebalance_info_s"),
        GROUP_SESSION / 5,
        ms("handover_first_s"),
        ms("handover_all_s"),
        ms("takeover_first_s"),
        ms("takeover_all_s"),
    );
    Ok(())
}

fn required(args: &[String], index: usize) -> anyhow::Result<&str> {
    args.get(index)
        .map(String::as_str)
        .with_context(|| format!("argument {index} is missing"))
}

fn arg<T: std::str::FromStr>(args: &[String], index: usize, default: T) -> anyhow::Result<T> {
    match args.get(index) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("argument {index} `{text}` is not a number")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let with_python = args.iter().any(|arg| arg == "--python");
    let args: Vec<String> = args.into_iter().filter(|arg| arg != "--python").collect();
    match args.first().map(String::as_str) {
        Some("consume") => {
            let (mode, implementation) = (required(&args, 1)?, required(&args, 2)?);
            let _ = BUCKET.set(required(&args, 3)?.to_owned());
            let n = arg(&args, 4, 0usize)?;
            emit(&consume(mode, implementation, n).await?);
        }
        Some("prefill") => {
            // For profiling one consumer alone: `prefill BUCKET N KEYS`, then `consume ...`.
            let bucket = required(&args, 1)?;
            prefill(bucket, arg(&args, 2, 20_000)?, arg(&args, 3, 1_000)?).await?;
        }
        Some("prefill-view") => {
            // `prefill-view BUCKET N`: N keys of JSON flags, for `catchup ...` alone.
            prefill_flags(required(&args, 1)?, arg(&args, 2, 100_000)?).await?;
        }
        Some("catchup") => {
            // `catchup IMPL BUCKET N`: one view catch-up consumer.
            let _ = BUCKET.set(required(&args, 2)?.to_owned());
            emit(&view_catchup(required(&args, 1)?, arg(&args, 3, 0usize)?).await?);
        }
        Some("viewget") => {
            // `viewget idle|writer BUCKET K RATE SECONDS`: reads from a view.
            let _ = BUCKET.set(required(&args, 2)?.to_owned());
            let (keys, rate) = (arg(&args, 3, 10_000usize)?, arg(&args, 4, 10_000usize)?);
            emit(&view_reads(required(&args, 1)?, keys, rate, arg(&args, 5, 2.0)?).await?);
        }
        Some("grouplive") => {
            // `grouplive IMPL PREFIX N KEYS MEMBERS WORKERS PARTITIONS HANDLER_MS`: one
            // live-traffic run on a fresh bucket.
            let run = LiveRun::parse(&args, 3)?;
            emit(&group_live(required(&args, 1)?, required(&args, 2)?, run).await?);
        }
        Some("grouptimes") => {
            // `grouptimes IMPL PREFIX KEYS RATE`: membership changes on a fresh bucket.
            let (keys, rate) = (arg(&args, 3, 1_000usize)?, arg(&args, 4, 2_000usize)?);
            emit(&group_times(required(&args, 2)?, keys, rate).await?);
        }
        Some("groupmember") => {
            // `groupmember BUCKET`: a member of the membership workload's group until killed.
            group_member(required(&args, 1)?).await?;
        }
        Some("latency") if args.len() == 4 => {
            let _ = BUCKET.set(required(&args, 2)?.to_owned());
            emit(&latency(required(&args, 1)?, arg(&args, 3, 500)?).await?);
        }
        Some(mode @ ("replay" | "observe" | "latency" | "slow" | "keys" | "view" | "group")) => {
            let sizes = Sizes {
                replay: (arg(&args, 1, 20_000)?, arg(&args, 2, 1_000)?),
                latency: arg(&args, 1, 500)?,
                slow: (arg(&args, 1, 20_000)?, arg(&args, 2, 1_000)?),
                keys: arg(&args, 1, 10_000)?,
                view: (
                    arg(&args, 1, 100_000)?,
                    arg(&args, 2, 10_000)?,
                    arg(&args, 3, 10_000)?,
                    arg(&args, 4, 2.0)?,
                ),
                group: if mode == "group" {
                    GroupSizes::parse(&args)?
                } else {
                    GroupSizes::DEFAULT
                },
            };
            run_all(sizes, with_python, Some(mode)).await?;
        }
        None => {
            let sizes = Sizes {
                replay: (20_000, 1_000),
                latency: 500,
                slow: (20_000, 1_000),
                keys: 10_000,
                view: (100_000, 10_000, 10_000, 2.0),
                group: GroupSizes::DEFAULT,
            };
            run_all(sizes, with_python, None).await?;
        }
        Some(other) => anyhow::bail!(
            "unknown workload `{other}`; expected replay N KEYS, observe N KEYS, latency M, \
             slow N KEYS, keys K, \
             view N K RATE SECONDS or group N KEYS SLOW_N SLOW_KEYS SLOW_WORKERS \
             SLOW_PARTITIONS RATE REPEATS"
        ),
    }
    Ok(())
}
