//! One `tracing` span per handled entry, after OpenTelemetry's messaging semantic conventions,
//! so the handler's own spans and log events nest inside it and an OpenTelemetry layer exports
//! it as a consumer span.
//!
//! The span is at `DEBUG` level under the target [`ENTRY_TARGET`]: with the default log output
//! (`info`) it is disabled at the call site and costs next to nothing per entry; the `otlp`
//! feature's layer enables it for export only. Exported, a span costs several microseconds
//! (the OpenTelemetry layer builds it before the SDK's sampler sees it), more than handling the
//! entry, so exported spans are sampled here, before one is made: an [`EntrySampler`] keeps
//! every entry a writer traced (a sampled `traceparent`) and the given share of the other
//! revisions, picked by a hash of the revision.
//! The README gives the measured cost of each choice.

use tracing::field::Empty;
use tracing::Span;

use async_nats::HeaderMap;

use crate::extract::Message;
use crate::kv::message::KvMessage;
use crate::nats::NatsMessage;
use crate::object::ObjMessage;

/// The target of the per-entry spans, for filters (`RUST_LOG=faststream::entry=debug`).
pub const ENTRY_TARGET: &str = "faststream::entry";

/// The span for handling `message`. Attributes, after OpenTelemetry's messaging conventions:
///
/// - `messaging.system` `nats`, `messaging.operation.type` and `.name` `process`,
///   `messaging.destination.name` (`$KV.<bucket>.<key>` for a Key-Value change,
///   `$O.<bucket>.M` for an object's, the subject for a message), `messaging.consumer.group.name` (a consumer group, a queue group or a
///   JetStream consumer), `messaging.message.body.size`, `messaging.message.conversation_id`
///   (FastStream's `correlation_id`);
/// - for a change `nats.kv.bucket`, `nats.kv.key`, `nats.kv.revision`, `nats.kv.operation`;
///   for an object's `nats.obj.bucket`, `nats.obj.name`, `nats.obj.revision`,
///   `nats.obj.size`, `nats.obj.deleted`;
///   for a JetStream delivery `nats.stream`, `nats.stream.sequence`, `nats.delivered`;
///   `faststream.subscriber`;
/// - on failure, `error.type` (`handler_error`, `panic`, `timeout`, `decode_error`,
///   `publish_error`) and the span's status (`otel.status_code` `error`,
///   `otel.status_description`).
pub(crate) fn entry_span(
    subscriber: &str,
    group: Option<&str>,
    entry_tracing: EntryTracing,
    message: &Message,
) -> Span {
    let span = if let Some(kv) = message.kv() {
        kv_span(subscriber, group, entry_tracing, kv)
    } else if let Some(object) = message.obj() {
        obj_span(subscriber, group, entry_tracing, object)
    } else if let Some(nats) = message.nats() {
        nats_span(subscriber, group, entry_tracing, nats)
    } else {
        Span::none()
    };
    if let Some(link_parent) = entry_tracing.link_parent.filter(|_| !span.is_disabled()) {
        link_parent(&span, message.headers());
    }
    span
}

