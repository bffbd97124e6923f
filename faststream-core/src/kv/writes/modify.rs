//! Read-modify-write ([`KeyValue::modify`]) and write-back from a handler
//! ([`KeyValue::write_back`]): writes made for the revision read, so that none overwrites a
//! change it has not seen.

use async_nats::jetstream::kv::UpdateErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conflict::current_revision;
use super::Modified;
use crate::error::{BoxError, Error, Result, WriteBackError};
use crate::kv::message::Operation;
use crate::{KeyValue, KvMessage};

/// How many attempts of a read-modify-write read the key with the bucket's usual read.
const DIRECT_READS: u32 = 2;

/// What one read-modify-write attempt decided, given the key's value.
enum Step<U> {
    /// Write these bytes (`U` is what the caller gets back as written).
    Write(Bytes, U),
    /// Write nothing; the key's value as the caller should see it.
    Keep(Option<U>),
}

impl KeyValue {
    /// Reads `key`, gives its value to `change` and writes what it returns, only if the key is
    /// still at the revision read; if it changed meanwhile, reads it again and calls `change`
    /// again, up to [`ConflictRetry::attempts`](crate::kv::ConflictRetry::attempts) times (10
    /// by default, with a short jittered backoff between them). So concurrent `modify` calls on
    /// one key, in any processes, each apply to the value the others left: none is lost.
    ///
    /// `change` gets `None` when the key has no value (never written, deleted or purged), and
    /// returns:
    /// - `Ok(Some(bytes))`: write `bytes`, at the revision read (created if the key had no
    ///   entry; written over the delete marker if it was deleted);
    /// - `Ok(None)`: write nothing (the result says `written: false`);
    /// - `Err(e)`: write nothing and return [`Error::KeyValue`] with `e` as its source.
    ///
    /// It may be called more than once per `modify` (once per attempt), so it should only
    /// compute, without side effects. The result tells the revision written (or read) and the
    /// attempts made. Every attempt conflicting is [`Error::TooManyConflicts`] naming the
    /// bucket, the key and the attempts.
    ///
    /// ```no_run
    /// use bytes::Bytes;
    ///
    /// # async fn demo(tags: faststream_core::KeyValue) -> anyhow::Result<()> {
    /// // Append a tag unless it is there.
    /// let done = tags
    ///     .modify("user.7", |current: Option<&Bytes>| {
    ///         let text = current.map(|value| String::from_utf8_lossy(value).into_owned());
    ///         let mut list = text.unwrap_or_default();
    ///         if list.split(',').any(|tag| tag == "vip") {
    ///             return Ok::<_, std::convert::Infallible>(None); // nothing to write
    ///         }
    ///         if !list.is_empty() {
    ///             list.push(',');
    ///         }
    ///         list.push_str("vip");
    ///         Ok(Some(Bytes::from(list)))
    ///     })
    ///     .await?;
    /// println!("revision {} after {} conflict(s)", done.revision, done.conflicts());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn modify<F, E>(&self, key: impl AsRef<str>, mut change: F) -> Result<Modified<Bytes>>
    where
        F: FnMut(Option<&Bytes>) -> std::result::Result<Option<Bytes>, E>,
        E: Into<BoxError>,
    {
        let key = key.as_ref();
        self.read_modify_write(key, |current, _revision| {
            Ok(match change(current).map_err(Into::into)? {
                Some(next) => Step::Write(next.clone(), next),
                None => Step::Keep(current.cloned()),
            })
        })
        .await
    }

