//! Sending one atomic batch (ADR-50) and reading the server's answers.
//!
//! The protocol, as nats-server (2.12 to 2.15) implements it (`processJetStreamAtomicBatchMsg`):
//! every message of a batch carries `Nats-Batch-Id` (at most 64 characters) and
//! `Nats-Batch-Sequence` (1, 2, ... with no gap); the last one also `Nats-Batch-Commit: 1`. The
//! server stages the messages; a staged message with a reply subject is answered with an empty
//! message. At the commit it checks every message's expectations in order against the stream as
//! it was before the batch (a key's `Nats-Expected-Last-Subject-Sequence` may appear only on its
//! first message), and then either stores all of them at consecutive stream sequences, with
//! their headers, answering the commit with a `PubAck` carrying `batch` and `count`, or stores
//! none and answers the commit with the first failure (10071 `wrong last sequence: <the key's
//! revision>`). A message refused while staging (too large, too many batches in flight: 10210,
//! ...) is answered with its error and the batch is dropped; every later message of it is then
//! answered with 10176 "batch is incomplete". A batch left without its commit is dropped after
//! 10 s (the server's default). Here every message gets a reply subject of its own (one
//! subscription, no waiting between messages), so a failure is tied to the message, and so to
//! the key, that caused it.

use std::time::Duration;

use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::response::Response;
use async_nats::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::error::{AtomicWriteError, BoxError};

/// One message of a batch, before the batch's headers are added.
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

/// What the server answered a whole batch.
pub(super) enum Outcome {
    /// Stored: the commit's acknowledgement, checked to be this batch's.
    Committed { batch_id: String, ack: PublishAck },
    /// Refused: the earliest error answered, and the index (from 0) of the message it answered.
    Refused {
        index: usize,
        error: async_nats::jetstream::Error,
    },
}

/// Sends `messages` as one atomic batch and waits, up to `timeout`, for the commit's answer.
pub(super) async fn send(
    client: &async_nats::Client,
    messages: Vec<Outgoing>,
    timeout: Duration,
) -> Result<Outcome, AtomicWriteError> {
    let batch_id = nuid::next().to_string();
    let count = messages.len();
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|error| AtomicWriteError::Publish(Box::new(error)))?;
    for (index, message) in messages.into_iter().enumerate() {
        let sequence = index + 1;
        let mut headers = message.headers;
        headers.insert(NATS_BATCH_ID, batch_id.as_str());
        headers.insert(NATS_BATCH_SEQUENCE, HeaderValue::from(sequence));
        if sequence == count {
            headers.insert(NATS_BATCH_COMMIT, "1");
        }
        client
            .publish_with_reply_and_headers(
                message.subject,
                format!("{inbox}.{sequence}"),
                headers,
                message.payload,
            )
            .await
            .map_err(|error| AtomicWriteError::Publish(Box::new(error)))?;
    }
    let unconfirmed = |source: Option<BoxError>| AtomicWriteError::Unconfirmed {
        waited: timeout,
        source,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut earliest: Option<(usize, async_nats::jetstream::Error)> = None;
    loop {
        let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(unconfirmed(Some("the connection closed".into()))),
            Err(_) => return Err(unconfirmed(None)),
        };
        let Some(index) = reply
            .subject
            .rsplit('.')
            .next()
            .and_then(|sequence| sequence.parse::<usize>().ok())
            .and_then(|sequence| sequence.checked_sub(1))
            .filter(|index| *index < count)
        else {
            continue;
        };
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(AtomicWriteError::Publish(
                "no stream takes the bucket's subjects (no responders)".into(),
            ));
        }
        let is_commit = index + 1 == count;
        if reply.payload.is_empty() {
            // A staged message, or a status without payload where the commit's answer belongs.
            if is_commit {
                return Err(unconfirmed(Some(
                    format!("an empty answer to the commit ({:?})", reply.status).into(),
                )));
            }
            continue;
        }
        match serde_json::from_slice::<Response<PublishAck>>(&reply.payload) {
            Ok(Response::Err { error }) => {
                if earliest.as_ref().is_none_or(|(first, _)| index < *first) {
                    earliest = Some((index, error));
                }
                // Every message after a refused one is answered too: the commit's answer is last.
                if is_commit {
                    if let Some((index, error)) = earliest {
                        return Ok(Outcome::Refused { index, error });
                    }
                }
            }
            Ok(Response::Ok(ack)) if is_commit => {
                let matches = ack.batch_id.as_deref() == Some(batch_id.as_str())
                    && ack.batch_size == Some(count as u64);
                if !matches {
                    return Err(unconfirmed(Some(
                        format!(
                            "the acknowledgement is not of this batch `{batch_id}` of {count}: \
                             batch {:?}, count {:?}",
                            ack.batch_id, ack.batch_size
                        )
                        .into(),
                    )));
                }
                return Ok(Outcome::Committed { batch_id, ack });
            }
            Ok(Response::Ok(_)) => {}
            Err(error) if is_commit => return Err(unconfirmed(Some(Box::new(error)))),
            Err(_) => {}
        }
    }
}
