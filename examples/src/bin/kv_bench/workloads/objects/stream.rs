//! `objects stream SIZE_MB REPEATS`: one object of SIZE_MB megabytes (async-nats's 128 KiB
//! chunks) read to the end, each reader in a process of its own: `ObjectStore::get` through
//! `AsyncRead` (the same 128 KiB buffer as the raw side) and as a `Stream` of chunks, against raw
//! async-nats `get` (an ordered push consumer; it checks the digest too). Throughput, CPU time
//! and peak RSS above the process's idle RSS (connected, store looked up), REPEATS runs of each,
//! alternating; the medians are compared.

use std::time::Instant;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::{drop_store, store_name};
use crate::broker::connected_broker;
use crate::child::child;
use crate::cli::ObjectStreamSizes;
use crate::common::url;
use crate::measure::{rss_bytes, usage};
use crate::report::{compare, Summary};
use crate::workloads::{FRAMEWORK, RAW};

/// `ObjectStore::get` read as a `Stream` of chunks (no copy).
const FRAMEWORK_CHUNKS: &str = "faststream-rs-chunks";
/// The object read.
const OBJECT: &str = "big";
/// What each `AsyncRead` side reads into: the chunk size.
const BUFFER: usize = 128 << 10;

/// Writes the object, runs the readers, prints the comparison.
pub async fn run(sizes: ObjectStreamSizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let store = store_name("stream", pid);
    let size = sizes.size_mb as u64 * 1_000_000;
    drop_store(&store).await?;
    let broker = connected_broker().await?;
    let started = Instant::now();
    broker
        .object_storage(&store)
        .await?
        .put(OBJECT, tokio::io::repeat(0x5a).take(size))
        .await?;
    let put_took = started.elapsed();
    let runs = compare(&[FRAMEWORK, RAW, FRAMEWORK_CHUNKS], sizes.repeats, |side| {
        let args = ["objget", &side, &store, OBJECT, &size.to_string()].map(str::to_owned);
        async move { child(&args).await }
    })
    .await;
    drop_store(&store).await?;
    let runs = runs?;
    let (framework, raw, chunks) = (&runs[0], &runs[1], &runs[2]);
    let ratio = |of: &crate::report::Runs| of.median("mb_per_s") / raw.median("mb_per_s");
    summary.insert("objects_stream_vs_raw".into(), json!(ratio(framework)));
    summary.insert("objects_stream_chunks_vs_raw".into(), json!(ratio(chunks)));
    for (name, runs) in [("", framework), ("_raw", raw), ("_chunks", chunks)] {
        summary.insert(
            format!("objects_stream_rss_above_idle_mib{name}"),
            json!(runs.median("rss_above_idle_kib") / 1024.0),
        );
    }
    eprintln!(
        "object of {} MB (put {:.2} s, {:.0} MB/s), median of {}: ObjectStore::get AsyncRead \
         {:.0} MB/s ({}), as chunks {:.0} MB/s ({}), raw async-nats get {:.0} MB/s ({}); \
         ratio {:.2}x (chunks {:.2}x); peak RSS above idle {:.1} MiB, chunks {:.1} MiB, \
         raw {:.1} MiB",
        sizes.size_mb,
        put_took.as_secs_f64(),
        size as f64 / 1e6 / put_took.as_secs_f64(),
        sizes.repeats,
        framework.median("mb_per_s"),
        framework.each("mb_per_s", 1.0),
        chunks.median("mb_per_s"),
        chunks.each("mb_per_s", 1.0),
        raw.median("mb_per_s"),
        raw.each("mb_per_s", 1.0),
        ratio(framework),
        ratio(chunks),
        framework.median("rss_above_idle_kib") / 1024.0,
        chunks.median("rss_above_idle_kib") / 1024.0,
        raw.median("rss_above_idle_kib") / 1024.0,
    );
    Ok(())
}

/// `objget IMPL STORE NAME SIZE`, the child side: connects, looks the store up, then times
/// reading the object to the end; its JSON line.
pub async fn read_object(
    implementation: &str,
    store: &str,
    name: &str,
    size: u64,
) -> anyhow::Result<Value> {
    let (read, took, idle, cpu) = match implementation {
        FRAMEWORK | FRAMEWORK_CHUNKS => {
            let store = connected_broker()
                .await?
                .lookup_object_storage(store)
                .await?;
            let idle = rss_bytes()?;
            let (cpu_before, _) = usage();
            let started = Instant::now();
            let mut reader = store.get(name).await?;
            let read = if implementation == FRAMEWORK {
                read_to_end(&mut reader).await?
            } else {
                let mut read = 0;
                while let Some(chunk) = reader.next().await {
                    read += std::hint::black_box(chunk?).len() as u64;
                }
                read
            };
            (read, started.elapsed(), idle, cpu_before)
        }
        RAW => {
            let client = async_nats::connect(url()).await?;
            let store = async_nats::jetstream::new(client)
                .get_object_store(store)
                .await?;
            let idle = rss_bytes()?;
            let (cpu_before, _) = usage();
            let started = Instant::now();
            let mut object = store.get(name).await?;
            let read = read_to_end(&mut object).await?;
            (read, started.elapsed(), idle, cpu_before)
        }
        other => anyhow::bail!("unknown object reader {other:?}"),
    };
    let (cpu_after, peak_rss_kib) = usage();
    anyhow::ensure!(
        read == size,
        "{implementation} read {read} bytes, expected {size}"
    );
    Ok(json!({
        "impl": implementation,
        "mode": "objects_stream",
        "bytes": read,
        "seconds": took.as_secs_f64(),
        "mb_per_s": read as f64 / 1e6 / took.as_secs_f64(),
        "cpu_s": cpu_after.saturating_sub(cpu).as_secs_f64(),
        "idle_rss_kib": idle / 1024,
        "peak_rss_kib": peak_rss_kib,
        "rss_above_idle_kib": (peak_rss_kib * 1024).saturating_sub(idle) / 1024,
    }))
}

/// Reads `reader` to its end through a [`BUFFER`]-byte buffer, keeping nothing; the bytes read.
async fn read_to_end(reader: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<u64> {
    let mut buffer = vec![0; BUFFER];
    let mut read = 0;
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .context("reading the object")?;
        if n == 0 {
            return Ok(read);
        }
        read += n as u64;
        std::hint::black_box(&buffer[..n]);
    }
}
