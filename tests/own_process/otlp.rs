//! The `otlp` feature through the SDK's in-memory exporters: the span of each handled entry with
//! its messaging attributes, the handler's own span inside it, a writer's `traceparent` as its
//! parent, a failure on its status; the metric families as OpenTelemetry instruments; the
//! default entry sampling. And `Otlp::from_env`, in a process of its own with the standard
//! variables set, exporting to a collector the test runs.
//!
//! Its own test binary: an app installs the process-wide `tracing` subscriber (its default log
//! output plus the OTLP layer) and shuts the providers down when it stops, so one app a
//! process: the other tests run their app in a child process of this binary. Each test runs on
//! one server (the newest: nothing here depends on the server's version).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use faststream_core::kv::BucketConfig;
use faststream_core::otlp::Otlp;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::{NatsServer, ServerBinary};
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tracing::Instrument as _;

#[path = "otlp/messaging.rs"]
mod messaging;

/// How long the test waits for the spans.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

const WRITER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WRITER_SPAN: &str = "00f067aa0ba902b7";

async fn handle(message: KvMessage) -> anyhow::Result<()> {
    let key = message.key().to_owned();
    async move {
        tracing::info!("handling");
        if key.ends_with(".bad") {
            bail!("cannot handle {key}");
        }
        Ok(())
    }
    .instrument(tracing::info_span!("inner"))
    .await
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| &attribute.value)
}

fn string(span: &SpanData, key: &str) -> Option<String> {
    attribute(span, key).map(Value::to_string)
}

/// The sum data points of a `u64` counter, with their attributes.
fn counter_points(metrics: &[ResourceMetrics], name: &str) -> Vec<(Vec<KeyValue>, u64)> {
    let mut points = Vec::new();
    for metric in metrics
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == name)
    {
        if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
            for point in sum.data_points() {
                points.push((point.attributes().cloned().collect(), point.value()));
            }
        }
    }
    points
}

fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes
        .iter()
        .any(|attribute| attribute.key.as_str() == key && attribute.value.to_string() == value)
}

