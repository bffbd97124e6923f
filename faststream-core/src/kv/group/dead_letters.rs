//! Dead letters: the changes a group gave up, kept in a stream of their own where an operator
//! can list them ([`KvGroup::dead_letters`](super::KvGroup::dead_letters)), replay one
//! ([`KvGroup::replay`](super::KvGroup::replay)) or discard it.
//!
//! A dead letter is the change's value with headers naming the key, the bucket's revision, the
//! operation, the creation time, the attempts, the last error and the member that gave up.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::layout::GroupLayout;
use crate::kv::message::{KvMessage, Operation};

const KEY: &str = "Faststream-Key";
const REVISION: &str = "Faststream-Revision";
const OPERATION: &str = "Faststream-Operation";
const CREATED: &str = "Faststream-Created-Ns";
pub(crate) const ATTEMPTS: &str = "Faststream-Attempts";
pub(crate) const ERROR: &str = "Faststream-Error";
const MEMBER: &str = "Faststream-Member";
/// The longest error kept in a dead letter, in characters.
const MAX_ERROR_CHARS: usize = 4096;

/// A change a group gave up: what it was, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its sequence in the group's dead-letter stream; pass it to
    /// [`KvGroup::replay`](super::KvGroup::replay) or [`KvGroup::discard`](super::KvGroup::discard).
    pub sequence: u64,
    /// The key.
    pub key: String,
    /// The bucket's revision of the change.
    pub revision: u64,
    /// What the change was.
    pub operation: Operation,
    /// When the change was made.
    pub created: SystemTime,
    /// How many times it was tried.
    pub attempts: u64,
    /// The last attempt's error (or why it was not tried again).
    pub error: String,
    /// The member that gave it up.
    pub member: String,
    /// The value (empty for a deletion).
    pub value: Bytes,
}

/// Keeps a given-up change; returns its sequence in the dead-letter stream once stored.
pub(crate) async fn publish(
    context: &jetstream::Context,
    layout: &GroupLayout,
    message: &KvMessage,
    attempts: u64,
    error: &str,
    member: &str,
) -> Result<u64, async_nats::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(KEY, message.key());
    headers.insert(REVISION, message.revision().to_string().as_str());
    headers.insert(OPERATION, message.operation().as_str());
    let created = message
        .created()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    headers.insert(CREATED, created.to_string().as_str());
    headers.insert(ATTEMPTS, attempts.to_string().as_str());
    headers.insert(ERROR, header_line(error).as_str());
    headers.insert(MEMBER, member);
    let ack = context
        .publish_with_headers(
            layout.dead_subject(message.key()),
            headers,
            message.value().clone(),
        )
        .await?
        .await?;
    Ok(ack.sequence)
}

/// `error` as a header value: one line, and short enough that a long error cannot make the
/// letter too large to keep (it would then be retried for ever).
pub(crate) fn header_line(error: &str) -> String {
    error
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Letters asked for per pull request when reading them all.
const READ_BATCH: usize = 500;
/// How long one pull request of [`read_all`] may go unanswered.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reading consumer outlives a reader that vanished (it is deleted when done).
const READER_INACTIVE: Duration = Duration::from_secs(30);

/// A failure of [`read_all`]: the step, and its cause.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub(crate) struct ReadError {
    step: &'static str,
    #[source]
    source: Option<async_nats::Error>,
}

impl ReadError {
    fn new(step: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Self {
            step,
            source: Some(source.into()),
        }
    }
}

/// Every dead letter kept, oldest first.
pub(crate) async fn read_all(
    stream: &jetstream::stream::Stream,
    layout: &GroupLayout,
) -> Result<Vec<DeadLetter>, ReadError> {
    read_stored(
        stream,
        layout.dead_subjects(),
        |sequence, subject, headers, value| from_parts(layout, sequence, subject, headers, value),
    )
    .await
}

