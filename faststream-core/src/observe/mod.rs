//! Observability: metrics, readiness and per-entry traces, for a KV-driven service that would
//! otherwise be a black box (FastStream's Prometheus and OpenTelemetry middlewares skip KV
//! watches entirely).
//!
//! It sits between dispatch (which records each call) and the layers below (whose state it
//! reads at scrape time), and knows nothing of the lifecycle that drives it:
//!
//! - [`metrics`]: the instruments, recorded once, and the families both exporters read;
//! - [`prometheus`]: the families as Prometheus text;
//! - [`health`]: readiness, from the connection, the lifecycle stage and each subscriber;
//! - [`http`]: `/metrics`, `/health/live`, `/health/ready`;
//! - [`trace`]: the span of each handled entry;
//! - `otlp` (the `otlp` feature): the same spans and metric families over OTLP;
//! - [`setup`]: all of it set up for one run of the app (the one place that decides OTLP).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::NatsBroker;

pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub(crate) mod prometheus;
pub(crate) mod setup;
pub(crate) mod trace;

use health::{EndedOnDrop, Health, SubscriberHealth};
use metrics::{Metrics, Progress, SubscriberMetrics};

/// The environment variable read for the HTTP address when the code sets none.
pub const HTTP_ADDR_VAR: &str = "FASTSTREAM_HTTP_ADDR";

/// Who a subscriber is, as the metrics' labels and the readiness body name it.
#[derive(Debug)]
pub(crate) struct SubscriberId {
    pub(crate) name: Arc<str>,
    pub(crate) bucket: Arc<str>,
    pub(crate) pattern: String,
    /// The consumer group, for a member.
    pub(crate) group: Option<Arc<str>>,
}

/// What subscribers add while the app starts and each scrape or readiness check reads.
#[derive(Debug)]
pub(crate) struct Registered<T>(RwLock<Vec<Arc<T>>>);

impl<T> Default for Registered<T> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<T> Registered<T> {
    pub(crate) fn add(&self, item: &Arc<T>) {
        if let Ok(mut items) = self.0.write() {
            items.push(Arc::clone(item));
        }
    }

    /// Everything added so far; the lock is held only for the copy.
    pub(crate) fn snapshot(&self) -> Vec<Arc<T>> {
        self.0.read().map(|items| items.clone()).unwrap_or_default()
    }
}

/// The app's metrics and readiness, shared by the subscribers and the endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Observer {
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
    /// Whether anything exports the metrics; if not, calls record nothing.
    exported: bool,
}

/// One subscriber's share of the [`Observer`].
#[derive(Debug, Clone)]
pub(crate) struct SubscriberObserver {
    metrics: Arc<SubscriberMetrics>,
    health: Arc<SubscriberHealth>,
    /// What the dispatcher records into: `None` when no exporter reads it.
    pub(crate) recorder: Option<Arc<SubscriberMetrics>>,
}

impl Observer {
    pub(crate) fn new(broker: NatsBroker, exported: bool, grace: Duration) -> Self {
        Self {
            metrics: Metrics::new(broker.clone()),
            health: Health::new(broker, grace),
            exported,
        }
    }

    /// Registers a subscriber, shown as starting until [`SubscriberObserver::started`].
    pub(crate) fn subscriber(
        &self,
        name: &str,
        bucket: &str,
        pattern: &str,
        group: Option<&str>,
    ) -> SubscriberObserver {
        let id = Arc::new(SubscriberId {
            name: Arc::from(name),
            bucket: Arc::from(bucket),
            pattern: pattern.to_owned(),
            group: group.map(Arc::from),
        });
        let metrics = self.metrics.subscriber(&id);
        SubscriberObserver {
            recorder: self.exported.then(|| Arc::clone(&metrics)),
            metrics,
            health: self.health.subscriber(id),
        }
    }
}

impl SubscriberObserver {
    /// The subscriber's watch or group member runs: where its state is read from and its
    /// caught-up (or joined) signal. The guard, held by the loop's task, marks it failed if
    /// the loop ends.
    pub(crate) fn started(&self, progress: Progress, done: watch::Receiver<bool>) -> EndedOnDrop {
        self.metrics.set_progress(progress.clone());
        self.health.started(progress, done)
    }
}