#[tokio::test]
async fn spans_and_metrics_go_out_over_otlp() -> anyhow::Result<()> {
    let binary = ServerBinary::discover()?.pop().context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let broker = NatsBroker::connect(BrokerConfig::new(server.url())).await?;
    // 64 revisions a key, so that no revision written is dropped before the watch sees it.
    let store = broker
        .key_value_with(BucketConfig::new("traced").history(64))
        .await?;
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .otlp(Otlp::new(tracer_provider, meter_provider.clone()).entry_sampling(1.0))
        .subscriber("traced", "orders.*", KvWatch::new("traced"), handle);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    store.put("orders.1", "one".into()).await?;
    // A writer publishing with the W3C trace context of its own span.
    let client = async_nats::connect(server.url()).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{WRITER_TRACE}-{WRITER_SPAN}-01").as_str(),
    );
    async_nats::jetstream::new(client)
        .publish_with_headers("$KV.traced.orders.2", headers, "two".into())
        .await?
        .await?;
    store.put("orders.bad", "three".into()).await?;

    let finished =
        faststream_testing::wait_for("3 `process traced` spans", EVENT_TIMEOUT, || async {
            let finished = spans.get_finished_spans()?;
            let processed = finished
                .iter()
                .filter(|span| span.name == "process traced")
                .count();
            let seen = format!("{processed}: {finished:#?}");
            anyhow::Ok(((processed == 3).then_some(finished), seen))
        })
        .await?;

    let process = |key: &str| {
        finished
            .iter()
            .find(|span| {
                span.name == "process traced" && string(span, "nats.kv.key").as_deref() == Some(key)
            })
            .with_context(|| format!("no span for {key}"))
    };
    for (key, revision) in [("orders.1", 1), ("orders.2", 2), ("orders.bad", 3)] {
        let span = process(key)?;
        assert_eq!(span.span_kind, SpanKind::Consumer, "{key}");
        assert_eq!(string(span, "messaging.system").as_deref(), Some("nats"));
        assert_eq!(
            string(span, "messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(
            string(span, "messaging.destination.name"),
            Some(format!("$KV.traced.{key}"))
        );
        assert_eq!(string(span, "nats.kv.bucket").as_deref(), Some("traced"));
        assert_eq!(
            attribute(span, "nats.kv.revision"),
            Some(&Value::I64(revision))
        );
        assert_eq!(
            string(span, "faststream.subscriber").as_deref(),
            Some("traced")
        );
        // The handler's own span is a child of it.
        let inner = finished
            .iter()
            .find(|inner| {
                inner.name == "inner" && inner.parent_span_id == span.span_context.span_id()
            })
            .with_context(|| format!("no handler span inside the span of {key}"))?;
        assert_eq!(inner.span_context.trace_id(), span.span_context.trace_id());
    }

    let linked = process("orders.2")?;
    assert_eq!(
        linked.span_context.trace_id(),
        TraceId::from_hex(WRITER_TRACE)?,
        "the writer's trace"
    );
    assert_eq!(linked.parent_span_id.to_string(), WRITER_SPAN);
    assert!(linked.parent_span_is_remote);
    let unlinked = process("orders.1")?;
    assert_ne!(
        unlinked.span_context.trace_id(),
        linked.span_context.trace_id()
    );

    let failed = process("orders.bad")?;
    assert!(
        matches!(failed.status, Status::Error { .. }),
        "{:?}",
        failed.status
    );
    assert_eq!(
        string(failed, "error.type").as_deref(),
        Some("handler_error")
    );
    assert!(matches!(
        process("orders.1")?.status,
        Status::Unset | Status::Ok
    ));

    // The same counts as `/metrics`, read by the observable instruments at the export.
    meter_provider.force_flush()?;
    let exported = metrics.get_finished_metrics()?;
    let handled = counter_points(&exported, "faststream_kv_handled");
    let count = |outcome: &str| {
        handled
            .iter()
            .find(|(attributes, _)| {
                has(attributes, "subscriber", "traced") && has(attributes, "outcome", outcome)
            })
            .map(|(_, value)| *value)
    };
    assert_eq!(count("ok"), Some(2), "{handled:?}");
    assert_eq!(count("error"), Some(1), "{handled:?}");
    let names: Vec<&str> = exported
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(|scope| scope.metrics())
        .map(|metric| metric.name())
        .collect();
    for name in [
        "faststream_kv_handler_seconds",
        "faststream_kv_watch_pending",
        "faststream_kv_watch_recreated",
        "faststream_nats_connected",
        "faststream_nats_reconnects",
    ] {
        assert!(names.contains(&name), "{name} not exported: {names:?}");
    }
    let durations = exported
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(|scope| scope.metrics())
        .find(|metric| metric.name() == "faststream_kv_handler_seconds")
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
                .data_points()
                .map(|point| point.count())
                .sum::<u64>(),
            _ => 0,
        });
    assert_eq!(durations, Some(3));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("the app did not stop within 60 s")???;
    Ok(())
}