/// Every message of `stream` on `filter`, oldest first, each made a `T` by `parse` (from its
/// sequence, subject, headers and payload), read with a consumer of its own (one pull request
/// per [`READ_BATCH`] messages, not one request per message), deleted when done. Nothing is
/// skipped: a failed request fails the whole read. The dead letters of consumer groups and of
/// stream subscribers are both read this way.
pub(crate) async fn read_stored<T>(
    stream: &jetstream::stream::Stream,
    filter: String,
    parse: impl Fn(u64, &str, Option<&HeaderMap>, Bytes) -> T,
) -> Result<Vec<T>, ReadError> {
    if stream.cached_info().state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(pull::Config {
            description: Some("faststream: listing the dead letters".to_owned()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            filter_subject: filter,
            inactive_threshold: READER_INACTIVE,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|error| ReadError::new("creating a consumer to read them", error))?;
    let read = read_with(&consumer, parse).await;
    let name = consumer.cached_info().name.clone();
    if let Err(error) = stream.delete_consumer(&name).await {
        tracing::debug!(consumer = name, error = %error,
            "could not delete the consumer that read the dead letters; the server removes it when idle");
    }
    read
}

async fn read_with<T>(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    parse: impl Fn(u64, &str, Option<&HeaderMap>, Bytes) -> T,
) -> Result<Vec<T>, ReadError> {
    let mut left = consumer.cached_info().num_pending;
    let mut letters = Vec::with_capacity(usize::try_from(left).unwrap_or_default());
    while left > 0 {
        let before = letters.len();
        let batch = consumer
            .fetch()
            .max_messages(READ_BATCH)
            .messages()
            .await
            .map_err(|error| ReadError::new("asking for them", error))?;
        let fetched = tokio::time::timeout(READ_TIMEOUT, async {
            let mut batch = std::pin::pin!(batch);
            while let Some(message) = batch.next().await {
                let message = message.map_err(|error| ReadError::new("reading them", error))?;
                let info = message
                    .info()
                    .map_err(|error| ReadError::new("reading a letter's metadata", error))?;
                left = info.pending;
                let sequence = info.stream_sequence;
                letters.push(parse(
                    sequence,
                    &message.subject,
                    message.headers.as_ref(),
                    message.payload.clone(),
                ));
            }
            Ok::<(), ReadError>(())
        })
        .await;
        match fetched {
            Ok(fetched) => fetched?,
            Err(_) => {
                return Err(ReadError {
                    step: "waiting for them: no answer within the read timeout",
                    source: None,
                })
            }
        }
        if letters.len() == before {
            // Nothing came although letters were pending: those were discarded meanwhile, or
            // the answer was lost. The server's count tells which.
            let mut info = consumer.clone();
            let pending = info
                .info()
                .await
                .map_err(|error| ReadError::new("counting those left", error))?
                .num_pending;
            if pending > 0 {
                return Err(ReadError {
                    step: "reading them: the server sent none while some were left",
                    source: None,
                });
            }
            left = 0;
        }
    }
    Ok(letters)
}

/// A stored dead letter read back from its sequence, subject, headers and value.
pub(crate) fn from_parts(
    layout: &GroupLayout,
    sequence: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    value: Bytes,
) -> DeadLetter {
    let header = |name: &str| {
        headers
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    let operation = match header(OPERATION).as_str() {
        "DEL" => Operation::Delete,
        "PURGE" => Operation::Purge,
        "EXPIRED" => Operation::Expired,
        _ => Operation::Put,
    };
    let created = header(CREATED)
        .parse::<u64>()
        .map(|nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let key = match header(KEY) {
        key if key.is_empty() => layout.key_of_dead(subject).unwrap_or_default().to_owned(),
        key => key,
    };
    DeadLetter {
        sequence,
        key,
        revision: header(REVISION).parse().unwrap_or_default(),
        operation,
        created,
        attempts: header(ATTEMPTS).parse().unwrap_or_default(),
        error: header(ERROR),
        member: header(MEMBER),
        value,
    }
}
