//! `keys K`: peak RSS of a consumer watching K keys (the latest value of each), a
//! `#[subscriber]` handler against a raw async-nats watcher.

use std::sync::Arc;

use faststream_core::{subscriber, KvWatch, State};
use serde_json::json;

use crate::child::consumer;
use crate::cli::KeysSizes;
use crate::common::{bucket, Progress};
use crate::data::{drop_bucket, prefill};
use crate::report::{compare, Summary};
use crate::workloads::{FRAMEWORK, RAW, REPEATS};

/// The module of the handler below, for `App::only_module`.
pub const HANDLERS: &str = module_path!();

#[subscriber("k.*", kv_watch = KvWatch::new(bucket()).declare(false))]
async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
    std::hint::black_box(msg);
    progress.handled_one();
}

/// Peak RSS, framework against raw.
pub async fn run(sizes: KeysSizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
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
    Ok(())
}
