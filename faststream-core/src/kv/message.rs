//! `KvMessage`: one change of a key, as handed to a subscriber.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use async_nats::HeaderMap;
use bytes::Bytes;

/// What happened to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// A value was written.
    Put,
    /// The key was deleted; the value is empty.
    Delete,
    /// The key was purged (its history dropped); the value is empty.
    Purge,
    /// The key aged out, by the bucket's `ttl` or its own TTL
    /// ([`KeyValue::create_with_ttl`](crate::KeyValue::create_with_ttl)), and the server wrote
    /// a limit marker in its place; the value is empty. Only buckets declared with
    /// [`BucketConfig::limit_markers`](crate::kv::BucketConfig::limit_markers) (nats-server 2.11
    /// or newer) get markers; in other buckets an expired key vanishes without an entry.
    Expired,
}

impl Operation {
    /// `PUT`, `DEL` or `PURGE`, as NATS writes them in the `KV-Operation` header, or `EXPIRED`
    /// (NATS writes no `KV-Operation` for an expiry: the server's marker says
    /// `Nats-Marker-Reason: MaxAge` instead).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Put => "PUT",
            Operation::Delete => "DEL",
            Operation::Purge => "PURGE",
            Operation::Expired => "EXPIRED",
        }
    }

    /// What a stored message's headers say happened: `DEL` and `PURGE` as written by clients
    /// (`KV-Operation`), or a limit marker written by the server since 2.11
    /// (`Nats-Marker-Reason`); a put otherwise.
    ///
    /// What the markers look like, as seen on nats-server 2.15.1 (a bucket with
    /// `allow_msg_ttl` and `subject_delete_marker_ttl`):
    /// - a key whose last revision ages out, by the stream's `max_age` or its own `Nats-TTL`, is
    ///   replaced by an empty message with `Nats-Marker-Reason: MaxAge`, `Nats-TTL: <marker TTL>`
    ///   (e.g. `1s`) and `Nats-Rollup: sub`, and no `KV-Operation`;
    /// - a `purge_with_ttl` writes a client purge (`KV-Operation: PURGE` plus `Nats-TTL`); when that
    ///   purge ages out, no marker follows: the key simply has no entry any more;
    /// - the server raises a `Nats-TTL` shorter than the marker TTL to it (a 1 s
    ///   `create_with_ttl` in a bucket keeping markers 5 s is stored with `Nats-TTL: 5`);
    /// - `Purge` and `Remove` are reasons the server defines but was not seen writing: a stream
    ///   purge of one key's subject left no marker, and buckets deny message deletes. They are
    ///   mapped as async-nats maps them, in case a server writes them.
    ///
    /// So `KV-Operation` and `Nats-Marker-Reason` never meet on one message; `KV-Operation` is read
    /// first, as async-nats does. Unlike async-nats (which reports `MaxAge` as a purge), an expiry
    /// is its own [`Operation::Expired`]. An unknown reason counts as a purge: the key's
    /// value is gone whatever the reason.
    pub(crate) fn from_headers(headers: Option<&HeaderMap>) -> Self {
        let Some(headers) = headers else {
            return Self::Put;
        };
        if let Some(operation) = headers.get("KV-Operation") {
            return match operation.as_str() {
                "DEL" => Self::Delete,
                "PURGE" => Self::Purge,
                _ => Self::Put,
            };
        }
        match headers
            .get("Nats-Marker-Reason")
            .map(|reason| reason.as_str())
        {
            None => Self::Put,
            Some("MaxAge") => Self::Expired,
            Some("Remove") => Self::Delete,
            Some(_) => Self::Purge,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// async-nats reports an expiry marker as [`kv::Operation::Purge`], so entries read through
/// async-nats (for example [`KeyValue::entry`](crate::KeyValue::entry)) never say `Expired`;
/// only watches do.
impl From<kv::Operation> for Operation {
    fn from(operation: kv::Operation) -> Self {
        match operation {
            kv::Operation::Put => Operation::Put,
            kv::Operation::Delete => Operation::Delete,
            kv::Operation::Purge => Operation::Purge,
        }
    }
}

/// One entry of a watched bucket: its key, value, revision and what happened.
///
/// Take it as a handler argument to see the metadata:
///
/// ```
/// use faststream_core::{subscriber, KvMessage, Operation};
///
/// #[subscriber("config.>", kv_watch = "settings")]
/// async fn on_change(message: KvMessage) {
///     if message.operation() == Operation::Put {
///         println!("{} = {:?} (revision {})", message.key(), message.value(), message.revision());
///     }
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KvMessage {
    bucket: Arc<str>,
    key: String,
    value: Bytes,
    revision: u64,
    delta: u64,
    created: SystemTime,
    operation: Operation,
    value_size: usize,
    headers: Option<HeaderMap>,
}

impl KvMessage {
    /// The bucket the entry belongs to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The entry's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The raw value; empty for `DEL`, `PURGE` and `EXPIRED`.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The revision: the bucket's stream sequence, unique and increasing across the bucket.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many newer entries for the watched keys the server still had when it sent this one.
    pub fn delta(&self) -> u64 {
        self.delta
    }

    /// When the server stored the entry.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// `Put`, `Delete`, `Purge` or `Expired`.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The value's size in bytes: the length of [`value`](Self::value), or, for a watch with
    /// `meta_only` / `headers_only` (which receives no values), the size the server reported.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// The value as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.value)
    }

    /// The value decoded from JSON, for watches without a handler (handlers take `Json<T>`).
    ///
    /// ```
    /// # fn demo(message: faststream_core::KvMessage) -> Result<(), serde_json::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Order {
    ///     total: u64,
    /// }
    /// let order: Order = message.json()?;
    /// # let _ = order.total;
    /// # Ok(())
    /// # }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }

    /// The headers the entry was written with, if any: NATS's own (`KV-Operation` on a
    /// deletion) and whatever a writer publishing to `$KV.<bucket>.<key>` added, such as a
    /// W3C `traceparent` that makes the handler's span a child of the writer's trace.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    /// Which atomic commit ([`KvBatch`](crate::kv::KvBatch), or any ADR-50 atomic batch) wrote
    /// this entry, read from the headers the server stores with it; `None` for an entry written
    /// alone, for one read without headers (`KeyValue::entry`), and for a consumer-group member
    /// (the group's mirror drops batch headers: see the
    /// [guide](crate::guide::writes#what-each-reader-sees-of-a-commit)).
    ///
    /// A watch hands over a commit's keys one call each, in commit order; the call with
    /// [`is_commit`](BatchInfo::is_commit) is the commit's last write.
    pub fn batch(&self) -> Option<BatchInfo> {
        BatchInfo::from_headers(self.headers.as_ref()?)
    }

    /// Takes the value out without copying it.
    pub fn into_value(self) -> Bytes {
        self.value
    }

    /// Takes the key out without copying it.
    pub(crate) fn into_key(self) -> String {
        self.key
    }
}

/// Where an entry stands in the atomic commit that wrote it: [`KvMessage::batch`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchInfo {
    id: String,
    sequence: u64,
    commit: bool,
}

