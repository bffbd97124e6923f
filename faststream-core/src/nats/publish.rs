//! Sending: publishing to a subject (through JetStream, awaiting the stream's
//! acknowledgement, when a stream captures it), requests, and the headers FastStream sets.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;

use super::message::{CONTENT_TYPE, CORRELATION_ID};
use crate::error::NatsError;

/// The NATS service API's error headers, which a failing handler's reply carries.
pub(crate) const SERVICE_ERROR: &str = "Nats-Service-Error";
/// See [`SERVICE_ERROR`].
pub(crate) const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// JetStream refuses a message whose stream is not this one.
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";

/// Writes the current trace context (W3C `traceparent`) into a message's headers: set once by
/// the observability set-up when OpenTelemetry support is compiled in, so every publish and
/// request, from a handler or not, carries the trace it is part of.
static TRACE_INJECTOR: OnceLock<fn(&mut HeaderMap)> = OnceLock::new();

/// Sets [`TRACE_INJECTOR`] (the first call wins: there is one OpenTelemetry set-up per
/// process).
pub(crate) fn inject_traces_with(inject: fn(&mut HeaderMap)) {
    let _ = TRACE_INJECTOR.set(inject);
}

fn inject_trace(message: &mut Outgoing) {
    if let Some(inject) = TRACE_INJECTOR.get() {
        inject(&mut message.headers);
    }
}

/// A message to send: payload and headers, built with FastStream's `content-type` and
/// `correlation_id`.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub(crate) payload: Bytes,
    pub(crate) headers: HeaderMap,
}

impl Outgoing {
    /// A message of `payload`, with a new `correlation_id`.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CORRELATION_ID, nuid::next().as_str());
        Self {
            payload: payload.into(),
            headers,
        }
    }

    /// Sets a header (replacing one of that name).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets FastStream's `content-type` header.
    pub fn content_type(self, content_type: &str) -> Self {
        self.header(CONTENT_TYPE, content_type)
    }

    /// Sets FastStream's `correlation_id` header (a new one is set by [`new`](Self::new)).
    pub fn correlation_id(self, id: &str) -> Self {
        self.header(CORRELATION_ID, id)
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to add to.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Its size on the wire, as the server's `max_payload` counts it: payload and headers.
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, values)| {
                values
                    .iter()
                    .map(|value| AsRef::<str>::as_ref(name).len() + value.as_str().len() + 4)
                    .sum::<usize>()
            })
            .sum();
        // `NATS/1.0\r\n` and the closing `\r\n`.
        self.payload.len() + headers + 12
    }
}

/// How a publish to a stream is retried when the stream does not acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishRetry {
    /// Attempts in all, the first included.
    pub(crate) attempts: u32,
    /// The wait before each retry; the last is repeated.
    pub(crate) backoff: Vec<Duration>,
}

impl Default for PublishRetry {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: vec![
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2),
            ],
        }
    }
}

/// Publishes on core NATS: sent, not confirmed.
pub(crate) async fn publish(
    client: &Client,
    subject: &str,
    mut message: Outgoing,
) -> Result<(), NatsError> {
    inject_trace(&mut message);
    check_size(client, subject, &message)?;
    client
        .publish_with_headers(subject.to_owned(), message.headers, message.payload)
        .await
        .map_err(|error| match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => too_large(client, subject, 0),
            _ => NatsError::Publish {
                subject: subject.to_owned(),
                source: Box::new(error),
            },
        })
}

/// Publishes through JetStream and waits for the stream to store it, retrying as `retry`
/// says; `stream`, if given, must be the stream that stores it.
pub(crate) async fn publish_stored(
    jetstream: &jetstream::Context,
    subject: &str,
    mut message: Outgoing,
    stream: Option<&str>,
    retry: &PublishRetry,
) -> Result<(), NatsError> {
    inject_trace(&mut message);
    check_size(&jetstream.client(), subject, &message)?;
    if let Some(stream) = stream {
        message.headers.insert(EXPECTED_STREAM, stream);
    }
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let sent = jetstream
            .publish_with_headers(
                subject.to_owned(),
                message.headers.clone(),
                message.payload.clone(),
            )
            .await;
        let error: crate::error::BoxError = match sent {
            Ok(ack) => match ack.await {
                Ok(_) => return Ok(()),
                Err(error) => Box::new(error),
            },
            Err(error) => Box::new(error),
        };
        if attempt >= retry.attempts.max(1) {
            return Err(NatsError::NotStored {
                subject: subject.to_owned(),
                attempts: attempt,
                source: error,
            });
        }
        tracing::warn!(subject, attempt, error = %error,
            "the stream did not store a message to `{subject}`; sending it again");
        let index = usize::try_from(attempt - 1).unwrap_or(usize::MAX);
        let wait = retry
            .backoff
            .get(index)
            .or(retry.backoff.last())
            .copied()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
    }
}

/// Sends a request and waits up to `timeout` for the reply. A reply carrying the NATS
/// service API's error headers is an [`NatsError::ErrorReply`].
pub(crate) async fn request(
    client: &Client,
    subject: &str,
    mut message: Outgoing,
    timeout: Duration,
) -> Result<async_nats::Message, NatsError> {
    inject_trace(&mut message);
    check_size(client, subject, &message)?;
    let request = async_nats::Request::new()
        .payload(message.payload)
        .headers(message.headers)
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject.to_owned(), request)
        .await
        .map_err(|error| match error.kind() {
            RequestErrorKind::NoResponders => NatsError::NoResponders {
                subject: subject.to_owned(),
            },
            RequestErrorKind::TimedOut => NatsError::TimedOut {
                subject: subject.to_owned(),
                timeout,
            },
            RequestErrorKind::MaxPayloadExceeded => too_large(client, subject, 0),
            _ => NatsError::Request {
                subject: subject.to_owned(),
                source: Box::new(error),
            },
        })?;
    if let Some(description) = reply
        .headers
        .as_ref()
        .and_then(|headers| headers.get(SERVICE_ERROR))
    {
        let code = reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get(SERVICE_ERROR_CODE))
            .and_then(|code| code.as_str().parse().ok())
            .unwrap_or(500);
        return Err(NatsError::ErrorReply {
            subject: subject.to_owned(),
            code,
            description: description.as_str().to_owned(),
        });
    }
    Ok(reply)
}

/// Refuses a message over the server's `max_payload` before sending it, naming both sizes.
fn check_size(client: &Client, subject: &str, message: &Outgoing) -> Result<(), NatsError> {
    let size = message.size();
    if size > client.server_info().max_payload {
        return Err(too_large(client, subject, size));
    }
    Ok(())
}

fn too_large(client: &Client, subject: &str, size: usize) -> NatsError {
    NatsError::PayloadTooLarge {
        subject: subject.to_owned(),
        size,
        max: client.server_info().max_payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_payload_and_headers() {
        let message = Outgoing::new(Bytes::from_static(b"12345"));
        let id = message
            .headers()
            .get(CORRELATION_ID)
            .map(|v| v.as_str().len());
        // `correlation_id: <22 chars>\r\n` plus the header block's framing.
        assert_eq!(id, Some(22));
        assert_eq!(message.size(), 5 + ("correlation_id".len() + 22 + 4) + 12);
    }
}
