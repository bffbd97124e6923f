//! [`KvBatch`]: several writes of one bucket committed all together or not at all.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::ErrorCode;
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use serde::Serialize;

use super::commit::{self, Outcome, Outgoing};
use super::conflict::{find_changed, is_wrong_revision, reported_revision};
use crate::error::{AtomicWriteError, Error, Result};
use crate::kv::features::{self, ATOMIC_BATCH_SINCE};
use crate::KeyValue;

/// The most writes one commit may have: nats-server's default limit on an atomic batch
/// (`max_batch_size`, 1,000). More is refused before anything is sent.
pub const MAX_ATOMIC_WRITES: usize = 1000;

/// How long a commit waits for the server's answer when the connection sets no request timeout.
const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`KeyValue::atomic`] is named in [`Error::ServerTooOld`].
const ATOMIC_WRITES: &str = "atomic writes (KeyValue::atomic)";

/// Several writes of one bucket, committed together: after [`commit`](Self::commit) either all
/// of them are stored, at consecutive revisions, or none is. Made by [`KeyValue::atomic`];
/// nothing is sent before `commit`.
///
/// Each write is a [`put`](Self::put), a [`create`](Self::create) (only if the key has no
/// value), an [`update`](Self::update) (only if the key is at the given revision) or a
/// [`delete`](Self::delete); the JSON forms encode the value. The server checks every `create`
/// and `update` against the bucket as it was before the commit, and refuses the whole commit if
/// one does not hold: [`Error::KeyChanged`] naming that key (the first in the commit's order).
/// A key may be written more than once in a commit, but only its first write may carry an
/// expectation (`create`, `update`): a later one is refused before anything is sent
/// ([`AtomicWriteError::SecondExpectation`]).
///
/// Needs nats-server 2.12 or newer and a bucket allowing atomic writes
/// ([`BucketConfig::allow_atomic`](crate::kv::BucketConfig::allow_atomic)); otherwise
/// [`Error::ServerTooOld`] or [`Error::AtomicWrite`] with [`AtomicWriteError::NotAllowed`],
/// before anything is sent. At most [`MAX_ATOMIC_WRITES`] writes. See the
/// [guide](crate::guide::writes#atomic-commits) for what watchers, views and group members see
/// of a commit.
///
/// ```no_run
/// use faststream_core::kv::BucketConfig;
///
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// let accounts = broker
///     .key_value_with(BucketConfig::new("accounts").allow_atomic(true))
///     .await?;
/// let alice = accounts.entry_json::<i64>("alice").await?.expect("alice");
/// let bob = accounts.entry_json::<i64>("bob").await?.expect("bob");
/// // Move 10 from alice to bob, only if neither changed since read.
/// let committed = accounts
///     .atomic()
///     .update_json("alice", &(alice.value - 10), alice.revision)
///     .update_json("bob", &(bob.value + 10), bob.revision)
///     .put_json("log.last", &"alice->bob 10")
///     .commit()
///     .await?;
/// println!("{} writes at revisions {:?}", committed.len(), committed.revisions());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "nothing is written until `commit`"]
pub struct KvBatch {
    kv: KeyValue,
    writes: Vec<Write>,
    /// The first write that could not be made (an invalid key, a value that does not encode),
    /// returned by `commit` before anything is sent.
    invalid: Option<Invalid>,
}

#[derive(Debug, Clone)]
struct Write {
    key: String,
    value: Bytes,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    /// Only if the key has no value (no entry, or a delete marker).
    Create,
    /// Only if the key's last revision is this one.
    Update(u64),
    Delete,
}

/// Why a write could not be added, kept for `commit` (an `Error` is not `Clone`).
#[derive(Debug, Clone)]
enum Invalid {
    Key { key: String },
    Encode { key: String, problem: String },
}

/// A value that did not encode, as the source of the error `commit` returns.
#[derive(Debug, thiserror::Error)]
#[error("the value does not encode as JSON: {0}")]
struct EncodeFailed(String);

impl KeyValue {
    /// An atomic commit of several writes to this bucket (nats-server 2.12+, a bucket declared
    /// with [`BucketConfig::allow_atomic`](crate::kv::BucketConfig::allow_atomic)): see
    /// [`KvBatch`].
    pub fn atomic(&self) -> KvBatch {
        KvBatch {
            kv: self.clone(),
            writes: Vec::new(),
            invalid: None,
        }
    }
}

impl KvBatch {
    fn push(mut self, key: impl Into<String>, value: Bytes, kind: Kind) -> Self {
        let key = key.into();
        if self.invalid.is_none() && faststream_rules::validate_key(&key).is_err() {
            self.invalid = Some(Invalid::Key { key: key.clone() });
        }
        self.writes.push(Write { key, value, kind });
        self
    }

