//! OTLP export (the `otlp` feature): the per-entry spans and the metric families of `/metrics`,
//! over OTLP/HTTP with protobuf, configured by the standard OpenTelemetry variables.
//!
//! ```no_run
//! use faststream_core::otlp::Otlp;
//! use faststream_core::{App, BrokerConfig};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_SERVICE_NAME=billing
//! App::new(BrokerConfig::from_env())
//!     .otlp(Otlp::from_env()?)
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Traces.** The span of a handled entry (see [`ENTRY_TARGET`]) and the handler's own
//!   spans inside it. A `traceparent` header on the entry (a writer publishing to
//!   `$KV.<bucket>.<key>` with the W3C trace context) makes the span its child. Entries are
//!   sampled before a span is made ([`Otlp::entry_sampling`], default 1%; a writer's sampled
//!   trace always), then by the SDK's sampler (`OTEL_TRACES_SAMPLER`).
//! - **Metrics.** The same families as `/metrics`, read by observable instruments from the
//!   same atomics at each export (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s); counters
//!   are named without the `_total` suffix, which a Prometheus exporter adds back. The one
//!   exception to "recorded once" is the handler duration histogram: OpenTelemetry has no
//!   asynchronous histogram, so each call is also recorded into an OpenTelemetry histogram
//!   with the same bounds.
//! - **Logging.** With the default log output, the app adds [`Otlp::layer`] to it. A program
//!   that installs its own `tracing` subscriber adds the layer itself.
//!
//! The app flushes and shuts both providers down when it stops.

use std::sync::Arc;

use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::error::{Error, Result};
use crate::logging::ExportLayer;
use crate::observe::metrics::{DurationExport, DurationRecorder};
use crate::observe::metrics::{Kind, Metrics, Value, DURATION_BUCKETS};
use crate::observe::trace::EntrySampler;
use crate::observe::trace::ENTRY_TARGET;
use crate::observe::SubscriberId;

/// The instrumentation scope of everything exported.
const SCOPE: &str = "faststream";

/// Where traces and metrics go: a tracer provider and a meter provider. Give it to
/// [`App::otlp`](crate::App::otlp).
#[derive(Debug, Clone)]
pub struct Otlp {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    entry_sampling: f64,
}

/// The share of entries that get an exported span unless [`Otlp::entry_sampling`] says
/// otherwise: 1% of the revisions, which keeps a handled entry within 1.3x the CPU of a
/// raw async-nats watch (the README has the figures).
pub const DEFAULT_ENTRY_SAMPLING: f64 = 0.01;

impl Otlp {
    /// OTLP/HTTP exporters configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (default `http://localhost:4318`), the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// and `..._METRICS_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
    /// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, and
    /// `OTEL_METRIC_EXPORT_INTERVAL`. Spans are sent in batches from a background thread.
    pub fn from_env() -> Result<Self> {
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|source| Error::Otlp {
                signal: "traces",
                source,
            })?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|source| Error::Otlp {
                signal: "metrics",
                source,
            })?;
        let resource = Resource::builder().build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metrics)
            .build();
        Ok(Self::new(tracer_provider, meter_provider))
    }

    /// Export through providers built elsewhere: another exporter, a custom pipeline, or the
    /// SDK's in-memory exporters in tests.
    pub fn new(tracer_provider: SdkTracerProvider, meter_provider: SdkMeterProvider) -> Self {
        Self {
            tracer_provider,
            meter_provider,
            entry_sampling: DEFAULT_ENTRY_SAMPLING,
        }
    }

    /// The share of entries that get a span, 0 to 1 (default [`DEFAULT_ENTRY_SAMPLING`]; 0.75
    /// traces three revisions in four), decided by a hash of the revision before the span is
    /// made, so the same revisions are traced on every instance.
    /// An entry whose writer sent a sampled `traceparent` always gets one. 1.0 traces every
    /// entry, at several microseconds of CPU each; the SDK's sampler applies after this one.
    #[must_use]
    pub fn entry_sampling(mut self, ratio: f64) -> Self {
        self.entry_sampling = ratio;
        self
    }

    /// Which entries get a span: sampled by revision.
    pub(crate) fn entry_sampler(&self) -> EntrySampler {
        EntrySampler::new(self.entry_sampling)
    }

    /// The `tracing` layer that exports spans: the per-entry spans ([`ENTRY_TARGET`], at
    /// `DEBUG`) and everything else at `INFO` and above. For a program that installs its own
    /// subscriber; with the default log output the app adds it.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let filter = Targets::new()
            .with_target(ENTRY_TARGET, Level::DEBUG)
            .with_default(Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer_provider.tracer(SCOPE))
            .with_filter(filter)
    }

    /// [`layer`](Self::layer), for the default log output.
    pub(crate) fn export_layer(&self) -> ExportLayer {
        Box::new(self.layer::<tracing_subscriber::Registry>())
    }

    /// The tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// Registers the observable instruments that read `metrics` at each export, and gives it
    /// the duration histogram.
    pub(crate) fn export(&self, metrics: &Metrics) -> Exported {
        let meter = self.meter_provider.meter(SCOPE);
        let histogram = meter
            .f64_histogram("faststream_kv_handler_seconds")
            .with_unit("s")
            .with_description("How long handler calls took, in seconds.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        metrics.export_durations(Arc::new(OtelHistogram(histogram)));
        let observables = metrics
            .collect()
            .into_iter()
            .filter(|family| family.kind != Kind::Histogram)
            .map(|family| observe(&meter, metrics, family.name, family.help, family.kind))
            .collect();
        Exported {
            _observables: observables,
        }
    }

    /// Exports what is buffered and stops both providers.
    pub(crate) fn shutdown(&self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            tracing::warn!(%error, "could not flush the OTLP traces");
        }
        if let Err(error) = self.meter_provider.shutdown() {
            tracing::warn!(%error, "could not flush the OTLP metrics");
        }
    }
}