async fn count(message: KvMessage, State(handled): State<Arc<AtomicU64>>) {
    std::hint::black_box(message);
    handled.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn by_default_one_entry_in_a_hundred_is_traced_and_every_entry_a_writer_traced(
) -> anyhow::Result<()> {
    pass_in_own_process("default_sampling_in_its_own_process", &[]).await
}

#[tokio::test]
#[ignore = "installs the process-wide subscriber of its app: run in a process of its own by \
            `by_default_one_entry_in_a_hundred_is_traced_and_every_entry_a_writer_traced`"]
async fn default_sampling_in_its_own_process() -> anyhow::Result<()> {
    let binary = ServerBinary::discover()?.pop().context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    // The default sampling: no `entry_sampling`.
    let otlp = Otlp::new(tracer_provider, SdkMeterProvider::builder().build());

    // Revisions 1 to 2000 untraced but for 1000, whose writer traced it, then 2001, traced
    // too: once its span is out, every earlier entry's is (one call at a time, in order).
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    NatsBroker::connect(BrokerConfig::new(server.url()))
        .await?
        .key_value("sampled")
        .await?;
    let traced = |sequence: u64| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{WRITER_TRACE}-{sequence:016x}-01").as_str(),
        );
        headers
    };
    let mut acks = Vec::new();
    for revision in 1..=2001_u64 {
        let subject = format!("$KV.sampled.e.{revision}");
        let ack = if revision == 1000 || revision == 2001 {
            js.publish_with_headers(subject, traced(revision), "x".into())
                .await?
        } else {
            js.publish(subject, "x".into()).await?
        };
        acks.push(ack);
    }
    for (revision, ack) in (1..).zip(acks) {
        anyhow::ensure!(
            ack.await?.sequence == revision,
            "revision {revision} out of order"
        );
    }

    let handled = Arc::new(AtomicU64::new(0));
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .otlp(otlp)
        .with_state(Arc::clone(&handled))
        .subscriber("sampled", "e.*", KvWatch::new("sampled"), count);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let finished = faststream_testing::wait_for("the span of e.2001", EVENT_TIMEOUT, || async {
        let finished = spans.get_finished_spans()?;
        let last = finished
            .iter()
            .any(|span| string(span, "nats.kv.key").as_deref() == Some("e.2001"));
        let seen = format!(
            "{} spans, {} handled",
            finished.len(),
            handled.load(Ordering::SeqCst)
        );
        anyhow::Ok((last.then_some(finished), seen))
    })
    .await?;

    let keys: Vec<String> = finished
        .iter()
        .filter(|span| span.name == "process sampled")
        .filter_map(|span| string(span, "nats.kv.key"))
        .collect();
    assert!(keys.iter().any(|key| key == "e.1000"), "{keys:?}");
    let untraced = keys
        .iter()
        .filter(|key| !matches!(key.as_str(), "e.1000" | "e.2001"))
        .count();
    println!("{binary}: {untraced} of 1999 untraced entries traced by default");
    // 1% of 1999 is 20 (measured: 19, always, as the revisions are hashed). Sampling all would
    // trace 1999, none 0; the bounds are about 2 standard deviations of a 1% draw.
    assert!((10..=30).contains(&untraced), "{untraced}: {keys:?}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("the app did not stop within 60 s")???;
    assert_eq!(handled.load(Ordering::SeqCst), 2001);
    Ok(())
}

/// What a collector received: one request's path, headers (names in lower case) and body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// Protobuf keeps strings as they are: a name or value sent is in the body.
    fn carries(&self, text: &str) -> bool {
        self.body
            .windows(text.len())
            .any(|window| window == text.as_bytes())
    }
}

/// A stand-in for an OpenTelemetry collector on `listener`: answers every OTLP/HTTP request
/// 200 with an empty body (an empty export response) and records it. Keep-alive requests on
/// one connection are read one after the other.
async fn collect(
    listener: tokio::net::TcpListener,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut stream = tokio::io::BufStream::new(stream);
            while let Ok(Some(request)) = read_request(&mut stream).await {
                if let Ok(mut all) = received.lock() {
                    all.push(request);
                }
                let answered = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .and(stream.flush().await);
                if answered.is_err() {
                    return;
                }
            }
        });
    }
}

/// One request: request line, headers, a body of `content-length` bytes; `None` at the end of
/// the connection.
async fn read_request(
    stream: &mut tokio::io::BufStream<tokio::net::TcpStream>,
) -> anyhow::Result<Option<Received>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .context("a request line without a path")?
        .to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').context("a header without a colon")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse())
        .transpose()?
        .context("a request without content-length")?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(Some(Received {
        path,
        headers,
        body,
    }))
}

