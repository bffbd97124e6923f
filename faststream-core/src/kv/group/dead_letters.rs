//! Dead letters: the changes a group gave up, kept in a stream of their own where an operator
//! can list them ([`KvGroup::dead_letters`](super::KvGroup::dead_letters)), replay one
//! ([`KvGroup::replay`](super::KvGroup::replay)) or discard it.
//!
//! A dead letter is the change's value with headers naming the key, the bucket's revision, the
//! operation, the creation time, the attempts, the last error and the member that gave up.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::layout::GroupLayout;
use crate::kv::message::{KvMessage, Operation};

const KEY: &str = "Faststream-Key";
const REVISION: &str = "Faststream-Revision";
const OPERATION: &str = "Faststream-Operation";
const CREATED: &str = "Faststream-Created-Ns";
const ATTEMPTS: &str = "Faststream-Attempts";
const ERROR: &str = "Faststream-Error";
const MEMBER: &str = "Faststream-Member";

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
    // A header value is one line.
    let error: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(ERROR, error.as_str());
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

/// Reads a stored dead letter back.
pub(crate) fn from_stored(
    layout: &GroupLayout,
    message: jetstream::message::StreamMessage,
) -> DeadLetter {
    let header = |name: &str| {
        message
            .headers
            .get(name)
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
        key if key.is_empty() => layout
            .key_of_dead(&message.subject)
            .unwrap_or_default()
            .to_owned(),
        key => key,
    };
    DeadLetter {
        sequence: message.sequence,
        key,
        revision: header(REVISION).parse().unwrap_or_default(),
        operation,
        created,
        attempts: header(ATTEMPTS).parse().unwrap_or_default(),
        error: header(ERROR),
        member: header(MEMBER),
        value: message.payload,
    }
}
