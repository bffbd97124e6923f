//! The `otlp` feature through the SDK's in-memory exporters: the span of each handled entry with
//! its messaging attributes, the handler's own span inside it, a writer's `traceparent` as its
//! parent, a failure on its status; and the metric families as OpenTelemetry instruments.
//!
//! Its own test binary: the app installs the process-wide `tracing` subscriber (its default log
//! output plus the OTLP layer) and shuts the providers down when it stops, so one app, on one
//! server (the newest: nothing here depends on the server's version).

use std::time::Duration;

use anyhow::{bail, Context as _};
use faststream_core::kv::BucketConfig;
use faststream_core::otlp::Otlp;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, NatsBroker};
use faststream_testing::{NatsServer, ServerBinary};
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument as _;

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