impl BatchInfo {
    /// From `Nats-Batch-Id`, `Nats-Batch-Sequence` and `Nats-Batch-Commit`; `None` unless the
    /// first two are there and the sequence is a number.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let id = headers.get(async_nats::header::NATS_BATCH_ID)?.as_str();
        let sequence = headers
            .get(async_nats::header::NATS_BATCH_SEQUENCE)?
            .as_str()
            .parse()
            .ok()?;
        let commit = headers.get(async_nats::header::NATS_BATCH_COMMIT).is_some();
        Some(Self {
            id: id.to_owned(),
            sequence,
            commit,
        })
    }

    /// The commit's id ([`Committed::batch_id`](crate::kv::Committed::batch_id)), shared by
    /// all of its entries.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This entry's place in the commit, from 1; the commit's last entry has the commit's size.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether this is the commit's last entry (`Nats-Batch-Commit`).
    pub fn is_commit(&self) -> bool {
        self.commit
    }
}

impl fmt::Debug for KvMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvMessage")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("revision", &self.revision)
            .field("operation", &self.operation)
            .field("value_len", &self.value.len())
            .finish()
    }
}

impl From<kv::Entry> for KvMessage {
    fn from(entry: kv::Entry) -> Self {
        let created = system_time(entry.created);
        Self {
            bucket: entry.bucket.into(),
            key: entry.key,
            value_size: entry.value.len(),
            value: entry.value,
            revision: entry.revision,
            delta: entry.delta,
            created,
            operation: entry.operation.into(),
            headers: None,
        }
    }
}