// Integers as i64: the OpenTelemetry layer would export a u64 as text.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn kv_span(
    subscriber: &str,
    group: Option<&str>,
    entry_tracing: EntryTracing,
    message: &KvMessage,
) -> Span {
    if entry_tracing
        .sampler
        .is_some_and(|sampler| !sampler.samples(message.revision(), message.headers()))
    {
        return Span::none();
    }
    tracing::debug_span!(
        target: "faststream::entry",
        "process",
        otel.name = %format_args!("process {}", message.bucket()),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %format_args!("$KV.{}.{}", message.bucket(), message.key()),
        messaging.consumer.group.name = group,
        messaging.message.body.size = as_i64(message.value_size() as u64),
        nats.kv.bucket = message.bucket(),
        nats.kv.key = message.key(),
        nats.kv.revision = as_i64(message.revision()),
        nats.kv.operation = message.operation().as_str(),
        faststream.subscriber = subscriber,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

fn obj_span(
    subscriber: &str,
    group: Option<&str>,
    entry_tracing: EntryTracing,
    message: &ObjMessage,
) -> Span {
    if entry_tracing
        .sampler
        .is_some_and(|sampler| !sampler.samples(message.revision(), message.headers()))
    {
        return Span::none();
    }
    tracing::debug_span!(
        target: "faststream::entry",
        "process",
        otel.name = %format_args!("process {}", message.bucket()),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %format_args!("$O.{}.M", message.bucket()),
        messaging.consumer.group.name = group,
        messaging.message.body.size = as_i64(message.name().len() as u64),
        nats.obj.bucket = message.bucket(),
        nats.obj.name = message.name(),
        nats.obj.revision = as_i64(message.revision()),
        nats.obj.size = as_i64(message.size() as u64),
        nats.obj.deleted = message.deleted(),
        faststream.subscriber = subscriber,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

fn nats_span(
    subscriber: &str,
    group: Option<&str>,
    entry_tracing: EntryTracing,
    message: &NatsMessage,
) -> Span {
    // A stream's messages are sampled by sequence, as changes are by revision; a core
    // message, which has none, by a counter.
    let position = message
        .delivery_counts()
        .map_or_else(next_core_position, |counts| counts.stream_sequence);
    if entry_tracing
        .sampler
        .is_some_and(|sampler| !sampler.samples(position, message.headers()))
    {
        return Span::none();
    }
    // Read only for a span that is made (its fields are evaluated only then).
    let info = || message.jetstream_info();
    tracing::debug_span!(
        target: "faststream::entry",
        "process",
        otel.name = %format_args!("process {}", message.subject()),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = message.subject(),
        messaging.consumer.group.name = group,
        messaging.message.body.size = as_i64(message.payload().len() as u64),
        messaging.message.conversation_id = message.correlation_id(),
        nats.stream = info().map(|info| info.stream.as_str()),
        nats.stream.sequence = info().map(|info| as_i64(info.stream_sequence)),
        nats.delivered = info().map(|info| as_i64(info.delivered)),
        faststream.subscriber = subscriber,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

fn next_core_position() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How entries are traced: which get a span, and how a span becomes the child of the writer's
/// trace. The OpenTelemetry support provides both (it alone reads a trace context), so this
/// module depends on no exporter.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntryTracing {
    /// Which entries get a span when spans are exported; `None`: every entry (at `DEBUG`, so
    /// off unless a subscriber enables them).
    pub(crate) sampler: Option<EntrySampler>,
    /// Makes the span a child of the trace the entry's headers carry; `None` without
    /// OpenTelemetry support compiled in.
    pub(crate) link_parent: Option<fn(&Span, Option<&HeaderMap>)>,
}

/// Which entries get a span, decided before one is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntrySampler {
    /// A revision is sampled when its hash is below this: `ratio` of the `u64` range, so
    /// 0 samples none (but a writer's traced entries) and [`ALL`](Self::ALL) every one.
    threshold: u128,
}

impl EntrySampler {
    /// Past every hash: every revision is sampled.
    const ALL: u128 = 1 << 64;

    /// Samples `ratio` of the entries (clamped to 0..=1; NaN is 0), by revision, so every
    /// instance of a service samples the same ones.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))] // made only for the OTLP export
    pub(crate) fn new(ratio: f64) -> Self {
        let threshold = if ratio >= 1.0 {
            Self::ALL
        } else if ratio > 0.0 {
            // Exact to 2^-53, the precision of `ratio` itself.
            (ratio * Self::ALL as f64) as u128
        } else {
            0
        };
        Self { threshold }
    }

    /// Whether the message at `position` (a revision or a stream sequence) with `headers`
    /// gets a span: a writer's sampled trace always does.
    pub(crate) fn samples(&self, position: u64, headers: Option<&HeaderMap>) -> bool {
        self.samples_revision(position) || writer_sampled(headers)
    }

    /// Whether `revision` is among the sampled ones. Hashed rather than taken one in N, so
    /// that any ratio is kept (0.75 is three in four, not all) and a writer whose keys take
    /// turns (revisions of one key every other one) is not sampled on one key only.
    fn samples_revision(&self, revision: u64) -> bool {
        self.threshold == Self::ALL || u128::from(spread(revision)) < self.threshold
    }
}

/// SplitMix64's finaliser: a bijection of `u64` that spreads consecutive revisions evenly over
/// the whole range, the same on every instance and every run.
fn spread(revision: u64) -> u64 {
    let mut z = revision.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the headers carry a W3C `traceparent` with the sampled flag.
fn writer_sampled(headers: Option<&HeaderMap>) -> bool {
    let Some(parent) = headers.and_then(|headers| headers.get("traceparent")) else {
        return false;
    };
    // version-trace_id-parent_id-flags; bit 0 of the flags: sampled.
    parent
        .as_str()
        .rsplit('-')
        .next()
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// Marks the span failed: `error_type` is one of the `error.type` values above.
pub(crate) fn record_failure(span: &Span, error_type: &'static str, message: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
    span.record("otel.status_description", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `revisions` `ratio` samples.
    fn sampled(ratio: f64, revisions: impl Iterator<Item = u64>) -> usize {
        let sampler = EntrySampler::new(ratio);
        revisions
            .filter(|revision| sampler.samples_revision(*revision))
            .count()
    }

    #[test]
    fn the_sampler_keeps_the_ratio_asked_for() {
        const ENTRIES: u64 = 100_000;
        // (ratio, fewest and most sampled of 100 000 revisions). The bounds are 5 standard
        // deviations of a binomial draw either side; the hash is fixed, so the counts are too
        // (consecutive revisions: 74 987, 50 287, 1 036; even ones: 75 094, 50 252, 1 073).
        for (ratio, fewest, most) in [
            (0.75, 74_300, 75_700),
            (0.5, 49_200, 50_800),
            (0.01, 850, 1_150),
        ] {
            let count = sampled(ratio, 1..=ENTRIES);
            assert!(
                (fewest..=most).contains(&count),
                "{ratio}: {count} of {ENTRIES} sampled"
            );
            // Every other revision (one key of two written in turns) gets its share too.
            let count = sampled(ratio, (2..=2 * ENTRIES).step_by(2));
            assert!(
                (fewest..=most).contains(&count),
                "{ratio}, even revisions: {count} of {ENTRIES} sampled"
            );
        }
        assert_eq!(sampled(1.0, 1..=ENTRIES), 100_000);
        assert_eq!(sampled(2.0, 1..=ENTRIES), 100_000);
        assert_eq!(sampled(0.0, 1..=ENTRIES), 0);
        assert_eq!(sampled(-1.0, 1..=ENTRIES), 0);
        assert_eq!(sampled(f64::NAN, 1..=ENTRIES), 0);
        // The last revision there can be, at the edges of the range.
        assert!(EntrySampler::new(1.0).samples_revision(u64::MAX));
        assert!(!EntrySampler::new(0.0).samples_revision(u64::MAX));
    }
}
