//! The benchmark: the workloads of the FastStream anchor scripts (the project keeps its copy in
//! `examples/bench/`), through a `#[subscriber]` handler and through a raw async-nats watcher,
//! side by side in one run against the server at `NATS_URL`. Prints one JSON line per result,
//! then one summary line with the ratios.
//!
//! ```text
//! cargo run --release -p examples --bin kv_bench                    # everything, default sizes
//! cargo run --release -p examples --bin kv_bench -- --python        # plus the FastStream anchors
//! cargo run --release -p examples --bin kv_bench -- replay 20000 1000
//! cargo run --release -p examples --bin kv_bench -- latency 500
//! cargo run --release -p examples --bin kv_bench -- slow 2000 1000
//! cargo run --release -p examples --bin kv_bench -- keys 10000
//! ```
//!
//! Every consumer runs in its own process (this binary, started with `consume ...`), so that
//! its peak RSS and CPU time are its own; the parent writes the data first. To profile one
//! consumer alone (e.g. under `valgrind --tool=callgrind`):
//!
//! ```text
//! kv_bench prefill bench 20000 1000
//! kv_bench consume replay faststream-rs bench 20000     # or async-nats-raw
//! ```

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::{subscriber, App, KvWatch, NatsBroker, State};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

const FRAMEWORK: &str = "faststream-rs";
const RAW: &str = "async-nats-raw";
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

/// Runs `module`'s registered subscriber until it has handled `n` entries; seconds taken.
async fn consume_framework(module: &str, n: usize) -> anyhow::Result<Duration> {
    let progress = Arc::new(Progress {
        handled: AtomicUsize::new(0),
        target: n,
        done: Notify::new(),
    });
    let app = App::new(NatsBroker::new(url()))
        .without_default_logging()
        .only_module(format!("kv_bench::{module}"))
        .with_state(Arc::clone(&progress));
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
// The orchestrator.
// ---------------------------------------------------------------------------------------------

/// Writes `n` entries over `keys` keys to a fresh bucket with history 64.
async fn prefill(bucket: &str, n: usize, keys: usize) -> anyhow::Result<()> {
    let client = async_nats::connect(url()).await?;
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(format!("KV_{bucket}")).await;
    let broker = NatsBroker::new(url());
    broker.connect().await?;
    broker
        .key_value_with(faststream_core::kv::BucketConfig::new(bucket).history(64))
        .await?;
    let mut acks = Vec::with_capacity(512);
    for i in 0..n {
        let subject = format!("$KV.{bucket}.k.{}", i % keys);
        acks.push(js.publish(subject, format!("v{i}").into()).await?);
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

struct Sizes {
    replay: (usize, usize),
    latency: usize,
    slow: (usize, usize),
    keys: usize,
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

    if wanted("latency") {
        let m = sizes.latency.to_string();
        let bucket = format!("bench_latency_{pid}");
        let broker = NatsBroker::new(url());
        broker.connect().await?;
        broker.key_value(&bucket).await?;
        let runs = compare(&[FRAMEWORK, RAW], LATENCY_REPEATS, |implementation| {
            let args = [
                "latency".to_owned(),
                implementation,
                bucket.clone(),
                m.clone(),
            ];
            async move { child(&args).await }
        })
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

    emit(&json!({ "summary": summary }));
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
        Some("latency") if args.len() == 4 => {
            let _ = BUCKET.set(required(&args, 2)?.to_owned());
            emit(&latency(required(&args, 1)?, arg(&args, 3, 500)?).await?);
        }
        Some(mode @ ("replay" | "latency" | "slow" | "keys")) => {
            let sizes = Sizes {
                replay: (arg(&args, 1, 20_000)?, arg(&args, 2, 1_000)?),
                latency: arg(&args, 1, 500)?,
                slow: (arg(&args, 1, 20_000)?, arg(&args, 2, 1_000)?),
                keys: arg(&args, 1, 10_000)?,
            };
            run_all(sizes, with_python, Some(mode)).await?;
        }
        None => {
            let sizes = Sizes {
                replay: (20_000, 1_000),
                latency: 500,
                slow: (20_000, 1_000),
                keys: 10_000,
            };
            run_all(sizes, with_python, None).await?;
        }
        Some(other) => anyhow::bail!(
            "unknown workload `{other}`; expected replay N KEYS, latency M, slow N KEYS or keys K"
        ),
    }
    Ok(())
}
