//! `/metrics`: the app's metric families written in the Prometheus text format by
//! `prometheus-client`, whose registry also carries whatever metrics the service registered
//! itself ([`App::prometheus_registry`](crate::App::prometheus_registry)).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::{Family, Kind, Metrics, Value};

/// The content type of the classic text format (what Prometheus asks for by default).
pub(crate) const TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The content type of OpenMetrics text, served when the scraper asks for it.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes the families of [`Metrics`] into a `prometheus-client` registry at each scrape.
#[derive(Debug)]
pub(crate) struct MetricsCollector(pub(crate) Metrics);

impl Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.collect() {
            encode_family(&mut encoder, &family)?;
        }
        Ok(())
    }
}

fn encode_family(encoder: &mut DescriptorEncoder, family: &Family) -> std::fmt::Result {
    let (name, metric_type) = match family.kind {
        // The encoder appends `_total` itself.
        Kind::Counter => (
            family.name.strip_suffix("_total").unwrap_or(family.name),
            MetricType::Counter,
        ),
        Kind::Gauge => (family.name, MetricType::Gauge),
        Kind::Histogram => (family.name, MetricType::Histogram),
    };
    let mut metric = encoder.encode_descriptor(name, family.help, None, metric_type)?;
    for (labels, value) in &family.series {
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(name, value)| (*name, &**value))
            .collect();
        let mut series = metric.encode_family(&labels)?;
        match value {
            Value::Counter(count) => ConstCounter::new(*count).encode(series)?,
            Value::Gauge(value) => ConstGauge::new(*value).encode(series)?,
            Value::Histogram(histogram) => series.encode_histogram::<NoLabelSet>(
                histogram.sum,
                histogram.count,
                &histogram.buckets,
                None,
            )?,
        }
    }
    Ok(())
}

/// Encodes `registry`: OpenMetrics text if `openmetrics`, else the classic text format.
pub(crate) fn encode(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    }
    Ok(text)
}
