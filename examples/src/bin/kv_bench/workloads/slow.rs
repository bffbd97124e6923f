//! `slow N KEYS`: a handler awaiting 1 ms over N entries of KEYS keys, with one worker and with
//! `max_workers = 64`.

use serde_json::json;

use crate::anchors::python;
use crate::child::consumer;
use crate::cli::SlowSizes;
use crate::data::{drop_bucket, prefill};
use crate::report::{emit, number, Summary};
use crate::workloads::FRAMEWORK;

/// The handler with one worker (`consume slow1`).
pub mod one_worker {
    use std::sync::Arc;
    use std::time::Duration;

    use faststream_core::{subscriber, KvWatch, State};

    use crate::common::{bucket, Progress};

    /// The module of the handler below, for `App::only_module`.
    pub const HANDLERS: &str = module_path!();

    #[subscriber("k.*", kv_watch = KvWatch::new(bucket()).include_history(true).declare(false))]
    async fn handler(msg: String, State(progress): State<Arc<Progress>>) {
        std::hint::black_box(msg);
        tokio::time::sleep(Duration::from_millis(1)).await;
        progress.handled_one();
    }
}

/// The handler with 64 workers (`consume slow64`).
pub mod workers_64 {
    use std::sync::Arc;
    use std::time::Duration;

    use faststream_core::{subscriber, KvWatch, State};

    use crate::common::{bucket, Progress};

    /// The module of the handler below, for `App::only_module`.
    pub const HANDLERS: &str = module_path!();

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

/// Throughput with 64 workers against 1 (and against FastStream with `--python`).
pub async fn run(
    sizes: SlowSizes,
    pid: u32,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let SlowSizes { n, keys } = sizes;
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
    Ok(())
}