    fn push_json<T: Serialize + ?Sized>(
        self,
        key: impl Into<String>,
        value: &T,
        kind: Kind,
    ) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.push(key, bytes.into(), kind),
            Err(error) => {
                let mut batch = self;
                let key = key.into();
                batch.invalid.get_or_insert(Invalid::Encode {
                    key: key.clone(),
                    problem: error.to_string(),
                });
                batch.writes.push(Write {
                    key,
                    value: Bytes::new(),
                    kind,
                });
                batch
            }
        }
    }

    /// Writes `value` to `key`, whatever it holds.
    pub fn put(self, key: impl Into<String>, value: Bytes) -> Self {
        self.push(key, value, Kind::Put)
    }

    /// Writes `value` to `key` only if the key has no value (never written, deleted or purged).
    pub fn create(self, key: impl Into<String>, value: Bytes) -> Self {
        self.push(key, value, Kind::Create)
    }

    /// Writes `value` to `key` only if the key's last revision is `revision` (a delete marker's
    /// counts; 0: the key has no entry at all).
    pub fn update(self, key: impl Into<String>, value: Bytes, revision: u64) -> Self {
        self.push(key, value, Kind::Update(revision))
    }

    /// Deletes `key` (a `DEL` marker, as [`KeyValue::delete`]).
    pub fn delete(self, key: impl Into<String>) -> Self {
        self.push(key, Bytes::new(), Kind::Delete)
    }

    /// [`put`](Self::put) of `value` as JSON; a value that does not encode fails the commit,
    /// before anything is sent.
    pub fn put_json<T: Serialize + ?Sized>(self, key: impl Into<String>, value: &T) -> Self {
        self.push_json(key, value, Kind::Put)
    }

    /// [`create`](Self::create) of `value` as JSON.
    pub fn create_json<T: Serialize + ?Sized>(self, key: impl Into<String>, value: &T) -> Self {
        self.push_json(key, value, Kind::Create)
    }

    /// [`update`](Self::update) of `value` as JSON.
    pub fn update_json<T: Serialize + ?Sized>(
        self,
        key: impl Into<String>,
        value: &T,
        revision: u64,
    ) -> Self {
        self.push_json(key, value, Kind::Update(revision))
    }

    /// How many writes the commit has.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether the commit has no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Sends the writes as one atomic batch and waits for the server's answer: all stored (the
    /// revision of each) or none.
    ///
    /// Before anything is sent: an invalid key ([`Error::KeyValue`]), a value that did not
    /// encode, no write, more than [`MAX_ATOMIC_WRITES`], a second write of a key carrying an
    /// expectation ([`Error::AtomicWrite`]), a server before 2.12 ([`Error::ServerTooOld`]), or
    /// a bucket without `allow_atomic` (its stream's info is read again once if the handle's
    /// copy says no, as it may have been allowed since). From the server: an expectation that
    /// did not hold is [`Error::KeyChanged`] naming the first such key and its revision then
    /// (a `create` of a key whose latest entry is a delete marker is sent again, expecting that
    /// marker, as [`KeyValue::create`] does); anything else is [`Error::AtomicWrite`] with the
    /// server's error. Too many commits in flight at the server (JetStream error 10210) is
    /// retried as [`ConflictRetry`](crate::kv::ConflictRetry) says.
    pub async fn commit(self) -> Result<Committed> {
        let KvBatch {
            kv,
            mut writes,
            invalid,
        } = self;
        let count = writes.len();
        let refused = |source| Error::AtomicWrite {
            bucket: kv.name().to_owned(),
            writes: count,
            source,
        };
        match invalid {
            // Checked again for the error naming what is wrong with it.
            Some(Invalid::Key { key }) => kv.check("write atomically", &key)?,
            Some(Invalid::Encode { key, problem }) => {
                return Err(kv.failed("write atomically", &key)(EncodeFailed(problem)))
            }
            None => {}
        }
        if writes.is_empty() {
            return Err(refused(AtomicWriteError::Empty));
        }
        if writes.len() > MAX_ATOMIC_WRITES {
            return Err(refused(AtomicWriteError::TooLarge {
                writes: writes.len(),
                limit: MAX_ATOMIC_WRITES,
            }));
        }
        if let Some(key) = second_expectation(&writes) {
            return Err(refused(AtomicWriteError::SecondExpectation { key }));
        }
        features::require(
            ATOMIC_WRITES,
            ATOMIC_BATCH_SINCE,
            &kv.client().server_info().version,
        )?;
        if !allows_atomic(&kv).await? {
            return Err(refused(AtomicWriteError::NotAllowed));
        }
        // A `create` over a delete marker is sent again expecting the marker, once per key; a
        // full server is waited out as the handle's conflict retry says.
        let mut creates_left = writes.iter().filter(|w| w.kind == Kind::Create).count();
        let mut busy = 0;
        loop {
            match send(&kv, &writes).await? {
                Sent::Committed(committed) => return Ok(committed),
                Sent::Deleted { index, revision } if creates_left > 0 => {
                    creates_left -= 1;
                    writes[index].kind = Kind::Update(revision);
                }
                Sent::Deleted { index, revision } => {
                    return Err(key_changed(&kv, &writes[index], Some(revision)))
                }
                Sent::Changed { index, current } => {
                    return Err(key_changed(&kv, &writes[index], current))
                }
                Sent::Busy(error) => {
                    busy += 1;
                    if busy >= kv.conflict_retry().max_attempts() {
                        return Err(refused(AtomicWriteError::Refused(error)));
                    }
                    tokio::time::sleep(kv.conflict_retry().pause_after(busy + 1)).await;
                }
                Sent::Refused(error) => return Err(refused(error)),
            }
        }
    }
}