/// Runs the ignored test `name` of this binary in a process of its own with `vars` set. Each
/// app here installs the process-wide `tracing` subscriber with its own OTLP layer, so one app
/// a process; and the OpenTelemetry SDK reads the variables when any test builds its
/// providers, so they are set for the child only.
async fn pass_in_own_process(name: &str, vars: &[(&str, String)]) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child
        .args(["--exact", "--ignored", "--nocapture", name])
        .envs(vars.iter().map(|(name, value)| (*name, value.as_str())))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), child.output())
        .await
        .context("the child test did not end within 120 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The collector's address in the child: a port free a moment ago.
const COLLECTOR_VAR: &str = "FASTSTREAM_TEST_COLLECTOR";

#[tokio::test]
async fn from_env_reads_the_standard_variables() -> anyhow::Result<()> {
    let collector = faststream_testing::free_local_addr()?;
    let vars = [
        (COLLECTOR_VAR, collector.clone()),
        // The base endpoint, for the metrics (`/v1/metrics` appended)...
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        // ... and one for the traces, used as it is.
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("http://{collector}/custom/traces"),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-collector-token=t0k3n".into(),
        ),
        ("OTEL_SERVICE_NAME", "billing-under-test".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=otlp-test".into(),
        ),
        // Spans without a sampled parent are dropped: only a writer's traced entry goes out.
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
        ("OTEL_TRACES_SAMPLER_ARG", "0".into()),
        // Exports within the test's wait: 0.2 s instead of 60 s, and 0.1 s instead of 5 s.
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ];
    pass_in_own_process("otlp_from_env_in_its_own_process", &vars).await
}

#[tokio::test]
#[ignore = "needs the OTEL_* variables set: run in a process of its own by \
            `from_env_reads_the_standard_variables`"]
async fn otlp_from_env_in_its_own_process() -> anyhow::Result<()> {
    let collector = std::env::var(COLLECTOR_VAR)?;
    let listener = tokio::net::TcpListener::bind(&collector).await?;
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(collect(listener, Arc::clone(&received)));

    let binary = ServerBinary::discover()?.pop().context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let store = NatsBroker::connect(BrokerConfig::new(server.url()))
        .await?
        .key_value("exported")
        .await?;
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .otlp(Otlp::from_env()?.entry_sampling(1.0))
        .subscriber("exported", "orders.*", KvWatch::new("exported"), handle);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    // First an entry nobody traced, then one its writer traced: its span ends later, so it is
    // exported in the same batch or a later one.
    store.put("orders.plain", "one".into()).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{WRITER_TRACE}-{WRITER_SPAN}-01").as_str(),
    );
    async_nats::jetstream::new(async_nats::connect(server.url()).await?)
        .publish_with_headers("$KV.exported.orders.traced", headers, "two".into())
        .await?
        .await?;

    // Both signals arrive while the app runs: the export intervals came from the variables
    // (by default the first metrics export would be 60 s away).
    let all =
        faststream_testing::wait_for("traces and metrics at the collector", EVENT_TIMEOUT, || {
            let received = Arc::clone(&received);
            async move {
                let all = received.lock().map(|all| all.clone()).unwrap_or_default();
                let traced = all.iter().any(|request| {
                    request.path == "/custom/traces" && request.carries("orders.traced")
                });
                let counted = all.iter().any(|request| {
                    request.path == "/v1/metrics" && request.carries("faststream_kv_handled")
                });
                let paths: Vec<&str> = all.iter().map(|request| request.path.as_str()).collect();
                let seen = format!("{paths:?}");
                anyhow::Ok(((traced && counted).then_some(all), seen))
            }
        })
        .await?;
    for request in &all {
        assert_eq!(
            request.header("x-collector-token"),
            Some("t0k3n"),
            "{}",
            request.path
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
        assert!(request.carries("billing-under-test"), "service.name");
        assert!(
            request.carries("deployment.environment") && request.carries("otlp-test"),
            "OTEL_RESOURCE_ATTRIBUTES"
        );
        // Dropped by the SDK's sampler, though the app made its span.
        assert!(!request.carries("orders.plain"), "{}", request.path);
    }
    assert!(all
        .iter()
        .all(|request| ["/custom/traces", "/v1/metrics"].contains(&request.path.as_str())));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("the app did not stop within 60 s")???;
    Ok(())
}
