//! `objects watch N REPEATS`: N small objects written to a fresh store, then watched from the
//! start until every one has been seen (the latest version of each, the watch's initial state),
//! each watcher in a process of its own: an `App` with an `obj_subscriber` handler taking the
//! name and the `ObjMessage`, and `NatsBroker::obj_watch` read without a handler, against raw
//! async-nats `ObjectStore::watch_with_history`. Objects a second, CPU time per object and peak
//! RSS, REPEATS runs of each, alternating; the medians are compared. Each run is timed from
//! before it connects to the Nth object seen, as the replay consumers are; the rate after the
//! first object (connecting, the consumer's creation and the server's first delivery left out)
//! is reported beside it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::{ObjMessage, ObjWatch, State};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{drop_store, store_name};
use crate::broker::{app, connected_broker};
use crate::child::child;
use crate::cli::ObjectWatchSizes;
use crate::common::{url, TIMEOUT};
use crate::measure::usage;
use crate::report::{compare, Runs, Summary};
use crate::workloads::{FRAMEWORK, RAW};

/// `NatsBroker::obj_watch` read as a stream, without a handler.
const FRAMEWORK_WATCHER: &str = "faststream-rs-watcher";
/// The content of every object.
const OBJECT: [u8; 100] = [0x5a; 100];
/// Puts in flight at once while the store is written (each is three round trips).
const PUTS_IN_FLIGHT: usize = 64;

/// The name of object `i`: `o00000`, `o00001`, ...
fn object_name(i: usize) -> String {
    format!("o{i:05}")
}

/// Writes the objects, runs the watchers, prints the comparison.
pub async fn run(sizes: ObjectWatchSizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let store = store_name("watch", pid);
    drop_store(&store).await?;
    let put_took = write_objects(&store, sizes.n).await?;
    let runs = compare(
        &[FRAMEWORK, RAW, FRAMEWORK_WATCHER],
        sizes.repeats,
        |side| {
            let args = ["objwatch", &side, &store, &sizes.n.to_string()].map(str::to_owned);
            async move { child(&args).await }
        },
    )
    .await;
    drop_store(&store).await?;
    let runs = runs?;
    let (framework, raw, watcher) = (&runs[0], &runs[1], &runs[2]);
    let vs_raw = |of: &Runs, field: &str| of.median(field) / raw.median(field);
    summary.insert(
        "objects_watch_vs_raw".into(),
        json!(vs_raw(framework, "objects_per_s")),
    );
    summary.insert(
        "objects_watch_cpu_vs_raw".into(),
        json!(vs_raw(framework, "cpu_us_per_object")),
    );
    summary.insert(
        "objects_watch_peak_rss_vs_raw".into(),
        json!(vs_raw(framework, "peak_rss_kib")),
    );
    summary.insert(
        "objects_watch_after_first_vs_raw".into(),
        json!(vs_raw(framework, "after_first_objects_per_s")),
    );
    summary.insert(
        "objects_watch_watcher_vs_raw".into(),
        json!(vs_raw(watcher, "objects_per_s")),
    );
    summary.insert(
        "objects_watch_watcher_cpu_vs_raw".into(),
        json!(vs_raw(watcher, "cpu_us_per_object")),
    );
    let line = |name: &str, runs: &Runs| {
        format!(
            "{name} {:.0} objects/s ({}), after the first {:.0}/s, {:.1} µs CPU per object, \
             first after {:.1} ms, peak RSS {:.1} MiB",
            runs.median("objects_per_s"),
            runs.each("objects_per_s", 1.0),
            runs.median("after_first_objects_per_s"),
            runs.median("cpu_us_per_object"),
            runs.median("first_object_ms"),
            runs.median("peak_rss_kib") / 1024.0,
        )
    };
    eprintln!(
        "{} objects of {} bytes (put {:.2} s), watched from the start, median of {}: {}; {}; \
         {}; ratio {:.2}x (watcher {:.2}x; after the first object {:.2}x), CPU per object \
         {:.2}x (watcher {:.2}x)",
        sizes.n,
        OBJECT.len(),
        put_took.as_secs_f64(),
        sizes.repeats,
        line("obj_subscriber", framework),
        line("obj_watch", watcher),
        line("raw async-nats watch_with_history", raw),
        vs_raw(framework, "objects_per_s"),
        vs_raw(watcher, "objects_per_s"),
        vs_raw(framework, "after_first_objects_per_s"),
        vs_raw(framework, "cpu_us_per_object"),
        vs_raw(watcher, "cpu_us_per_object"),
    );
    Ok(())
}

/// `prefill-objects STORE N`: makes STORE afresh with N objects, as [`run`] does, for profiling
/// one watcher alone.
pub async fn prefill_objects(store: &str, n: usize) -> anyhow::Result<()> {
    drop_store(store).await?;
    let took = write_objects(store, n).await?;
    eprintln!(
        "{n} objects written to {store} in {:.2} s",
        took.as_secs_f64()
    );
    Ok(())
}

