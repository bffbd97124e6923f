//! `js-pull N BATCH`: a stream holding N messages, then a durable pull consumer in a process of
//! its own handles and acknowledges all N, BATCH a pull: a `#[subscriber(.., stream, durable,
//! pull_sub)]` app, raw async-nats `consumer.messages()` + `ack()`, or FastStream's
//! `pull_sub=PullSub(BATCH)`. Timed from the first message received until the server reports
//! every one acknowledged; each run starts with a fresh durable consumer.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy as NatsAckPolicy};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::core_publish::throughput_summary;
use super::serve::{announce_ready, Arrivals, Handled, ServedApp, Side};
use super::{consumer_result, run_compared, Consumed, DURABLE, PULL_SUBJECT, STREAM};
use crate::cli::JsPullSizes;
use crate::common::{url, TIMEOUT};
use crate::report::Summary;

/// The pull batch of this process's subscriber (set from the command line of a child).
static BATCH: OnceLock<usize> = OnceLock::new();

/// The batch set for this process (100 before).
fn pull_batch() -> usize {
    BATCH.get().copied().unwrap_or(100)
}

/// The handler, alone in its module for `App::only_module`.
pub mod handlers {
    use std::sync::Arc;

    use faststream_core::{subscriber, JStream, PullSub, State};

    use super::super::serve::Arrivals;
    use super::super::STREAM;
    use super::pull_batch;

    /// The module of the handler below.
    pub const HANDLERS: &str = module_path!();

    // The subject is `PULL_SUBJECT`, the durable name `DURABLE`; the parent made the stream.
    #[subscriber(
        "bench.js.pull",
        stream = JStream::new(STREAM).declare(false),
        durable = "bench",
        pull_sub = PullSub::new(pull_batch()),
    )]
    async fn on_delivery(msg: String, State(arrivals): State<Arc<Arrivals>>) {
        arrivals.arrived();
        std::hint::black_box(msg);
        arrivals.handled_one();
    }
}

/// The child side with the `#[subscriber]` app (acknowledging after each call, the default
/// policy): done when the server has every acknowledgement.
pub async fn framework(n: usize, batch: usize) -> anyhow::Result<Consumed> {
    let _ = BATCH.set(batch);
    let js = jetstream::new(async_nats::connect(url()).await?);
    let arrivals = Arc::new(Arrivals::new(n));
    let app = ServedApp::start(handlers::HANDLERS, Arc::clone(&arrivals)).await?;
    announce_ready();
    let handled = arrivals.wait().await?;
    let done = acknowledged(&js, &arrivals, handled, n).await?;
    app.stop().await?;
    Ok(done)
}

/// The same with raw async-nats: a durable pull consumer, `messages()` with BATCH a pull,
/// `ack()` after each message.
pub async fn raw(n: usize, batch: usize) -> anyhow::Result<Consumed> {
    let js = jetstream::new(async_nats::connect(url()).await?);
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await?
        .get_or_create_consumer(
            DURABLE,
            pull::Config {
                durable_name: Some(DURABLE.to_owned()),
                filter_subject: PULL_SUBJECT.to_owned(),
                ack_policy: NatsAckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    announce_ready();
    let arrivals = Arrivals::new(n);
    let reading = async {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            arrivals.arrived();
            std::hint::black_box(String::from_utf8(message.payload.to_vec())?);
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!(error))?;
            arrivals.handled_one();
        }
        anyhow::Ok(())
    };
    let handled = tokio::select! {
        read = reading => { read?; anyhow::bail!("the consumer's messages ended"); }
        handled = arrivals.wait() => handled?,
    };
    acknowledged(&js, &arrivals, handled, n).await
}

/// Waits until the server reports no acknowledgement pending and, if every message was
/// handled, nothing left to deliver; the time from the first message to then.
async fn acknowledged(
    js: &jetstream::Context,
    arrivals: &Arrivals,
    mut handled: Handled,
    n: usize,
) -> anyhow::Result<Consumed> {
    let stream = js.get_stream(STREAM).await?;
    let started = Instant::now();
    loop {
        let info = stream.consumer_info(DURABLE).await?;
        if info.num_ack_pending == 0 && (info.num_pending == 0 || handled.seen < n) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < TIMEOUT,
            "{} acknowledgements still pending after {TIMEOUT:?}",
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if let Some(first) = arrivals.first() {
        handled.took = first.elapsed();
    }
    Ok(Consumed::now(handled))
}

/// A fresh stream holding `n` messages `m<i>` on the subject (publishes pipelined, 512 acks
/// outstanding).
async fn prefill(js: &jetstream::Context, n: usize) -> anyhow::Result<()> {
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![PULL_SUBJECT.to_owned()],
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(512);
    for i in 0..n {
        acks.push(js.publish(PULL_SUBJECT, format!("m{i}").into()).await?);
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

/// `prefill-stream N`: the stream made afresh with `n` messages, for profiling a consumer alone.
pub async fn prefill_stream(n: usize) -> anyhow::Result<()> {
    prefill(&jetstream::new(async_nats::connect(url()).await?), n).await
}

/// One run of `side` on a fresh durable consumer.
async fn one_run(
    js: &jetstream::Context,
    side: Side,
    n: usize,
    batch: usize,
) -> anyhow::Result<Value> {
    let stream = js.get_stream(STREAM).await?;
    // Not there the first time; every run after removes the last one's.
    let _ = stream.delete_consumer(DURABLE).await;
    consumer_result(side, "pull", n, batch, || async { Ok(json!({})) }).await
}

/// Throughput, CPU per message and peak RSS of each consumer, three runs each, alternating.
pub async fn run(
    sizes: JsPullSizes,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let JsPullSizes { n, batch } = sizes;
    let js = jetstream::new(async_nats::connect(url()).await?);
    prefill(&js, n).await?;
    let runs = run_compared(with_python, crate::workloads::REPEATS, |side| {
        let js = js.clone();
        async move { one_run(&js, side, n, batch).await }
    })
    .await;
    let _ = js.delete_stream(STREAM).await;
    throughput_summary("pull", &runs?, summary);
    Ok(())
}
