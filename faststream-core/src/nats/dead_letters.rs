//! Dead letters of stream subscribers: the JetStream deliveries given up (a payload no
//! argument could read, or a call that failed `max_attempts` times), kept in a stream of
//! their own, `<stream>_dead`, where an operator can list them
//! ([`NatsBroker::stream_dead_letters`](crate::NatsBroker::stream_dead_letters)) and replay
//! one to its subject. Read as consumer groups' dead letters are.

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::message::NatsMessage;
use crate::error::NatsError;
use crate::kv::group::dead_letters::{header_line, read_stored, ATTEMPTS, ERROR};

const SUBJECT: &str = "Faststream-Subject";
const SEQUENCE: &str = "Faststream-Stream-Sequence";
const CONSUMER: &str = "Faststream-Consumer";

/// A JetStream delivery a subscriber gave up: what it was, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamDeadLetter {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// The subject it was published to.
    pub subject: String,
    /// Its sequence in the stream it came from.
    pub stream_sequence: u64,
    /// The consumer that gave it up.
    pub consumer: String,
    /// How many times it was tried.
    pub attempts: u64,
    /// The last attempt's error (or why it was not tried again).
    pub error: String,
    /// Its headers, as published.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

/// The dead-letter stream of `stream`.
pub(crate) fn stream_name(stream: &str) -> String {
    format!("{stream}_dead")
}

fn subjects(stream: &str) -> String {
    format!("$FSDEAD.{stream}.>")
}

/// Keeps a given-up delivery (creating the dead-letter stream if needed, with the source
/// stream's replicas); returns its sequence there once stored.
pub(crate) async fn keep(
    context: &jetstream::Context,
    message: &NatsMessage,
    replicas: usize,
    attempts: u64,
    error: &str,
) -> Result<u64, NatsError> {
    let info = message
        .jetstream_info()
        .ok_or_else(|| NatsError::NotJetStream {
            subject: message.subject().to_owned(),
        })?;
    let dead = stream_name(&info.stream);
    let stream_error = |operation, error: crate::error::BoxError| NatsError::Stream {
        operation,
        stream: dead.clone(),
        source: error,
    };
    context
        .get_or_create_stream(stream::Config {
            name: dead.clone(),
            subjects: vec![subjects(&info.stream)],
            description: Some(format!(
                "faststream: dead letters of stream `{}`",
                info.stream
            )),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| stream_error("create", Box::new(error)))?;
    let mut headers = message.headers().cloned().unwrap_or_default();
    headers.insert(SUBJECT, message.subject());
    headers.insert(SEQUENCE, info.stream_sequence.to_string().as_str());
    headers.insert(CONSUMER, info.consumer.as_str());
    headers.insert(ATTEMPTS, attempts.to_string().as_str());
    headers.insert(ERROR, header_line(error).as_str());
    let subject = format!("$FSDEAD.{}.{}", info.stream, info.consumer);
    let ack = context
        .publish_with_headers(subject, headers, message.payload().clone())
        .await
        .map_err(|error| stream_error("publish to", Box::new(error)))?
        .await
        .map_err(|error| stream_error("store in", Box::new(error)))?;
    Ok(ack.sequence)
}

/// Every dead letter of `stream`, oldest first; none if it has none.
pub(crate) async fn read(
    context: &jetstream::Context,
    stream: &str,
) -> Result<Vec<StreamDeadLetter>, NatsError> {
    let dead = stream_name(stream);
    let handle = match context.get_stream(&dead).await {
        Ok(handle) => handle,
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                return Ok(Vec::new())
            }
            _ => {
                return Err(NatsError::Stream {
                    operation: "look up",
                    stream: dead,
                    source: Box::new(error),
                })
            }
        },
    };
    read_stored(&handle, subjects(stream), parse)
        .await
        .map_err(|error| NatsError::Stream {
            operation: "read",
            stream: dead,
            source: Box::new(error),
        })
}

fn parse(sequence: u64, _: &str, headers: Option<&HeaderMap>, payload: Bytes) -> StreamDeadLetter {
    let header = |name: &str| {
        headers
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    // The letter's own headers are left out; the message's are returned as sent.
    let own = [SUBJECT, SEQUENCE, CONSUMER, ATTEMPTS, ERROR];
    let mut kept = HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if !own.contains(&name) {
            for value in values {
                kept.append(name, value.as_str());
            }
        }
    }
    StreamDeadLetter {
        sequence,
        subject: header(SUBJECT),
        stream_sequence: header(SEQUENCE).parse().unwrap_or_default(),
        consumer: header(CONSUMER),
        attempts: header(ATTEMPTS).parse().unwrap_or_default(),
        error: header(ERROR),
        headers: kept,
        payload,
    }
}

/// Publishes dead letter `sequence` of `stream` to its subject again (through JetStream, so
/// the stream stores it anew), then removes it from the dead letters.
pub(crate) async fn replay(
    context: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<(), NatsError> {
    let dead = stream_name(stream);
    let failed = |operation, error: crate::error::BoxError| NatsError::Stream {
        operation,
        stream: dead.clone(),
        source: error,
    };
    let handle = context
        .get_stream(&dead)
        .await
        .map_err(|error| failed("look up", Box::new(error)))?;
    let stored = handle
        .get_raw_message(sequence)
        .await
        .map_err(|error| failed("read", Box::new(error)))?;
    let letter = parse(sequence, "", Some(&stored.headers), stored.payload);
    context
        .publish_with_headers(letter.subject.clone(), letter.headers, letter.payload)
        .await
        .map_err(|error| failed("replay from", Box::new(error)))?
        .await
        .map_err(|error| failed("replay from", Box::new(error)))?;
    handle
        .delete_message(sequence)
        .await
        .map_err(|error| failed("delete from", Box::new(error)))?;
    Ok(())
}
