//! The metrics, recorded once and read by both exporters.
//!
//! What a handler call changes (outcome counts, the duration histogram, a group's
//! redeliveries and given-up changes) is kept in atomics bound to the subscriber when it
//! starts, so recording is a few relaxed atomic adds with no lookup by label. Everything else
//! is read where it already is, at scrape time: a watch's pending count and re-creations from
//! its [`WatchStatus`], the connection from the broker. [`Metrics::collect`] turns it all into
//! one list of [`Family`]s, which `/metrics` writes as Prometheus text and the `otlp` feature
//! reports through OpenTelemetry instruments; no second set of counters exists.
//!
//! The names and labels are part of the API; the README lists them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{Registered, SubscriberId};
use crate::broker::NatsBroker;
use crate::kv::watcher::{RecreateReason, WatchStatus};

/// Upper bounds of the handler duration buckets, in seconds: 100 µs to a minute.
pub(crate) const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// How a handler call ended, as the `outcome` label of `faststream_kv_handled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler returned `Ok`.
    Ok,
    /// The handler returned `Err`.
    Error,
    /// The handler panicked.
    Panic,
    /// The handler ran past its timeout and was abandoned.
    Timeout,
    /// The handler was not called, by design: an extractor skipped the entry (a `Json<T>` of a
    /// deletion).
    Skipped,
    /// The handler was not called: an argument could not be built from the entry (a value that
    /// is not valid JSON or not UTF-8, a key token that does not parse). Bad input, to alert on.
    Rejected,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Panic,
        Outcome::Timeout,
        Outcome::Skipped,
        Outcome::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Timeout => "timeout",
            Outcome::Skipped => "skipped",
            Outcome::Rejected => "rejected",
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Panic => 2,
            Outcome::Timeout => 3,
            Outcome::Skipped => 4,
            Outcome::Rejected => 5,
        }
    }
}

/// A histogram with fixed buckets, in atomics: recording is three relaxed adds.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bounds in nanoseconds, for a comparison without floating point.
    bounds_nanos: [u64; DURATION_BUCKETS.len()],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        // Whole nanoseconds: the bounds are exact multiples of 100 µs.
        let bounds_nanos = DURATION_BUCKETS.map(|seconds| (seconds * 1e9).round() as u64);
        Self {
            bounds_nanos,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_nanos.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let bounds = DURATION_BUCKETS.iter().chain([&f64::INFINITY]);
        let buckets = bounds
            .zip(&self.counts)
            .map(|(&bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|(_, count)| count).sum(),
            buckets,
        }
    }
}

/// A histogram as read at one scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramSnapshot {
    pub(crate) sum: f64,
    /// Every observation, those past the last bound (`+Inf`) included.
    pub(crate) count: u64,
    /// `(upper bound, observations in this bucket alone)`, not cumulative (what both the
    /// Prometheus encoder and OpenTelemetry take); the last bound is `+Inf`.
    pub(crate) buckets: Vec<(f64, u64)>,
}

/// What one consumer-group member records besides a subscriber's calls.
#[derive(Debug)]
pub(crate) struct GroupMetrics {
    redelivered: AtomicU64,
    given_up: AtomicU64,
    /// Per partition: whether this member holds its pin, and the changes the server still held
    /// for it at the last delivery.
    partitions: Box<[PartitionGauges]>,
}

#[derive(Debug, Default)]
struct PartitionGauges {
    owned: AtomicBool,
    pending: AtomicU64,
}

impl GroupMetrics {
    pub(crate) fn new(partitions: u16) -> Self {
        Self {
            redelivered: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            partitions: (0..partitions)
                .map(|_| PartitionGauges::default())
                .collect(),
        }
    }