/// What one sending of the batch came to.
enum Sent {
    Committed(Committed),
    /// The expectation of write `index` did not hold; the key is at `current` if known.
    Changed {
        index: usize,
        current: Option<u64>,
    },
    /// Write `index` is a `create` and its key's latest entry is a delete marker at `revision`.
    Deleted {
        index: usize,
        revision: u64,
    },
    /// Too many batches in flight at the stream or the server: nothing stored, try again.
    Busy(async_nats::jetstream::Error),
    Refused(AtomicWriteError),
}

async fn send(kv: &KeyValue, writes: &[Write]) -> Result<Sent> {
    let prefix = kv
        .store()
        .put_prefix
        .clone()
        .unwrap_or_else(|| kv.store().prefix.clone());
    let messages = writes
        .iter()
        .map(|write| Outgoing {
            subject: format!("{prefix}{}", write.key),
            headers: headers(write.kind),
            payload: write.value.clone(),
        })
        .collect();
    let timeout = kv.client().timeout().unwrap_or(DEFAULT_COMMIT_TIMEOUT);
    let outcome = match commit::send(kv.client(), messages, timeout).await {
        Ok(outcome) => outcome,
        Err(error) => return Ok(Sent::Refused(error)),
    };
    let (index, error) = match outcome {
        Outcome::Committed { batch_id, ack } => {
            let count = writes.len() as u64;
            // Stored at consecutive sequences, the commit's last.
            let first = ack.sequence.saturating_sub(count - 1);
            let revisions = writes
                .iter()
                .zip(first..)
                .map(|(write, revision)| (write.key.clone(), revision))
                .collect();
            return Ok(Sent::Committed(Committed {
                batch_id,
                revisions,
            }));
        }
        Outcome::Refused { index, error } => (index, error),
    };
    if error.error_code() == ErrorCode(10210) {
        return Ok(Sent::Busy(error));
    }
    if !is_wrong_revision(&error) {
        tracing::debug!(bucket = kv.name(), key = %writes[index].key, %error,
            "atomic commit refused");
        return Ok(Sent::Refused(refusal(writes, error)));
    }
    let expecting: Vec<(usize, &str, u64)> = writes
        .iter()
        .enumerate()
        .filter_map(|(index, write)| match write.kind {
            Kind::Create => Some((index, write.key.as_str(), 0)),
            Kind::Update(revision) => Some((index, write.key.as_str(), revision)),
            Kind::Put | Kind::Delete => None,
        })
        .collect();
    let reported = reported_revision(&error);
    let Some(changed) = find_changed(kv, &expecting, reported).await else {
        return Ok(Sent::Refused(AtomicWriteError::Refused(error)));
    };
    match (writes[changed.index].kind, changed.current) {
        (Kind::Create, Some(revision)) if changed.deleted => Ok(Sent::Deleted {
            index: changed.index,
            revision,
        }),
        _ => Ok(Sent::Changed {
            index: changed.index,
            current: changed.current.or(reported),
        }),
    }
}