/// The registered instruments, kept for as long as the app runs.
pub(crate) struct Exported {
    _observables: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exported")
    }
}

/// An observable instrument for one family, reading its series at each export.
fn observe(
    meter: &Meter,
    metrics: &Metrics,
    name: &'static str,
    help: &'static str,
    kind: Kind,
) -> Box<dyn std::any::Any + Send + Sync> {
    let series = {
        let metrics = metrics.clone();
        move || {
            metrics
                .collect()
                .into_iter()
                .find(|family| family.name == name)
                .map(|family| family.series)
                .unwrap_or_default()
        }
    };
    let attributes = |labels: &[(&'static str, Arc<str>)]| -> Vec<KeyValue> {
        labels
            .iter()
            .map(|(label, value)| KeyValue::new(*label, value.to_string()))
            .collect()
    };
    match kind {
        Kind::Counter => Box::new(
            meter
                .u64_observable_counter(name.strip_suffix("_total").unwrap_or(name))
                .with_description(help)
                .with_callback(move |observer| {
                    for (labels, value) in series() {
                        if let Value::Counter(count) = value {
                            observer.observe(count, &attributes(&labels));
                        }
                    }
                })
                .build(),
        ),
        _ => Box::new(
            meter
                .i64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |observer| {
                    for (labels, value) in series() {
                        if let Value::Gauge(gauge) = value {
                            observer.observe(gauge, &attributes(&labels));
                        }
                    }
                })
                .build(),
        ),
    }
}

/// How spans are linked to their writer's trace: [`link_to_writer`].
pub(crate) const LINK_PARENT: Option<fn(&Span, Option<&async_nats::HeaderMap>)> =
    Some(link_to_writer);

/// Makes `span` a child of the writer's trace if the entry carries a W3C `traceparent`. With
/// the feature compiled in, every enabled span is linked, whether the app exports through
/// [`App::otlp`](crate::App::otlp) or a program's own OpenTelemetry layer does.
fn link_to_writer(span: &Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else {
        return;
    };
    if headers.get("traceparent").is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, where there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// How a published message carries the current trace: [`inject_current`].
pub(crate) const INJECT: Option<fn(&mut async_nats::HeaderMap)> = Some(inject_current);

/// Writes the current span's W3C `traceparent` (and `tracestate`) into `headers`, so the
/// receiver's span continues this trace. Nothing is written outside a sampled span.
fn inject_current(headers: &mut async_nats::HeaderMap) {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The handler durations as an OpenTelemetry histogram, which has no asynchronous form: each
/// call is recorded into it too.
#[derive(Debug)]
struct OtelHistogram(Histogram<f64>);

impl DurationExport for OtelHistogram {
    fn bind(&self, id: &SubscriberId) -> Box<dyn DurationRecorder> {
        let attributes = [
            KeyValue::new("bucket", id.bucket.to_string()),
            KeyValue::new("subscriber", id.name.to_string()),
        ];
        Box::new(BoundHistogram(self.0.clone(), attributes))
    }
}

/// One subscriber's share of [`OtelHistogram`].
#[derive(Debug)]
struct BoundHistogram(Histogram<f64>, [KeyValue; 2]);

impl DurationRecorder for BoundHistogram {
    fn record(&self, seconds: f64) {
        self.0.record(seconds, &self.1);
    }
}