/// The parts of a message as read from the watch's consumer.
pub(crate) struct MessageParts {
    pub(crate) bucket: Arc<str>,
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) value_size: usize,
    pub(crate) revision: u64,
    pub(crate) delta: u64,
    pub(crate) created: time::OffsetDateTime,
    pub(crate) operation: Operation,
    pub(crate) headers: Option<HeaderMap>,
}

impl From<MessageParts> for KvMessage {
    fn from(parts: MessageParts) -> Self {
        Self {
            bucket: parts.bucket,
            key: parts.key,
            value: parts.value,
            value_size: parts.value_size,
            revision: parts.revision,
            delta: parts.delta,
            created: system_time(parts.created),
            operation: parts.operation,
            headers: parts.headers,
        }
    }
}

pub(crate) fn system_time(time: time::OffsetDateTime) -> SystemTime {
    u64::try_from(time.unix_timestamp_nanos())
        .map(|nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, *value);
        }
        headers
    }

    #[test]
    fn operations() {
        let cases: &[(&[(&str, &str)], Operation)] = &[
            (&[], Operation::Put),
            (&[("KV-Operation", "PUT")], Operation::Put),
            (&[("KV-Operation", "DEL")], Operation::Delete),
            (
                &[("KV-Operation", "PURGE"), ("Nats-Rollup", "sub")],
                Operation::Purge,
            ),
            // A purge_with_ttl, as written by async-nats.
            (
                &[
                    ("KV-Operation", "PURGE"),
                    ("Nats-TTL", "2"),
                    ("Nats-Rollup", "sub"),
                ],
                Operation::Purge,
            ),
            // A create_with_ttl is a put.
            (
                &[
                    ("Nats-TTL", "1"),
                    ("Nats-Expected-Last-Subject-Sequence", "0"),
                ],
                Operation::Put,
            ),
            // Server markers, as nats-server 2.15.1 writes them.
            (
                &[
                    ("Nats-Marker-Reason", "MaxAge"),
                    ("Nats-TTL", "1s"),
                    ("Nats-Rollup", "sub"),
                ],
                Operation::Expired,
            ),
            (&[("Nats-Marker-Reason", "Purge")], Operation::Purge),
            (&[("Nats-Marker-Reason", "Remove")], Operation::Delete),
            (&[("Nats-Marker-Reason", "SomethingNew")], Operation::Purge),
            // KV-Operation first, as async-nats and nats.go read it.
            (
                &[("KV-Operation", "DEL"), ("Nats-Marker-Reason", "MaxAge")],
                Operation::Delete,
            ),
        ];
        assert_eq!(Operation::from_headers(None), Operation::Put);
        // A batch's headers say nothing of the operation.
        assert_eq!(
            Operation::from_headers(Some(&headers(&[
                ("Nats-Batch-Id", "b"),
                ("Nats-Batch-Sequence", "2"),
                ("KV-Operation", "DEL"),
            ]))),
            Operation::Delete
        );
        for (pairs, expected) in cases {
            assert_eq!(
                Operation::from_headers(Some(&headers(pairs))),
                *expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn batch_headers() {
        let middle = headers(&[("Nats-Batch-Id", "abc"), ("Nats-Batch-Sequence", "2")]);
        let info = BatchInfo::from_headers(&middle).unwrap();
        assert_eq!(
            (info.id(), info.sequence(), info.is_commit()),
            ("abc", 2, false)
        );
        let last = headers(&[
            ("Nats-Batch-Id", "abc"),
            ("Nats-Batch-Sequence", "3"),
            ("Nats-Batch-Commit", "1"),
        ]);
        let info = BatchInfo::from_headers(&last).unwrap();
        assert_eq!((info.sequence(), info.is_commit()), (3, true));
        for partial in [
            headers(&[("Nats-Batch-Id", "abc")]),
            headers(&[("Nats-Batch-Sequence", "1")]),
            headers(&[("Nats-Batch-Id", "abc"), ("Nats-Batch-Sequence", "x")]),
        ] {
            assert_eq!(BatchInfo::from_headers(&partial), None);
        }
    }
}