    /// [`modify`](Self::modify) with the value decoded from JSON into `T` and the new one
    /// encoded back: `change` gets `None` for a key without a value and returns the new value,
    /// or `None` to write nothing. A stored value that does not decode into `T` is
    /// [`Error::Decode`] (nothing written, no retry).
    ///
    /// Ten tasks (or processes) each running this once leave the counter exactly 10 higher:
    ///
    /// ```no_run
    /// # async fn demo(counters: faststream_core::KeyValue) -> anyhow::Result<()> {
    /// let visits = counters
    ///     .modify_json("visits", |count: Option<u64>| {
    ///         Ok::<_, std::convert::Infallible>(Some(count.unwrap_or(0) + 1))
    ///     })
    ///     .await?;
    /// println!("{:?} at revision {}", visits.value, visits.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn modify_json<T, F, E>(
        &self,
        key: impl AsRef<str>,
        mut change: F,
    ) -> Result<Modified<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> std::result::Result<Option<T>, E>,
        E: Into<BoxError>,
    {
        let key = key.as_ref();
        self.read_modify_write(key, |stored, revision| {
            let decode = |value: &Bytes| self.decode::<T>(key, revision, value);
            let current = stored.map(decode).transpose()?;
            match change(current).map_err(Into::into)? {
                Some(next) => Ok(Step::Write(self.encode("modify", key, &next)?, next)),
                // Decoded again rather than `T: Clone`: writing nothing is the rare case.
                None => Ok(Step::Keep(stored.map(decode).transpose()?)),
            }
        })
        .await
    }

    /// The loop behind `modify` and `modify_json`: `decide` gets the value read (`None` for no
    /// value) and its revision, and errors of its own (a user's, boxed) become
    /// [`Error::KeyValue`]s.
    async fn read_modify_write<U>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&Bytes>, u64) -> std::result::Result<Step<U>, StepError>,
    ) -> Result<Modified<U>> {
        self.check("modify", key)?;
        let attempts = self.conflict_retry().max_attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The bucket's usual read (a direct get where allowed: fast, from any replica) for
            // the first two attempts; then the stream leader's, which the write is checked
            // against (a message get, about half as fast here), in case the direct gets keep
            // being answered by a replica behind it or by a mirror (see `latest`).
            let latest = if attempt <= DIRECT_READS {
                self.store()
                    .entry(key)
                    .await
                    .map_err(self.failed("modify", key))?
                    .map(Latest::from)
            } else {
                self.latest(key).await.map_err(self.failed("modify", key))?
            };
            // The revision to write at: the value's, the delete marker's, or 0 for no entry.
            let (current, revision) = match &latest {
                Some(latest) if latest.operation == Operation::Put => {
                    (Some(&latest.value), latest.revision)
                }
                Some(latest) => (None, latest.revision),
                None => (None, 0),
            };
            let step = decide(current, revision).map_err(|error| match error {
                StepError::Ours(error) => error,
                // The function's own error, as it returned it, for callers to downcast.
                StepError::Theirs(source) => Error::KeyValue {
                    bucket: self.name().to_owned(),
                    operation: "modify",
                    key: key.to_owned(),
                    source,
                },
            })?;
            let (bytes, written) = match step {
                Step::Write(bytes, written) => (bytes, written),
                Step::Keep(value) => {
                    return Ok(Modified {
                        value,
                        revision,
                        written: false,
                        attempts: attempt,
                    })
                }
            };
            match self.store().update(key, bytes, revision).await {
                Ok(revision) => {
                    return Ok(Modified {
                        value: Some(written),
                        revision,
                        written: true,
                        attempts: attempt,
                    })
                }
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::trace!(
                        bucket = self.name(),
                        key,
                        attempt,
                        revision,
                        "the key changed between read and write; reading it again"
                    );
                    if attempt >= attempts {
                        return Err(Error::TooManyConflicts {
                            bucket: self.name().to_owned(),
                            key: key.to_owned(),
                            attempts: attempt,
                        });
                    }
                    tokio::time::sleep(self.conflict_retry().pause_after(attempt)).await;
                }
                Err(error) => return Err(self.failed("modify", key)(error)),
            }
        }
    }

    /// The latest entry of `key`, as the bucket's stream leader has it (a message get, not a
    /// direct get): what the next conditional write is checked against. A direct get may be
    /// answered by a replica behind the leader, or by a mirror of the bucket (a consumer
    /// group's mirror answers direct gets of the bucket's subjects too, with its own subjects),
    /// and a read-modify-write reading stale data only conflicts again.
    pub(crate) async fn latest(
        &self,
        key: &str,
    ) -> std::result::Result<Option<Latest>, async_nats::jetstream::stream::LastRawMessageError>
    {
        let subject = format!("{}{key}", self.store().prefix);
        match self
            .store()
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => Ok(Some(Latest {
                operation: Operation::from_headers(Some(&message.headers)),
                value: message.payload,
                revision: message.sequence,
            })),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// From a handler called for `change`: writes `value` to its key only if the key is still
    /// at `change`'s revision (nothing written since the change being handled); returns the new
    /// revision.
    ///
    /// If the key has changed since, nothing is written and the error is
    /// [`Error::KeyChanged`] (its [`is_key_changed`](Error::is_key_changed) is `true`), naming
    /// the bucket, the key, `change`'s revision and the key's revision now. The handler's watch
    /// then calls it again with the newer change (its pattern matches the same key; a watch
    /// with `ignore_deletes` skips a newer delete), so a handler getting `KeyChanged` is usually
    /// done: return `Ok` and let that call decide. Note
    /// that the write-back itself is a change of the key too, and the watch calls the handler
    /// with it: write back only what a second call would leave as it is.
    ///
    /// A change of a deleted key (`DEL`, `PURGE`, `EXPIRED`) is at its marker's revision: a
    /// write-back for it succeeds if nothing was written since the marker. `change` must be of
    /// this handle's bucket ([`WriteBackError::OtherBucket`] otherwise, before any request);
    /// a consumer group's changes carry the bucket's own revisions (its mirror keeps them), so
    /// they are written back the same way.
    ///
    /// ```no_run
    /// use faststream_core::{subscriber, KvMessage, NatsBroker};
    ///
    /// #[subscriber("orders.*", kv_watch = "shop")]
    /// async fn price(change: KvMessage, broker: NatsBroker) -> anyhow::Result<()> {
    ///     let order: serde_json::Value = change.json()?;
    ///     if order.get("total").is_some() {
    ///         return Ok(()); // already priced (possibly by our own write-back)
    ///     }
    ///     let mut priced = order.clone();
    ///     priced["total"] = 42.into();
    ///     let shop = broker.key_value("shop").await?;
    ///     match shop.write_back_json(&change, &priced).await {
    ///         Ok(_) => Ok(()),
    ///         // Changed meanwhile: this handler is called again with the newer revision.
    ///         Err(error) if error.is_key_changed() => Ok(()),
    ///         Err(error) => Err(error.into()),
    ///     }
    /// }
    /// ```
    pub async fn write_back(&self, change: &KvMessage, value: Bytes) -> Result<u64> {
        let key = change.key();
        self.check("write back", key)?;
        if change.bucket() != self.name() {
            return Err(self.failed("write back", key)(
                WriteBackError::OtherBucket {
                    bucket: change.bucket().to_owned(),
                },
            ));
        }
        let expected_revision = change.revision();
        match self.store().update(key, value, expected_revision).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(Error::KeyChanged {
                    bucket: self.name().to_owned(),
                    operation: "write back",
                    key: key.to_owned(),
                    expected_revision,
                    current_revision: current_revision(&error),
                })
            }
            Err(error) => Err(self.failed("write back", key)(error)),
        }
    }

    /// [`write_back`](Self::write_back) with `value` encoded as JSON.
    pub async fn write_back_json<T: Serialize + ?Sized>(
        &self,
        change: &KvMessage,
        value: &T,
    ) -> Result<u64> {
        let value = self.encode("write back", change.key(), value)?;
        self.write_back(change, value).await
    }
}

/// A key's latest entry, read by [`KeyValue::latest`].
pub(crate) struct Latest {
    pub(crate) value: Bytes,
    pub(crate) revision: u64,
    pub(crate) operation: Operation,
}

impl From<async_nats::jetstream::kv::Entry> for Latest {
    fn from(entry: async_nats::jetstream::kv::Entry) -> Self {
        Self {
            value: entry.value,
            revision: entry.revision,
            operation: entry.operation.into(),
        }
    }
}

/// A failure deciding a step: one of ours (a decode error, already an [`Error`]) or the user's
/// function's.
enum StepError {
    Ours(Error),
    Theirs(BoxError),
}

impl From<Error> for StepError {
    fn from(error: Error) -> Self {
        StepError::Ours(error)
    }
}

impl From<BoxError> for StepError {
    fn from(error: BoxError) -> Self {
        StepError::Theirs(error)
    }
}