    /// A change was delivered again (a retry, or a takeover from a member that stopped).
    pub(crate) fn redelivered(&self) {
        self.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// A change was given up and kept as a dead letter.
    pub(crate) fn given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_owned(&self, partition: u16, owned: bool) {
        if let Some(gauges) = self.partitions.get(usize::from(partition)) {
            gauges.owned.store(owned, Ordering::Relaxed);
            if !owned {
                gauges.pending.store(0, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn set_pending(&self, partition: u16, pending: u64) {
        if let Some(gauges) = self.partitions.get(usize::from(partition)) {
            gauges.pending.store(pending, Ordering::Relaxed);
        }
    }

    /// Partitions this member holds, and the changes the server holds for them.
    pub(crate) fn owned_and_pending(&self) -> (u64, u64) {
        self.partitions
            .iter()
            .filter(|gauges| gauges.owned.load(Ordering::Relaxed))
            .fold((0, 0), |(owned, pending), gauges| {
                (owned + 1, pending + gauges.pending.load(Ordering::Relaxed))
            })
    }
}

/// Where a subscriber's progress is read from at scrape time: its watch or its group.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    /// A plain watch.
    Watch(WatchStatus),
    /// A consumer-group member.
    Group(Arc<GroupMetrics>),
    /// A subject or stream subscriber.
    Subject(Arc<SubjectMetrics>),
}

/// A subject or stream subscriber's own counters, beside the calls every subscriber counts.
#[derive(Debug, Default)]
pub(crate) struct SubjectMetrics {
    /// JetStream deliveries handed back to be tried again.
    redelivered: AtomicU64,
    /// JetStream deliveries given up and kept as dead letters.
    given_up: AtomicU64,
    /// Messages still pending for the JetStream consumer, as of the last delivery.
    pending: AtomicU64,
}

impl SubjectMetrics {
    pub(crate) fn redelivered(&self) {
        self.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_pending(&self, pending: u64) {
        self.pending.store(pending, Ordering::Relaxed);
    }
}

/// One subscriber's instruments. Bound once; the dispatcher records into it on every call.
#[derive(Debug)]
pub(crate) struct SubscriberMetrics {
    id: Arc<SubscriberId>,
    handled: [AtomicU64; Outcome::ALL.len()],
    duration: Histogram,
    /// Set when the watch or group member starts.
    progress: OnceLock<Progress>,
    /// The same durations for an exporter with no histogram read at export time (OTLP).
    exported_duration: Option<Box<dyn DurationRecorder>>,
}

/// Where handler durations go besides the app's own histogram: an exporter that cannot read
/// a histogram at export time (OTLP) records each call itself.
pub(crate) trait DurationExport: Send + Sync + std::fmt::Debug {
    /// The recorder of one subscriber's durations.
    fn bind(&self, id: &SubscriberId) -> Box<dyn DurationRecorder>;
}

/// One subscriber's durations, as an exporter records them.
pub(crate) trait DurationRecorder: Send + Sync + std::fmt::Debug {
    /// Records one call's duration.
    fn record(&self, seconds: f64);
}

impl SubscriberMetrics {
    /// Records one handler call: its outcome and, if the handler ran, how long it took.
    pub(crate) fn record(&self, outcome: Outcome, duration: Option<Duration>) {
        self.handled[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(duration) = duration {
            self.duration.observe(duration);
            if let Some(exported) = &self.exported_duration {
                exported.record(duration.as_secs_f64());
            }
        }
    }

    /// Where the entries come from; set once, when the watch or member starts.
    pub(crate) fn set_progress(&self, progress: Progress) {
        let _ = self.progress.set(progress);
    }

    pub(crate) fn progress(&self) -> Option<&Progress> {
        self.progress.get()
    }
}

/// Every metric the app exports: the subscribers' instruments and the connection.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    inner: Arc<MetricsInner>,
}

#[derive(Debug)]
struct MetricsInner {
    broker: NatsBroker,
    subscribers: Registered<SubscriberMetrics>,
    /// Where durations are exported too, if anywhere; set before any subscriber is bound.
    exported_durations: OnceLock<Arc<dyn DurationExport>>,
}

/// The kind of a metric family, as both exporters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One value of a family, with its labels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

/// A series' labels, as `(name, value)`.
pub(crate) type Labels = Vec<(&'static str, Arc<str>)>;

/// A metric and its series, as read at one scrape.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    /// The full name as exported (a counter's ends in `_total`).
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) series: Vec<(Labels, Value)>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            series: Vec::new(),
        }
    }
}

impl Metrics {
    pub(crate) fn new(broker: NatsBroker) -> Self {
        Self {
            inner: Arc::new(MetricsInner {
                broker,
                subscribers: Registered::default(),
                exported_durations: OnceLock::new(),
            }),
        }
    }

    /// Records durations into `export` too, for the subscribers bound from now on.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))] // only OTLP exports durations
    pub(crate) fn export_durations(&self, export: Arc<dyn DurationExport>) {
        let _ = self.inner.exported_durations.set(export);
    }

    /// Binds a subscriber's instruments; its series appear from now on, at zero.
    pub(crate) fn subscriber(&self, id: &Arc<SubscriberId>) -> Arc<SubscriberMetrics> {
        let metrics = Arc::new(SubscriberMetrics {
            id: Arc::clone(id),
            handled: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(),
            progress: OnceLock::new(),
            exported_duration: self
                .inner
                .exported_durations
                .get()
                .map(|export| export.bind(id)),
        });
        self.inner.subscribers.add(&metrics);
        metrics
    }

    /// Reads every metric. Called per scrape (and per OTLP export), never on the hot path.
    pub(crate) fn collect(&self) -> Vec<Family> {
        let subscribers = self.inner.subscribers.snapshot();
        let mut handled = Family::new(
            "faststream_kv_handled_total",
            Kind::Counter,
            "Entries handed to a subscriber, by how the call ended: ok, error (the handler \
             returned Err), panic, timeout, skipped (not called: an entry an extractor skips, \
             such as a deletion for Json<T>), rejected (not called: an argument could not be \
             built from the entry, such as a value that is not valid JSON).",
        );
        let mut seconds = Family::new(
            "faststream_kv_handler_seconds",
            Kind::Histogram,
            "How long handler calls took, in seconds (calls that timed out are not included).",
        );
        let mut pending = Family::new(
            "faststream_kv_watch_pending",
            Kind::Gauge,
            "Entries the server still held for the subscriber when it sent the last one: the \
             watch's lag (for a group member, the sum over the partitions it holds).",
        );
        let mut recreated = Family::new(
            "faststream_kv_watch_recreated_total",
            Kind::Counter,
            "Times a watch re-created its consumer, by reason: silence, reconnected, gap, \
             stream_replaced.",
        );
        let mut redelivered = Family::new(
            "faststream_kv_group_redelivered_total",
            Kind::Counter,
            "Changes a consumer-group member received again: retries after a failed attempt, \
             and changes taken over from a member that stopped.",
        );
        let mut given_up = Family::new(
            "faststream_kv_group_given_up_total",
            Kind::Counter,
            "Changes a consumer-group member gave up on and kept as dead letters.",
        );
        let mut owned = Family::new(
            "faststream_kv_group_partitions_owned",
            Kind::Gauge,
            "Partitions of its consumer group this member holds.",
        );
        for metrics in &subscribers {
            let labels = vec![
                ("bucket", Arc::clone(&metrics.id.bucket)),
                ("subscriber", Arc::clone(&metrics.id.name)),
            ];
            for outcome in Outcome::ALL {
                let count = metrics.handled[outcome.index()].load(Ordering::Relaxed);
                let mut labels = labels.clone();
                labels.push(("outcome", Arc::from(outcome.as_str())));
                handled.series.push((labels, Value::Counter(count)));
            }
            seconds.series.push((
                labels.clone(),
                Value::Histogram(metrics.duration.snapshot()),
            ));
            match metrics.progress() {
                Some(Progress::Watch(status)) => {
                    let lag = i64::try_from(status.pending()).unwrap_or(i64::MAX);
                    pending.series.push((labels.clone(), Value::Gauge(lag)));
                    for reason in RecreateReason::ALL {
                        let mut labels = labels.clone();
                        labels.push(("reason", Arc::from(reason.as_str())));
                        let count = status.recreations(reason);
                        recreated.series.push((labels, Value::Counter(count)));
                    }
                }
                Some(Progress::Subject(subject)) => {
                    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                    let lag = i64::try_from(load(&subject.pending)).unwrap_or(i64::MAX);
                    pending.series.push((labels.clone(), Value::Gauge(lag)));
                    redelivered
                        .series
                        .push((labels.clone(), Value::Counter(load(&subject.redelivered))));
                    given_up
                        .series
                        .push((labels.clone(), Value::Counter(load(&subject.given_up))));
                }
                Some(Progress::Group(group)) => {
                    let (held, lag) = group.owned_and_pending();
                    let lag = i64::try_from(lag).unwrap_or(i64::MAX);
                    pending.series.push((labels.clone(), Value::Gauge(lag)));
                    let mut labels = labels.clone();
                    if let Some(name) = &metrics.id.group {
                        labels.push(("group", Arc::clone(name)));
                    }
                    let count =
                        |counter: &AtomicU64| Value::Counter(counter.load(Ordering::Relaxed));
                    redelivered
                        .series
                        .push((labels.clone(), count(&group.redelivered)));
                    given_up
                        .series
                        .push((labels.clone(), count(&group.given_up)));
                    let held = i64::try_from(held).unwrap_or(i64::MAX);
                    owned.series.push((labels, Value::Gauge(held)));
                }
                None => {}
            }
        }
        let connection = self.inner.broker.connection_health();
        let mut connected = Family::new(
            "faststream_nats_connected",
            Kind::Gauge,
            "1 while the connection to NATS is up, 0 otherwise.",
        );
        connected
            .series
            .push((Vec::new(), Value::Gauge(i64::from(connection.connected))));
        let mut reconnects = Family::new(
            "faststream_nats_reconnects_total",
            Kind::Counter,
            "Times the connection to NATS was re-established after being lost.",
        );
        reconnects
            .series
            .push((Vec::new(), Value::Counter(connection.reconnects)));
        let mut slow = Family::new(
            "faststream_nats_slow_consumers_total",
            Kind::Counter,
            "Messages the client dropped because a subscription fell behind (slow consumer).",
        );
        slow.series
            .push((Vec::new(), Value::Counter(connection.slow_consumers)));
        vec![
            handled,
            seconds,
            pending,
            recreated,
            redelivered,
            given_up,
            owned,
            connected,
            reconnects,
            slow,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter_and_label() {
        for (position, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), position, "{outcome:?}");
        }
        let mut labels: Vec<&str> = Outcome::ALL
            .iter()
            .map(|outcome| outcome.as_str())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Outcome::ALL.len(), "{labels:?}");
        // Bad input is not a deliberate skip.
        assert_eq!(Outcome::Rejected.as_str(), "rejected");
        assert_eq!(Outcome::Skipped.as_str(), "skipped");
    }

    #[test]
    fn histogram_bounds_are_inclusive_and_the_overflow_counted() {
        let histogram = Histogram::new();
        histogram.observe(Duration::from_micros(100)); // on the first bound: in it
        histogram.observe(Duration::from_micros(101));
        histogram.observe(Duration::from_secs(120)); // past the last bound: +Inf only
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], (0.0001, 1));
        assert_eq!(snapshot.buckets[1], (0.00025, 1));
        assert_eq!(snapshot.buckets.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((snapshot.sum - 120.000201).abs() < 1e-9);
    }
}
