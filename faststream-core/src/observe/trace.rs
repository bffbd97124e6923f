//! One `tracing` span per handled entry, after OpenTelemetry's messaging semantic conventions,
//! so the handler's own spans and log events nest inside it and an OpenTelemetry layer exports
//! it as a consumer span.
//!
//! The span is at `DEBUG` level under the target [`ENTRY_TARGET`]: with the default log output
//! (`info`) it is disabled at the call site and costs next to nothing per entry; the `otlp`
//! feature's layer enables it for export only. The README gives the measured cost of each.

use tracing::field::Empty;
use tracing::Span;

use crate::kv::message::KvMessage;

/// The target of the per-entry spans, for filters (`RUST_LOG=faststream::entry=debug`).
pub const ENTRY_TARGET: &str = "faststream::entry";

/// The span for handling `message`. Attributes:
///
/// - `messaging.system` `nats`, `messaging.operation.type` and `.name` `process`,
///   `messaging.destination.name` `$KV.<bucket>.<key>`, `messaging.consumer.group.name` for a
///   consumer-group member, `messaging.message.body.size`;
/// - `nats.kv.bucket`, `nats.kv.key`, `nats.kv.revision`, `nats.kv.operation`,
///   `faststream.subscriber`;
/// - on failure, `error.type` (`handler_error`, `panic`, `timeout`, `decode_error`) and the
///   span's status (`otel.status_code` `error`, `otel.status_message`).
pub(crate) fn entry_span(subscriber: &str, group: Option<&str>, message: &KvMessage) -> Span {
    let span = tracing::debug_span!(
        target: "faststream::entry",
        "process",
        otel.name = %format_args!("process {}", message.bucket()),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %format_args!("$KV.{}.{}", message.bucket(), message.key()),
        messaging.consumer.group.name = group,
        messaging.message.body.size = message.value_size(),
        nats.kv.bucket = message.bucket(),
        nats.kv.key = message.key(),
        nats.kv.revision = message.revision(),
        nats.kv.operation = message.operation().as_str(),
        faststream.subscriber = subscriber,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    #[cfg(feature = "otlp")]
    if !span.is_disabled() {
        crate::otlp::link_to_writer(&span, message.headers());
    }
    span
}

/// Marks the span failed: `error_type` is one of the `error.type` values above.
pub(crate) fn record_failure(span: &Span, error_type: &'static str, message: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
    span.record("otel.status_message", message);
}
