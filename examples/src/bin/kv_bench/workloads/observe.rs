//! `observe N KEYS`: the cost of observability on the replay workload. Five runs of each side,
//! alternating: the plain subscriber (spans compiled in, disabled at their level), the same with
//! `/metrics` served (every call counted and timed), with every entry's span exported through
//! the OpenTelemetry layer and the SDK's batch processor (to an exporter that drops the
//! batches), with the default share of entries traced (1%), and raw async-nats.

use faststream_core::App;
use serde_json::json;

use crate::child::consumer;
use crate::cli::ReplaySizes;
use crate::data::{drop_bucket, prefill};
use crate::report::{compare, Runs, Summary};
use crate::workloads::{FRAMEWORK, RAW};

/// The framework with `/metrics` served: every call counted and timed.
pub const WITH_METRICS: &str = "faststream-rs-metrics";
/// The framework exporting spans through the OpenTelemetry layer (to an exporter that drops
/// the batches: the layer, the SDK and its batching are measured, not a network) for every
/// entry ...
pub const TRACED: &str = "faststream-rs-traced";
/// ... and for the default share of entries.
pub const TRACED_DEFAULT: &str = "faststream-rs-traced-default";
/// The observability overheads are a few percent: more runs, for a steadier median.
const OBSERVE_REPEATS: usize = 5;

/// What a framework consumer exports besides its work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// Nothing: spans made and disabled at their level.
    Nothing,
    /// `/metrics` served on a free port.
    Metrics,
    /// Spans through the OpenTelemetry layer for this share of entries (`None`: the default).
    Spans(Option<f64>),
}

/// A span exporter that drops every batch.
#[derive(Debug)]
struct DropSpans;

impl opentelemetry_sdk::trace::SpanExporter for DropSpans {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// `app` exporting what `observed` says; for spans, installs this process's `tracing`
/// subscriber with the OpenTelemetry layer.
pub fn observed_app(app: App, observed: Observed) -> anyhow::Result<App> {
    Ok(match observed {
        Observed::Nothing => app,
        Observed::Metrics => app.http("127.0.0.1:0"),
        Observed::Spans(share) => {
            use opentelemetry_sdk::trace::SdkTracerProvider;
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;

            let tracer_provider = SdkTracerProvider::builder()
                .with_batch_exporter(DropSpans)
                .build();
            let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
            let mut otlp = faststream_core::otlp::Otlp::new(tracer_provider, meter_provider);
            if let Some(share) = share {
                otlp = otlp.entry_sampling(share);
            }
            tracing_subscriber::registry()
                .with(otlp.layer())
                .try_init()?;
            app.otlp(otlp)
        }
    })
}

/// CPU per entry and throughput of each variant, against the plain subscriber and raw.
pub async fn run(sizes: ReplaySizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let ReplaySizes { n, keys } = sizes;
    let bucket = format!("bench_observe_{pid}");
    prefill(&bucket, n, keys).await?;
    let variants = [FRAMEWORK, WITH_METRICS, TRACED, TRACED_DEFAULT, RAW];
    let runs = compare(&variants, OBSERVE_REPEATS, |implementation| {
        let bucket = bucket.clone();
        async move { consumer("replay", &implementation, &bucket, n).await }
    })
    .await?;
    drop_bucket(&bucket).await?;
    let [plain, metrics, traced, sampled, raw] = &runs[..] else {
        anyhow::bail!("expected five runs");
    };
    let cpu = |runs: &Runs| runs.median("cpu_us_per_msg");
    let throughput = |runs: &Runs| runs.median("msgs_per_s");
    summary.insert(
        "metrics_throughput_vs_off".into(),
        json!(throughput(metrics) / throughput(plain)),
    );
    summary.insert(
        "metrics_cpu_per_entry_vs_off".into(),
        json!(cpu(metrics) / cpu(plain)),
    );
    summary.insert(
        "spans_off_cpu_per_entry_vs_raw".into(),
        json!(cpu(plain) / cpu(raw)),
    );
    summary.insert(
        "spans_all_cpu_per_entry_vs_raw".into(),
        json!(cpu(traced) / cpu(raw)),
    );
    summary.insert(
        "spans_default_cpu_per_entry_vs_raw".into(),
        json!(cpu(sampled) / cpu(raw)),
    );
    Ok(())
}
