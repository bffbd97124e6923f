//! [`NatsMessage`]: a message from a core subject or a JetStream stream, with its metadata and,
//! for a JetStream delivery, the means to settle it by hand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use time::OffsetDateTime;

use crate::error::NatsError;

/// The header FastStream answers a JetStream request to: a JetStream delivery's reply subject
/// is its acknowledgement subject, so a requester names its inbox here.
pub(crate) const REPLY_TO: &str = "reply_to";
/// FastStream's correlation header, copied from a request to its reply.
pub(crate) const CORRELATION_ID: &str = "correlation_id";
/// FastStream's content type header.
pub(crate) const CONTENT_TYPE: &str = "content-type";

/// A message received on a subject: subject, payload, headers, reply subject and, for a
/// JetStream delivery, its metadata and the means to settle it.
///
/// As a handler argument it is the whole message. Under
/// [`AckPolicy::Manual`](crate::AckPolicy::Manual) the handler settles a JetStream delivery
/// itself with [`ack`](Self::ack), [`nak`](Self::nak), [`term`](Self::term) or
/// [`in_progress`](Self::in_progress); a delivery it never settles is delivered again once the
/// consumer's ack wait has passed. Under the other policies the framework settles it after the
/// call, unless the handler already did.
#[derive(Debug, Clone)]
pub struct NatsMessage {
    subject: Subject,
    payload: Bytes,
    headers: Option<HeaderMap>,
    /// The subject to answer: the message's reply subject, or for a JetStream delivery the
    /// `reply_to` header.
    reply: Option<Subject>,
    jetstream: Option<Arc<Delivery>>,
}

/// A JetStream delivery: where it came from, and its acknowledgement.
#[derive(Debug)]
struct Delivery {
    /// Read from the acknowledgement subject when first asked for: most deliveries need only
    /// the counts ([`NatsMessage::delivery_counts`]), which need no allocation.
    info: OnceLock<JetStreamInfo>,
    /// Read once, when the delivery was received.
    counts: DeliveryCounts,
    message: async_nats::jetstream::Message,
    /// Set once it was acked, nak'd or terminated, by the handler or the framework.
    settled: AtomicBool,
}

/// Where a JetStream delivery came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamInfo {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// The message's sequence in the stream.
    pub stream_sequence: u64,
    /// The delivery's sequence in the consumer.
    pub consumer_sequence: u64,
    /// How many times it has been delivered, this time included (1 the first time).
    pub delivered: u64,
    /// Messages still pending for the consumer after this one.
    pub pending: u64,
    /// When the message was stored.
    pub published: OffsetDateTime,
}

/// See [`NatsMessage::delivery_counts`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryCounts {
    pub(crate) stream_sequence: u64,
    pub(crate) delivered: u64,
    pub(crate) pending: u64,
}

impl NatsMessage {
    /// A message received on a core subscription.
    pub(crate) fn core(message: async_nats::Message) -> Self {
        Self {
            subject: message.subject,
            payload: message.payload,
            headers: message.headers,
            reply: message.reply,
            jetstream: None,
        }
    }

    /// A JetStream delivery; `None` when its reply subject carries no metadata (not a
    /// JetStream acknowledgement subject).
    pub(crate) fn jetstream(message: async_nats::jetstream::Message) -> Option<Self> {
        let counts = {
            let info = message.info().ok()?;
            DeliveryCounts {
                stream_sequence: info.stream_sequence,
                delivered: u64::try_from(info.delivered).unwrap_or(0),
                pending: info.pending,
            }
        };
        let headers = message.headers.clone();
        let reply = headers
            .as_ref()
            .and_then(|headers| headers.get(REPLY_TO))
            .map(|value| Subject::from(value.as_str()))
            .filter(|subject| !subject.is_empty());
        Some(Self {
            subject: message.subject.clone(),
            payload: message.payload.clone(),
            headers,
            reply,
            jetstream: Some(Arc::new(Delivery {
                info: OnceLock::new(),
                counts,
                message,
                settled: AtomicBool::new(false),
            })),
        })
    }

    /// The subject it was sent to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers, if it has any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()?.get(name).map(|value| value.as_str())
    }

    /// The subject a reply goes to: the message's reply subject, or for a JetStream delivery
    /// (whose reply subject is its acknowledgement) the `reply_to` header, as FastStream reads
    /// it.
    pub fn reply_subject(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// FastStream's `correlation_id` header.
    pub fn correlation_id(&self) -> Option<&str> {
        self.header(CORRELATION_ID)
    }

    /// FastStream's `content-type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE)
    }

    /// Where a JetStream delivery came from; `None` for a core message.
    pub fn jetstream_info(&self) -> Option<&JetStreamInfo> {
        let delivery = self.jetstream.as_deref()?;
        if let Some(info) = delivery.info.get() {
            return Some(info);
        }
        // Checked readable when the delivery was received.
        let info = delivery.message.info().ok()?;
        Some(delivery.info.get_or_init(|| JetStreamInfo {
            stream: info.stream.to_owned(),
            consumer: info.consumer.to_owned(),
            stream_sequence: info.stream_sequence,
            consumer_sequence: info.consumer_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(0),
            pending: info.pending,
            published: info.published,
        }))
    }

    /// For a JetStream delivery, its stream sequence, how many times it has been delivered
    /// and how many messages are pending after it (read when it was received, without
    /// allocating).
    pub(crate) fn delivery_counts(&self) -> Option<DeliveryCounts> {
        self.jetstream.as_deref().map(|delivery| delivery.counts)
    }

    /// Whether it is a JetStream delivery.
    pub(crate) fn is_jetstream(&self) -> bool {
        self.jetstream.is_some()
    }

    /// Acknowledges a JetStream delivery: it is done and will not be delivered again.
    pub async fn ack(&self) -> Result<(), NatsError> {
        self.settle(AckKind::Ack).await
    }

    /// Hands a JetStream delivery back to be delivered again, after `delay` if given.
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), NatsError> {
        self.settle(AckKind::Nak(delay)).await
    }

    /// Terminates a JetStream delivery: it will not be delivered again, and is not done.
    pub async fn term(&self) -> Result<(), NatsError> {
        self.settle(AckKind::Term).await
    }

    /// Tells the server a JetStream delivery is still being worked on, restarting its ack wait.
    pub async fn in_progress(&self) -> Result<(), NatsError> {
        let delivery = self.delivery()?;
        delivery
            .message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|error| NatsError::Acknowledge {
                subject: self.subject.to_string(),
                source: error,
            })
    }

    /// Whether a JetStream delivery was acked, nak'd or terminated (by the handler or the
    /// framework). Always `false` for a core message.
    pub fn is_settled(&self) -> bool {
        self.jetstream
            .as_deref()
            .is_some_and(|delivery| delivery.settled.load(Ordering::Acquire))
    }

    pub(crate) async fn settle(&self, kind: AckKind) -> Result<(), NatsError> {
        let delivery = self.delivery()?;
        if delivery.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        delivery
            .message
            .ack_with(kind)
            .await
            .map_err(|error| NatsError::Acknowledge {
                subject: self.subject.to_string(),
                source: error,
            })
    }

    fn delivery(&self) -> Result<&Delivery, NatsError> {
        self.jetstream
            .as_deref()
            .ok_or_else(|| NatsError::NotJetStream {
                subject: self.subject.to_string(),
            })
    }
}
