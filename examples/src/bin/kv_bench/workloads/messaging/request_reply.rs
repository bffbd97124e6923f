//! `request-reply M`: M sequential requests from the parent's raw async-nats client to a
//! responder in a process of its own: a `#[subscriber]` returning `Bytes`, a raw async-nats
//! `subscribe` + `publish(reply)` loop, or FastStream's `@broker.subscriber` returning the
//! body. Each round trip is timed by the requester; the responder's CPU and peak RSS are its
//! own.

use std::time::Instant;

use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::serve::{announce_ready, server_has_subscriptions, stdin_closed, ServedApp, Side};
use super::{consumer_result, run_compared, Consumed, ECHO_SUBJECT};
use crate::cli::RequestReplySizes;
use crate::common::url;
use crate::measure::percentile;
use crate::report::{Runs, Summary};

/// The handler, alone in its module for `App::only_module`.
pub mod handlers {
    use bytes::Bytes;
    use faststream_core::subscriber;

    /// The module of the handler below.
    pub const HANDLERS: &str = module_path!();

    // The subject is `ECHO_SUBJECT`.
    #[subscriber("svc.echo")]
    async fn echo(body: Bytes) -> Bytes {
        body
    }
}

/// Round trips before the measured ones.
const WARM_UP: usize = 20;
/// Round-trip times move with tokio's thread placement from run to run: more runs, and the
/// best one beside the median, as for `latency`.
const REQUEST_REPEATS: usize = 5;
/// The request body.
const BODY: &[u8] = b"ping 0123456789abcdef";

/// The child side with the `#[subscriber]` app: answers until stdin is closed.
pub async fn framework() -> anyhow::Result<Consumed> {
    let app = ServedApp::start(handlers::HANDLERS, ()).await?;
    announce_ready();
    stdin_closed().await;
    let done = Consumed::responder();
    app.stop().await?;
    Ok(done)
}

/// The same with a raw async-nats responder: `subscribe`, then `publish` to each reply subject.
pub async fn raw() -> anyhow::Result<Consumed> {
    let client = async_nats::connect(url()).await?;
    let mut requests = client.subscribe(ECHO_SUBJECT).await?;
    server_has_subscriptions(&client).await?;
    announce_ready();
    let answering = async {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                client.publish(reply, request.payload).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        answered = answering => { answered?; anyhow::bail!("the subscription ended"); }
        () = stdin_closed() => Ok(Consumed::responder()),
    }
}

/// `WARM_UP + m` sequential requests; the p50 and p99 of the last `m` round trips in us, and
/// the requests sent.
async fn requests(client: &async_nats::Client, m: usize) -> anyhow::Result<Value> {
    let mut samples = Vec::with_capacity(m);
    for round in 0..WARM_UP + m {
        let sent = Instant::now();
        let reply = client
            .request(ECHO_SUBJECT, bytes::Bytes::from_static(BODY))
            .await?;
        let took = sent.elapsed();
        anyhow::ensure!(
            reply.payload == BODY,
            "the reply was {:?}, not the request's body",
            reply.payload
        );
        if round >= WARM_UP {
            samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    anyhow::ensure!(!samples.is_empty(), "no round trips measured");
    samples.sort_unstable();
    Ok(json!({
        "m": m,
        "requests": WARM_UP + m,
        "p50_us": percentile(&samples, 0.5) as f64 / 1e3,
        "p99_us": percentile(&samples, 0.99) as f64 / 1e3,
    }))
}

/// One run of `side`: started, asked `m` times, stopped; its result with the round trips.
async fn one_run(client: &async_nats::Client, side: Side, m: usize) -> anyhow::Result<Value> {
    let mut result = consumer_result(side, "reply", 0, 0, || requests(client, m)).await?;
    // The responder counts nothing: its CPU is shared over the requests sent.
    let per_request = crate::report::number(&result, "cpu_s") * 1e6 / (WARM_UP + m) as f64;
    result["cpu_us_per_request"] = json!(per_request);
    Ok(result)
}

/// Round-trip p50 (median and best run) and p99 against raw and FastStream, five runs each,
/// alternating.
pub async fn run(
    sizes: RequestReplySizes,
    with_python: bool,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let m = sizes.m;
    let client = async_nats::connect(url()).await?;
    let runs = run_compared(with_python, REQUEST_REPEATS, |side| {
        let client = client.clone();
        async move { one_run(&client, side, m).await }
    })
    .await?;
    let [framework, raw, rest @ ..] = &runs[..] else {
        return Ok(());
    };
    let median = |field: &str, other: &Runs| framework.median(field) / other.median(field);
    summary.insert("request_p50_vs_raw".into(), json!(median("p50_us", raw)));
    summary.insert(
        "request_best_p50_vs_raw".into(),
        json!(framework.lowest("p50_us") / raw.lowest("p50_us")),
    );
    summary.insert("request_p99_vs_raw".into(), json!(median("p99_us", raw)));
    summary.insert(
        "request_cpu_vs_raw".into(),
        json!(median("cpu_us_per_request", raw)),
    );
    summary.insert(
        "request_peak_rss_vs_raw".into(),
        json!(median("peak_rss_kib", raw)),
    );
    if let Some(python) = rest.first() {
        summary.insert(
            "request_p50_vs_faststream".into(),
            json!(median("p50_us", python)),
        );
    }
    Ok(())
}
