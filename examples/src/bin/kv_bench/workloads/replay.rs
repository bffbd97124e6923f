//! `replay N KEYS`: N entries over KEYS keys written first, then replayed with history by a
//! `#[subscriber]` handler and by a raw async-nats watcher, each in a process of its own.

use std::sync::Arc;

use faststream_core::{subscriber, KvWatch, State};
use serde_json::json;

use crate::anchors::python;
use crate::child::consumer;
use crate::cli::ReplaySizes;
use crate::common::{bucket, Progress};
use crate::data::{drop_bucket, prefill};
use crate::report::{compare, emit, number, Summary};
use crate::workloads::{FRAMEWORK, RAW, REPEATS};

/// The module of the handler below, for `App::only_module`.
pub const HANDLERS: &str = module_path!();

#[subscriber("k.*", kv_watch = KvWatch::new(bucket()).include_history(true).declare(false))]
async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
    std::hint::black_box(msg);
    progress.handled_one();
}

/// Throughput and CPU per entry, framework against raw (and FastStream with `--python`).
pub async fn run(
    sizes: ReplaySizes,
    pid: u32,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let ReplaySizes { n, keys } = sizes;
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
    Ok(())
}
