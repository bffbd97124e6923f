//! [`NatsError`]: what can fail when subscribing to subjects, publishing, requesting and
//! settling JetStream deliveries.

use std::time::Duration;

use super::BoxError;

/// A messaging operation that failed, naming the subject, stream or consumer, with the
/// async-nats error as its [`source`](std::error::Error::source) where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// Sending a message failed.
    #[error("could not publish to `{subject}`")]
    Publish {
        /// The subject.
        subject: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// The payload is larger than the server accepts.
    #[error(
        "the message to `{subject}` is {size} bytes, over the server's maximum payload of \
         {max} bytes"
    )]
    PayloadTooLarge {
        /// The subject.
        subject: String,
        /// The message's size: payload and headers.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
    /// A JetStream stream did not acknowledge a published message.
    #[error("stream did not store the message to `{subject}` after {attempts} attempt(s)")]
    NotStored {
        /// The subject.
        subject: String,
        /// How many times it was sent.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: BoxError,
    },
    /// A request found nobody subscribed to its subject.
    #[error("no one serves `{subject}` (no responders)")]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// A request got no answer in time.
    #[error("no reply from `{subject}` within {timeout:?}")]
    TimedOut {
        /// The subject.
        subject: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// A request failed otherwise.
    #[error("the request to `{subject}` failed")]
    Request {
        /// The subject.
        subject: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// The service answered with an error (the NATS service API's `Nats-Service-Error`
    /// headers, which a failing handler's reply carries).
    #[error("`{subject}` answered with error {code}: {description}")]
    ErrorReply {
        /// The subject.
        subject: String,
        /// `Nats-Service-Error-Code`: 400 when the request could not be read, 500 when the
        /// handler failed.
        code: u16,
        /// `Nats-Service-Error`.
        description: String,
    },
    /// Subscribing to a subject failed.
    #[error("could not subscribe to `{subject}`")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// A stream could not be looked up, created or updated.
    #[error("could not {operation} stream `{stream}`")]
    Stream {
        /// `look up`, `create`, `update`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// A declared stream does not exist and was not to be created (`declare(false)`).
    #[error("stream `{stream}` does not exist (and `declare` is off)")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// A consumer could not be created or read.
    #[error("could not {operation} consumer `{consumer}` of stream `{stream}`")]
    Consumer {
        /// `create`, `read`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The consumer (`(ephemeral)` for one without a durable name).
        consumer: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// Acknowledging a JetStream delivery failed.
    #[error("could not settle the delivery of `{subject}`")]
    Acknowledge {
        /// The subject.
        subject: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// Only a JetStream delivery can be acknowledged.
    #[error(
        "the message on `{subject}` came from a core subscription: only JetStream deliveries \
         are acknowledged"
    )]
    NotJetStream {
        /// The subject.
        subject: String,
    },
    /// The broker is not connected yet (an `on_startup` hook runs before it connects).
    #[error("the broker is not connected yet (use it from `after_startup` hooks or handlers)")]
    NotConnected,
}
