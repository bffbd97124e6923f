//! `view N K RATE SECONDS`: bucket state. A `KvView`'s catch-up over N keys against a raw
//! `watch_with_history` (counting, and decoding into a `HashMap`), with the RSS each adds per
//! key; then `get` on a view of K keys for SECONDS, idle and while a writer on its own
//! connection changes RATE keys a second.

pub mod catchup;
pub mod reads;

use serde_json::json;

use crate::child::{compare_children, Compared};
use crate::cli::ViewSizes;
use crate::data::{drop_bucket, prefill_flags};
use crate::report::{Runs, Summary};
use crate::workloads::REPEATS;

/// A view over `k.*` decoded from JSON (`kv_view::<Flag>`).
const VIEW: &str = "faststream-rs-view";
/// The same view without decoding (`kv_view_raw`): separates decoding from the map's cost.
const VIEW_RAW: &str = "faststream-rs-view-raw";
/// FastStream's own watch (`kv_watch`, what the view reads), counting entries until
/// `CaughtUp`: separates the watch from the view's map.
const WATCH: &str = "faststream-rs-watch";
/// [`VIEW`] catching up through batched direct gets (`batched_catch_up`, nats-server 2.11+).
const VIEW_BATCHED: &str = "faststream-rs-view-batched";
/// [`WATCH`] catching up through batched direct gets.
const WATCH_BATCHED: &str = "faststream-rs-watch-batched";
/// A raw `watch_with_history(">")`, counting entries until one has `seen_current`.
const RAW_COUNT: &str = "async-nats-raw";
/// The same, decoding each value into `Flag` and inserting it into a `std` `HashMap`: what a
/// user would write by hand.
const RAW_MAP: &str = "async-nats-raw-map";
/// One raw ordered consumer from the stream's first sequence (not "last per subject"): what
/// the server's delivery costs without the per-subject lookup.
const RAW_BY_SEQUENCE: &str = "async-nats-by-sequence";
/// Two raw ordered consumers over the two halves of the stream's sequences, side by side: whether
/// a catch-up split over sequence ranges gets more from the server.
const RAW_RANGES: &str = "async-nats-ranges";
/// Gets timed together: one `Instant` pair per batch, so the clock's own cost (about 20 ns a
/// read) stays out of the per-get figure.
const GET_BATCH: usize = 32;

/// The catch-up comparison, then the reads idle and under the writer.
pub async fn run(sizes: ViewSizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    catch_up(sizes.n, pid, summary).await?;
    get(sizes, pid, summary).await
}

/// Catch-up time, CPU time and memory per key of every variant over `n` keys.
async fn catch_up(n: usize, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let bucket = format!("bench_view_{pid}");
    prefill_flags(&bucket, n).await?;
    let runs = compare_children(
        &[
            VIEW,
            RAW_COUNT,
            RAW_MAP,
            VIEW_RAW,
            WATCH,
            VIEW_BATCHED,
            WATCH_BATCHED,
            RAW_BY_SEQUENCE,
            RAW_RANGES,
        ],
        REPEATS,
        Compared::Catchup,
        &bucket,
        &[n.to_string()],
    )
    .await?;
    drop_bucket(&bucket).await?;
    let (view, raw, raw_map, view_raw, watch) = (&runs[0], &runs[1], &runs[2], &runs[3], &runs[4]);
    let (view_batched, watch_batched) = (&runs[5], &runs[6]);
    let (by_sequence, ranges) = (&runs[7], &runs[8]);
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
        "view_batched_catchup_vs_raw".into(),
        json!(speed(view_batched, raw)),
    );
    summary.insert(
        "watch_batched_catchup_vs_raw".into(),
        json!(speed(watch_batched, raw)),
    );
    summary.insert(
        "raw_by_sequence_catchup_vs_raw".into(),
        json!(speed(by_sequence, raw)),
    );
    summary.insert(
        "raw_ranges_catchup_vs_raw".into(),
        json!(speed(ranges, raw)),
    );
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
        "batched catch-up (median of {REPEATS}; best): kv_view {:.3} s ({:.3}), CPU {:.3} s; \
         kv_watch {:.3} s ({:.3}), CPU {:.3} s; raw/view {:.2}x, raw/watch {:.2}x",
        view_batched.median("seconds"),
        view_batched.lowest("seconds"),
        view_batched.median("cpu_s"),
        watch_batched.median("seconds"),
        watch_batched.lowest("seconds"),
        watch_batched.median("cpu_s"),
        speed(view_batched, raw),
        speed(watch_batched, raw),
    );
    eprintln!(
        "raw consumers by sequence (median of {REPEATS}): one from the first sequence {:.3} s \
         ({:.2}x raw), two over halves side by side {:.3} s ({:.2}x raw)",
        by_sequence.median("seconds"),
        speed(by_sequence, raw),
        ranges.median("seconds"),
        speed(ranges, raw),
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
    Ok(())
}

/// `get` latency and rate on a view of `sizes.keys` keys, idle and under the writer.
async fn get(sizes: ViewSizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let ViewSizes {
        keys,
        rate,
        seconds,
        ..
    } = sizes;
    let bucket = format!("bench_view_get_{pid}");
    prefill_flags(&bucket, keys).await?;
    let extra = [keys.to_string(), rate.to_string(), seconds.to_string()];
    let runs = compare_children(
        &["idle", "writer"],
        REPEATS,
        Compared::Viewget,
        &bucket,
        &extra,
    )
    .await?;
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
    Ok(())
}
