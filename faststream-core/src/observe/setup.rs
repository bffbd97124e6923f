//! Observability for one run of the app: the default log output, the metrics and readiness the
//! subscribers feed, the HTTP endpoints, and the OTLP export. Whether OTLP is compiled in is
//! decided here, once: without the `otlp` feature [`OtlpExport`] is a type with no values, so
//! the code around it is the same either way.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::http::{Documents, Endpoints, HttpBinding, HttpLimits, HttpServer};
use super::prometheus::MetricsCollector;
use super::trace::EntryTracing;
use super::{Observer, HTTP_ADDR_VAR};
use crate::broker::NatsBroker;
use crate::error::Result;
use crate::logging;

#[cfg(feature = "otlp")]
pub(crate) use super::otlp::{Exported, Otlp as OtlpExport, INJECT, LINK_PARENT};
#[cfg(not(feature = "otlp"))]
pub(crate) use without_otlp::{Exported, OtlpExport, INJECT, LINK_PARENT};

/// How the app is observed, as configured on [`App`](crate::App).
#[derive(Debug)]
pub(crate) struct ObserveSettings {
    pub(crate) http: Option<HttpBinding>,
    /// What the HTTP endpoints allow a client: the header timeout, the connection limit.
    pub(crate) http_limits: HttpLimits,
    /// How long a connection blip or a watch re-creation may last before readiness drops.
    pub(crate) readiness_grace: Option<Duration>,
    /// The service's own registry, served on `/metrics` with the app's metrics.
    pub(crate) registry: Option<Registry>,
    pub(crate) otlp: Option<OtlpExport>,
    pub(crate) default_logging: bool,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            http: None,
            http_limits: HttpLimits::default(),
            readiness_grace: None,
            registry: None,
            otlp: None,
            default_logging: true,
        }
    }
}

/// A run's observability, from the start of the lifecycle to its end.
#[derive(Debug)]
pub(crate) struct Observing {
    pub(crate) observer: Observer,
    /// How entries are traced: sampled when exported over OTLP, linked to their writer's
    /// trace when OpenTelemetry support is compiled in.
    pub(crate) entry_tracing: EntryTracing,
    http: Option<HttpBinding>,
    http_limits: HttpLimits,
    registry: Option<Registry>,
    otlp: Option<OtlpExport>,
    /// The OTLP instruments, kept while the app runs.
    _exported: Option<Exported>,
}

impl ObserveSettings {
    /// Installs the default log output (unless turned off), first, so everything after is
    /// logged.
    pub(crate) fn install_logging(&self) {
        if self.default_logging {
            logging::init_default(self.otlp.as_ref().map(|otlp| || otlp.export_layer()));
        }
    }

    /// Every problem of the settings, one sentence each, reported with the app's others
    /// before anything starts.
    pub(crate) fn problems(&self) -> Vec<String> {
        self.http_limits.problems()
    }

    /// The observer of this run, its metrics exported over OTLP if configured.
    pub(crate) fn begin(self, broker: NatsBroker) -> Observing {
        let http = self.http.or_else(|| {
            std::env::var(HTTP_ADDR_VAR)
                .ok()
                .filter(|addr| !addr.trim().is_empty())
                .map(HttpBinding::Addr)
        });
        // Calls record only when something reads the metrics.
        if let Some(inject) = INJECT {
            crate::nats::publish::inject_traces_with(inject);
        }
        let recording = http.is_some() || self.otlp.is_some();
        let grace = self.readiness_grace.unwrap_or(super::health::DEFAULT_GRACE);
        let observer = Observer::new(broker, recording, grace);
        // Before any subscriber is bound, which takes the OTLP histogram.
        let exported = self
            .otlp
            .as_ref()
            .map(|otlp| otlp.export(&observer.metrics));
        Observing {
            entry_tracing: EntryTracing {
                sampler: self.otlp.as_ref().map(OtlpExport::entry_sampler),
                link_parent: LINK_PARENT,
            },
            observer,
            http,
            http_limits: self.http_limits,
            registry: self.registry,
            otlp: self.otlp,
            _exported: exported,
        }
    }
}

impl Observing {
    /// Whether the HTTP endpoints are configured (so the AsyncAPI document is needed).
    pub(crate) fn serves_http(&self) -> bool {
        self.http.is_some()
    }

    /// Starts the HTTP endpoints, if configured, serving `documents` at `/asyncapi*`. An
    /// address that cannot be bound is an error naming it.
    pub(crate) async fn serve_http(
        &mut self,
        documents: Option<Documents>,
    ) -> Result<Option<HttpServer>> {
        let Some(binding) = self.http.take() else {
            return Ok(None);
        };
        let mut registry = self.registry.take().unwrap_or_default();
        registry.register_collector(Box::new(MetricsCollector(self.observer.metrics.clone())));
        let endpoints = Endpoints {
            registry: Arc::new(registry),
            health: self.observer.health.clone(),
            documents: Arc::new(documents.unwrap_or_default()),
        };
        HttpServer::start(binding, endpoints, self.http_limits)
            .await
            .map(Some)
    }

    /// Flushes and stops the exporters, at the end of the run.
    pub(crate) async fn finish(self) {
        if let Some(otlp) = self.otlp {
            // Flushing waits on the exporters' threads: not on a runtime worker.
            let _ = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
        }
    }
}

/// [`OtlpExport`] without the `otlp` feature: no value can be made, so every method is
/// unreachable and compiles to nothing.
#[cfg(not(feature = "otlp"))]
mod without_otlp {
    use crate::logging::ExportLayer;
    use crate::observe::metrics::Metrics;
    use crate::observe::trace::EntrySampler;

    /// No OTLP export: the `otlp` feature is off.
    #[derive(Debug)]
    pub(crate) enum OtlpExport {}

    /// No trace context is read without OpenTelemetry.
    pub(crate) const LINK_PARENT: Option<fn(&tracing::Span, Option<&async_nats::HeaderMap>)> = None;
    pub(crate) const INJECT: Option<fn(&mut async_nats::HeaderMap)> = None;

    /// Nothing exported.
    #[derive(Debug)]
    pub(crate) struct Exported;

    impl OtlpExport {
        pub(crate) fn export_layer(&self) -> ExportLayer {
            match *self {}
        }

        pub(crate) fn export(&self, _: &Metrics) -> Exported {
            match *self {}
        }

        pub(crate) fn entry_sampler(&self) -> EntrySampler {
            match *self {}
        }

        pub(crate) fn shutdown(&self) {
            match *self {}
        }
    }
}