/// The server's refusal (other than for a revision): a batch over the server's own limit, when
/// it is lower than the default checked before sending, is told as such.
fn refusal(writes: &[Write], error: async_nats::jetstream::Error) -> AtomicWriteError {
    const TOO_LARGE: ErrorCode = ErrorCode(10199);
    let text = error.to_string();
    let limit = text
        .strip_prefix("atomic publish batch is too large: ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok());
    match limit {
        Some(limit) if error.error_code() == TOO_LARGE => AtomicWriteError::TooLarge {
            writes: writes.len(),
            limit,
        },
        _ => AtomicWriteError::Refused(error),
    }
}

fn key_changed(kv: &KeyValue, write: &Write, current: Option<u64>) -> Error {
    Error::KeyChanged {
        bucket: kv.name().to_owned(),
        operation: "commit",
        key: write.key.clone(),
        expected_revision: match write.kind {
            Kind::Update(revision) => revision,
            Kind::Create | Kind::Put | Kind::Delete => 0,
        },
        current_revision: current,
    }
}

/// The headers of a write, before the batch's own.
fn headers(kind: Kind) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match kind {
        Kind::Put => {}
        Kind::Create => {
            headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(0u64))
        }
        Kind::Update(revision) => {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                HeaderValue::from(revision),
            );
        }
        Kind::Delete => headers.insert("KV-Operation", "DEL"),
    }
    headers
}

/// The first key written again, in a later write carrying an expectation.
fn second_expectation(writes: &[Write]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    writes.iter().find_map(|write| {
        let first = seen.insert(write.key.as_str());
        let expects = matches!(write.kind, Kind::Create | Kind::Update(_));
        (!first && expects).then(|| write.key.clone())
    })
}

/// Whether the bucket's stream allows atomic batches: the handle's copy of its info, else the
/// stream's info read again (it may have been allowed since the handle was made).
async fn allows_atomic(kv: &KeyValue) -> Result<bool> {
    let allowed = kv.atomic_allowed_flag();
    if allowed.load(Ordering::Acquire)
        || kv.store().stream.cached_info().config.allow_atomic_publish
    {
        return Ok(true);
    }
    let mut stream = kv.store().stream.clone();
    let info = stream
        .info()
        .await
        .map_err(|source| kv.bucket_failed("read the stream info of", source))?;
    let now = info.config.allow_atomic_publish;
    if now {
        allowed.store(true, Ordering::Release);
    }
    Ok(now)
}

/// A stored commit: its id and the revision of each write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    batch_id: String,
    revisions: Vec<(String, u64)>,
}

impl Committed {
    /// The commit's id, as its entries carry it ([`KvMessage::batch`](crate::KvMessage::batch)).
    pub fn batch_id(&self) -> &str {
        &self.batch_id
    }

    /// How many writes were stored.
    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    /// Whether none was (never, for a commit that succeeded).
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// Each write's key and revision, in the commit's order (consecutive revisions).
    pub fn revisions(&self) -> &[(String, u64)] {
        &self.revisions
    }

    /// The revision of `key`'s last write in the commit.
    pub fn revision(&self, key: &str) -> Option<u64> {
        self.revisions
            .iter()
            .rev()
            .find(|(written, _)| written == key)
            .map(|(_, revision)| *revision)
    }

    /// The revision of the commit's last write.
    pub fn last_revision(&self) -> u64 {
        self.revisions.last().map_or(0, |(_, revision)| *revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, kind: Kind) -> Write {
        Write {
            key: key.to_owned(),
            value: Bytes::new(),
            kind,
        }
    }

    #[test]
    fn only_a_keys_first_write_may_expect() {
        let ok = [
            write("a", Kind::Update(3)),
            write("a", Kind::Put),
            write("b", Kind::Create),
            write("a", Kind::Delete),
        ];
        assert_eq!(second_expectation(&ok), None);
        let twice = [
            write("a", Kind::Put),
            write("b", Kind::Put),
            write("a", Kind::Update(3)),
        ];
        assert_eq!(second_expectation(&twice).as_deref(), Some("a"));
        let creates = [write("a", Kind::Create), write("a", Kind::Create)];
        assert_eq!(second_expectation(&creates).as_deref(), Some("a"));
    }

    #[test]
    fn write_headers() {
        assert!(headers(Kind::Put).is_empty());
        let create = headers(Kind::Create);
        assert_eq!(
            create
                .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| v.as_str()),
            Some("0")
        );
        let update = headers(Kind::Update(17));
        assert_eq!(
            update
                .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| v.as_str()),
            Some("17")
        );
        assert_eq!(
            headers(Kind::Delete)
                .get("KV-Operation")
                .map(|v| v.as_str()),
            Some("DEL")
        );
    }

    #[test]
    fn committed_revisions() {
        let committed = Committed {
            batch_id: "b".into(),
            revisions: vec![("a".into(), 5), ("b".into(), 6), ("a".into(), 7)],
        };
        assert_eq!(committed.revision("a"), Some(7));
        assert_eq!(committed.revision("b"), Some(6));
        assert_eq!(committed.revision("c"), None);
        assert_eq!(committed.last_revision(), 7);
        assert_eq!(committed.len(), 3);
    }
}
