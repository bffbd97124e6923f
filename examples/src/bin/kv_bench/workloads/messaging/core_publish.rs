//! `core-publish N`: a publisher (the parent, raw async-nats) sends N messages to a core NATS
//! subject; the consumer in a process of its own is a `#[subscriber]` app, a raw async-nats
//! `subscribe` loop or FastStream's `@broker.subscriber`. Timed from the first message received
//! to the Nth handled; a message that never arrives is counted as lost.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::serve::{announce_ready, server_has_subscriptions, Arrivals, ServedApp, Side};
use super::{consumer_result, run_compared, Consumed, CORE_SUBJECT};
use crate::cli::CorePublishSizes;
use crate::common::url;
use crate::report::{Runs, Summary};

/// The handler, alone in its module for `App::only_module`.
pub mod handlers {
    use std::sync::Arc;

    use faststream_core::{subscriber, State};

    use super::super::serve::Arrivals;

    /// The module of the handler below.
    pub const HANDLERS: &str = module_path!();

    // The subject is `CORE_SUBJECT`.
    #[subscriber("bench.msg.core")]
    async fn on_message(msg: String, State(arrivals): State<Arc<Arrivals>>) {
        arrivals.arrived();
        std::hint::black_box(msg);
        arrivals.handled_one();
    }
}

/// Messages published between two flushes of the publisher's buffer to the socket. What keeps
/// a consumer from dropping any is the subscription's capacity (65,536 in async-nats).
const PUBLISH_BATCH: usize = 1_000;

/// The child side with the `#[subscriber]` app: ready once subscribed, done at the Nth message
/// or when the rest stopped coming.
pub async fn framework(n: usize) -> anyhow::Result<Consumed> {
    let arrivals = Arc::new(Arrivals::new(n));
    let app = ServedApp::start(handlers::HANDLERS, Arc::clone(&arrivals)).await?;
    announce_ready();
    let handled = arrivals.wait().await?;
    let done = Consumed::now(handled);
    app.stop().await?;
    Ok(done)
}

/// The same with a raw async-nats subscription read in a loop.
pub async fn raw(n: usize) -> anyhow::Result<Consumed> {
    let client = async_nats::connect(url()).await?;
    let subscriber = client.subscribe(CORE_SUBJECT).await?;
    server_has_subscriptions(&client).await?;
    announce_ready();
    let arrivals = Arrivals::new(n);
    let reading = async {
        let mut subscriber = subscriber;
        while let Some(message) = subscriber.next().await {
            arrivals.arrived();
            std::hint::black_box(String::from_utf8(message.payload.to_vec())?);
            arrivals.handled_one();
        }
        anyhow::Ok(())
    };
    tokio::select! {
        read = reading => { read?; anyhow::bail!("the subscription ended"); }
        handled = arrivals.wait() => Ok(Consumed::now(handled?)),
    }
}

/// Publishes `n` messages `m<i>` to the subject, a flush every [`PUBLISH_BATCH`]; the time
/// taken.
async fn publish(client: &async_nats::Client, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for i in 0..n {
        client.publish(CORE_SUBJECT, format!("m{i}").into()).await?;
        if (i + 1) % PUBLISH_BATCH == 0 {
            client.flush().await?;
        }
    }
    client.flush().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// `msg-publish N`: the parent's publishing alone, for profiling a consumer alone.
pub async fn publish_alone(n: usize) -> anyhow::Result<Value> {
    let client = async_nats::connect(url()).await?;
    Ok(json!({ "published": n, "publish_s": publish(&client, n).await? }))
}

/// One run of `side`: started, published to, its result with the publisher's time.
async fn one_run(client: &async_nats::Client, side: Side, n: usize) -> anyhow::Result<Value> {
    consumer_result(side, "core", n, 0, || async {
        let seconds = publish(client, n).await?;
        Ok(json!({ "publish_s": seconds }))
    })
    .await
}

/// Throughput, CPU per message and peak RSS of each consumer, three runs each, alternating.
pub async fn run(
    sizes: CorePublishSizes,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let n = sizes.n;
    let client = async_nats::connect(url()).await?;
    let runs = run_compared(with_python, crate::workloads::REPEATS, |side| {
        let client = client.clone();
        async move { one_run(&client, side, n).await }
    })
    .await?;
    throughput_summary("core", &runs, summary);
    let lost: f64 = runs
        .iter()
        .flat_map(|runs| runs.0.iter())
        .map(|run| crate::report::number(run, "lost"))
        .sum();
    summary.insert("core_lost".into(), json!(lost));
    Ok(())
}

/// The ratios of a throughput workload (`core` or `pull`): ours against raw (throughput, CPU
/// per message, peak RSS) and against FastStream (throughput, CPU per message) if it ran.
pub fn throughput_summary(prefix: &str, runs: &[Runs], summary: &mut Summary) {
    let [framework, raw, rest @ ..] = runs else {
        return;
    };
    let ratio = |field: &str, other: &Runs| framework.median(field) / other.median(field);
    summary.insert(
        format!("{prefix}_throughput_vs_raw"),
        json!(ratio("msgs_per_s", raw)),
    );
    summary.insert(
        format!("{prefix}_cpu_per_msg_vs_raw"),
        json!(ratio("cpu_us_per_msg", raw)),
    );
    summary.insert(
        format!("{prefix}_peak_rss_vs_raw"),
        json!(ratio("peak_rss_kib", raw)),
    );
    if let Some(python) = rest.first() {
        summary.insert(
            format!("{prefix}_throughput_vs_faststream"),
            json!(ratio("msgs_per_s", python)),
        );
        summary.insert(
            format!("{prefix}_cpu_per_msg_vs_faststream"),
            json!(ratio("cpu_us_per_msg", python)),
        );
    }
}