/// Makes `store` afresh with `n` objects of [`OBJECT`], [`PUTS_IN_FLIGHT`] puts at a time; the
/// time the puts took.
async fn write_objects(store: &str, n: usize) -> anyhow::Result<Duration> {
    let client = async_nats::connect(url()).await?;
    let store = async_nats::jetstream::new(client)
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: store.to_owned(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating object store {store}"))?;
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let name = object_name(i);
                let mut content: &[u8] = &OBJECT;
                store
                    .put(name.as_str(), &mut content)
                    .await
                    .with_context(|| format!("putting object {name}"))
            }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(started.elapsed())
}

/// Counts the objects a watcher has seen, noting when the first came, and wakes the run at the
/// target.
struct Seen {
    count: AtomicUsize,
    target: usize,
    first: OnceLock<Instant>,
    done: Notify,
}

impl Seen {
    fn new(target: usize) -> Self {
        Self {
            count: AtomicUsize::new(0),
            target,
            first: OnceLock::new(),
            done: Notify::new(),
        }
    }

    fn one(&self) {
        let _ = self.first.get_or_init(Instant::now);
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

/// The handler of the `obj_subscriber`: takes the name and the metadata, counts.
async fn count(name: String, object: ObjMessage, State(seen): State<Arc<Seen>>) {
    std::hint::black_box((name, object));
    seen.one();
}

/// `objwatch IMPL STORE N`, the child side: one watcher of STORE until it has seen N objects;
/// its JSON line.
pub async fn watch_objects(implementation: &str, store: &str, n: usize) -> anyhow::Result<Value> {
    anyhow::ensure!(n > 0, "objwatch needs at least one object");
    let seen = Arc::new(Seen::new(n));
    let (cpu_before, _) = usage();
    let started = Instant::now();
    match implementation {
        FRAMEWORK => {
            let app = app()
                .without_registered()
                .without_default_logging()
                .with_state(Arc::clone(&seen))
                .obj_subscriber("count", store.to_owned(), watch(), count);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(app.run_until(async {
                let _ = stopped.await;
            }));
            tokio::time::timeout(TIMEOUT, seen.done.notified())
                .await
                .context("the obj_subscriber did not see every object")?;
            let took = started.elapsed();
            let _ = stop.send(());
            running.await??;
            report(implementation, n, (started, took), &seen, cpu_before)
        }
        FRAMEWORK_WATCHER => {
            let broker = connected_broker().await?;
            let mut watcher = broker.obj_watch(store, watch()).await?;
            while seen.count.load(Ordering::Relaxed) < n {
                let object = tokio::time::timeout(TIMEOUT, watcher.next())
                    .await?
                    .context("the object watch ended")?;
                std::hint::black_box(object);
                seen.one();
            }
            report(
                implementation,
                n,
                (started, started.elapsed()),
                &seen,
                cpu_before,
            )
        }
        RAW => {
            let client = async_nats::connect(url()).await?;
            let objects = async_nats::jetstream::new(client)
                .get_object_store(store)
                .await?;
            let mut watch = objects.watch_with_history().await?;
            while seen.count.load(Ordering::Relaxed) < n {
                let info = tokio::time::timeout(TIMEOUT, watch.next())
                    .await?
                    .context("the watch ended")??;
                std::hint::black_box(info);
                seen.one();
            }
            report(
                implementation,
                n,
                (started, started.elapsed()),
                &seen,
                cpu_before,
            )
        }
        other => anyhow::bail!("unknown object watcher {other:?}"),
    }
}

/// The watch of both faststream-rs sides: the defaults, the store only looked up.
fn watch() -> ObjWatch {
    ObjWatch::new().declare(false)
}

/// A run's JSON line: `n` objects seen `took` after `started`, CPU time since `cpu_before`.
fn report(
    implementation: &str,
    n: usize,
    (started, took): (Instant, Duration),
    seen: &Seen,
    cpu_before: Duration,
) -> anyhow::Result<Value> {
    let (cpu_after, peak_rss_kib) = usage();
    let cpu = cpu_after.saturating_sub(cpu_before);
    let first = seen.first.get().context("no object was seen")?;
    let after_first = first.saturating_duration_since(started);
    Ok(json!({
        "impl": implementation,
        "mode": "objects_watch",
        "n": n,
        "seconds": took.as_secs_f64(),
        "objects_per_s": n as f64 / took.as_secs_f64(),
        "first_object_ms": after_first.as_secs_f64() * 1e3,
        // Start-up (connecting, the consumer, the server's first delivery) left out.
        "after_first_objects_per_s": (n - 1) as f64 / took.saturating_sub(after_first).as_secs_f64(),
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_object": cpu.as_secs_f64() * 1e6 / n as f64,
        "peak_rss_kib": peak_rss_kib,
    }))
}
