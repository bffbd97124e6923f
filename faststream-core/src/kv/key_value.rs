//! `KeyValue`: a bucket handle whose key operations check the key before any request.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::error::{Error, Result, TtlError};
use crate::kv::features::{self, LIMIT_MARKERS_SINCE};
use crate::kv::writes::ConflictRetry;

/// A bucket: async-nats's [`kv::Store`] whose key operations check the key against the NATS
/// rules first, so an invalid key is an error naming it, before any request (async-nats lets
/// some through, such as `a..b`). For anything this type does not wrap, [`store`](Self::store)
/// gives the async-nats store itself.
///
/// Beside these byte-level methods: JSON values (`put_json`, `get_json`, ...), writes that
/// cannot lose an update ([`modify`](Self::modify), [`write_back`](Self::write_back)) and
/// atomic commits of several keys ([`atomic`](Self::atomic)); see the
/// [guide](crate::guide::writes).
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// let settings = broker.key_value("settings").await?;
/// let revision = settings.put("mode", "fast".into()).await?;
/// settings.update("mode", "safe".into(), revision).await?;
/// assert_eq!(settings.get("mode").await?.as_deref(), Some(&b"safe"[..]));
/// assert!(settings.put("bad..key", "x".into()).await.is_err()); // no request made
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KeyValue {
    store: kv::Store,
    // For the server's version: per-key TTLs need nats-server 2.11.
    client: async_nats::Client,
    /// How `modify` retries a conflict.
    retry: ConflictRetry,
    /// Set once the bucket's stream was seen to allow atomic batches (it may be allowed after
    /// the handle was made, so `false` is checked again).
    atomic_allowed: Arc<AtomicBool>,
}

impl KeyValue {
    pub(crate) fn new(store: kv::Store, client: async_nats::Client) -> Self {
        Self {
            store,
            client,
            retry: ConflictRetry::new(),
            atomic_allowed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// This handle, with `modify` and `modify_json` retrying conflicts as `retry` says
    /// (default [`ConflictRetry::new`]: 10 attempts, a short jittered backoff).
    ///
    /// ```
    /// use std::time::Duration;
    /// use faststream_core::kv::ConflictRetry;
    ///
    /// # fn demo(counters: faststream_core::KeyValue) {
    /// let patient = counters.with_conflict_retry(
    ///     ConflictRetry::new()
    ///         .attempts(50)
    ///         .backoff(Duration::from_millis(2), Duration::from_millis(100)),
    /// );
    /// assert_eq!(patient.conflict_retry().max_attempts(), 50);
    /// # }
    /// ```
    #[must_use]
    pub fn with_conflict_retry(mut self, retry: ConflictRetry) -> Self {
        self.retry = retry;
        self
    }

    /// How `modify` retries a conflict through this handle.
    pub fn conflict_retry(&self) -> &ConflictRetry {
        &self.retry
    }

    /// The connection's client (the server's version, the request timeout).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The flag set once the bucket was seen to allow atomic batches.
    pub(crate) fn atomic_allowed_flag(&self) -> &AtomicBool {
        &self.atomic_allowed
    }

    /// The async-nats store, for anything this type does not wrap.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.store.name
    }

    /// The bucket's status (history, TTL, value count, ...) as the server last reported it.
    pub async fn status(&self) -> Result<kv::bucket::Status> {
        self.store
            .status()
            .await
            .map_err(|source| self.bucket_failed("read the status of", source))
    }

    /// Every key with a value (deleted keys are left out), as a stream.
    pub async fn keys(&self) -> Result<kv::Keys> {
        self.store
            .keys()
            .await
            .map_err(|source| self.bucket_failed("list the keys of", source))
    }

    pub(crate) fn bucket_failed(
        &self,
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Bucket {
            bucket: self.store.name.clone(),
            operation,
            source: Box::new(source),
        }
    }

    pub(crate) fn check(&self, operation: &'static str, key: &str) -> Result<()> {
        faststream_rules::validate_key(key).map_err(self.failed(operation, key))
    }

    /// Refuses a TTL operation that cannot work, before any request: a TTL under a second, a
    /// server older than 2.11, or a bucket whose stream (as it was when looked up) does not
    /// allow per-message TTLs.
    fn check_ttl(
        &self,
        operation: &'static str,
        feature: &'static str,
        key: &str,
        ttl: Duration,
    ) -> Result<()> {
        if ttl < Duration::from_secs(1) {
            return Err(self.failed(operation, key)(TtlError::TooShort { ttl }));
        }
        features::require(
            feature,
            LIMIT_MARKERS_SINCE,
            &self.client.server_info().version,
        )?;
        if !self.store.stream.cached_info().config.allow_message_ttl {
            return Err(self.failed(operation, key)(TtlError::NotAllowed));
        }
        Ok(())
    }

    pub(crate) fn failed<'a, E>(
        &'a self,
        operation: &'static str,
        key: &'a str,
    ) -> impl FnOnce(E) -> Error + 'a
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |error| Error::KeyValue {
            bucket: self.store.name.clone(),
            operation,
            key: key.to_owned(),
            source: Box::new(error),
        }
    }

    /// The latest value of `key`; `None` if it has none or was deleted.
    pub async fn get(&self, key: impl AsRef<str>) -> Result<Option<Bytes>> {
        let entry = self.latest_entry("get", key.as_ref()).await?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| entry.value))
    }

    /// The latest entry of `key`, deletes included.
    pub async fn entry(&self, key: impl AsRef<str>) -> Result<Option<kv::Entry>> {
        self.latest_entry("read", key.as_ref()).await
    }

    /// The latest entry of `key`: a direct get where the bucket allows it (fast, from any
    /// replica), a miss confirmed by the stream leader. nats-server has every mirror of a
    /// bucket that allows direct gets answer them too (a consumer group's mirror among them,
    /// whose subjects are its own), so a direct get may be told "nothing there" for a key that
    /// exists.
    async fn latest_entry(&self, operation: &'static str, key: &str) -> Result<Option<kv::Entry>> {
        self.check(operation, key)?;
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(self.failed(operation, key))?;
        if entry.is_some() || !self.store.stream.cached_info().config.allow_direct {
            return Ok(entry);
        }
        self.entry_from_leader(operation, key, None).await
    }

    /// The entry of `key` (its latest, or at `revision`) as the stream leader has it: a message
    /// get, not a direct get.
    async fn entry_from_leader(
        &self,
        operation: &'static str,
        key: &str,
        revision: Option<u64>,
    ) -> Result<Option<kv::Entry>> {
        let subject = format!("{}{key}", self.store.prefix);
        let stream = &self.store.stream;
        let stored = match revision {
            Some(revision) => stream.get_raw_message(revision).await,
            None => stream.get_last_raw_message_by_subject(&subject).await,
        };
        let stored = match stored {
            Ok(stored) if stored.subject.as_str() == subject => stored,
            Ok(_) => return Ok(None),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                return Ok(None)
            }
            Err(error) => return Err(self.failed(operation, key)(error)),
        };
        let operation = match crate::kv::message::Operation::from_headers(Some(&stored.headers)) {
            crate::kv::message::Operation::Put => kv::Operation::Put,
            crate::kv::message::Operation::Delete => kv::Operation::Delete,
            _ => kv::Operation::Purge,
        };
        Ok(Some(kv::Entry {
            bucket: self.store.name.clone(),
            key: key.to_owned(),
            value: stored.payload,
            revision: stored.sequence,
            delta: 0,
            created: stored.time,
            operation,
            seen_current: false,
        }))
    }

    /// The entry of `key` at `revision`, if that revision is of this key and still retained.
    pub async fn entry_for_revision(
        &self,
        key: impl AsRef<str>,
        revision: u64,
    ) -> Result<Option<kv::Entry>> {
        let key = key.as_ref();
        self.check("read", key)?;
        let entry = self
            .store
            .entry_for_revision(key, revision)
            .await
            .map_err(self.failed("read", key))?;
        if entry.is_some() || !self.store.stream.cached_info().config.allow_direct {
            return Ok(entry);
        }
        self.entry_from_leader("read", key, Some(revision)).await
    }

    /// Writes `value`; returns the new revision.
    pub async fn put(&self, key: impl AsRef<str>, value: Bytes) -> Result<u64> {
        let key = key.as_ref();
        self.check("put", key)?;
        self.store
            .put(key, value)
            .await
            .map_err(self.failed("put", key))
    }

    /// Writes `value` only if `key` has no value; returns the new revision.
    pub async fn create(&self, key: impl AsRef<str>, value: Bytes) -> Result<u64> {
        let key = key.as_ref();
        self.check("create", key)?;
        self.store
            .create(key, value)
            .await
            .map_err(self.failed("create", key))
    }

    /// Like [`create`](Self::create), and the value lives for `ttl`: when it ages out, the
    /// server removes it and writes a limit marker, which watchers see as
    /// [`Operation::Expired`](crate::Operation::Expired).
    ///
    /// NATS counts TTLs in whole seconds (the fraction is dropped), and the server raises a
    /// TTL shorter than the bucket's marker TTL to it. Needs a bucket declared with
    /// [`BucketConfig::limit_markers`](crate::kv::BucketConfig::limit_markers) and nats-server
    /// 2.11 or newer; otherwise, and for a TTL under a second, an error before any request:
    /// [`Error::ServerTooOld`], or [`Error::KeyValue`] caused by a [`TtlError`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use faststream_core::kv::BucketConfig;
    ///
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// let config = BucketConfig::new("sessions").limit_markers(Duration::from_secs(60));
    /// let sessions = broker.key_value_with(config).await?;
    /// sessions.create_with_ttl("abc", "alice".into(), Duration::from_secs(3600)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_with_ttl(
        &self,
        key: impl AsRef<str>,
        value: Bytes,
        ttl: Duration,
    ) -> Result<u64> {
        let key = key.as_ref();
        self.check("create", key)?;
        self.check_ttl(
            "create",
            "per-key TTLs (KeyValue::create_with_ttl)",
            key,
            ttl,
        )?;
        self.store
            .create_with_ttl(key, value, ttl)
            .await
            .map_err(self.failed("create", key))
    }

    /// Writes `value` only if the latest revision of `key` is `revision`; returns the new one.
    pub async fn update(&self, key: impl AsRef<str>, value: Bytes, revision: u64) -> Result<u64> {
        let key = key.as_ref();
        self.check("update", key)?;
        self.store
            .update(key, value, revision)
            .await
            .map_err(self.failed("update", key))
    }

    /// Deletes `key` (a `DEL` marker; history is kept).
    pub async fn delete(&self, key: impl AsRef<str>) -> Result<()> {
        let key = key.as_ref();
        self.check("delete", key)?;
        self.store
            .delete(key)
            .await
            .map_err(self.failed("delete", key))
    }

    /// Purges `key` (a `PURGE` marker; earlier history is dropped).
    pub async fn purge(&self, key: impl AsRef<str>) -> Result<()> {
        let key = key.as_ref();
        self.check("purge", key)?;
        self.store
            .purge(key)
            .await
            .map_err(self.failed("purge", key))
    }

    /// Like [`purge`](Self::purge), and the purge marker itself is removed after `ttl`, leaving
    /// the key with no entry at all (no further marker follows). Whole seconds, the same
    /// requirements and the same errors as [`create_with_ttl`](Self::create_with_ttl).
    pub async fn purge_with_ttl(&self, key: impl AsRef<str>, ttl: Duration) -> Result<()> {
        let key = key.as_ref();
        self.check("purge", key)?;
        self.check_ttl("purge", "per-key TTLs (KeyValue::purge_with_ttl)", key, ttl)?;
        self.store
            .purge_with_ttl(key, ttl)
            .await
            .map_err(self.failed("purge", key))
    }

    /// Every retained entry of `key`, oldest first.
    pub async fn history(&self, key: impl AsRef<str>) -> Result<kv::History> {
        let key = key.as_ref();
        self.check("read the history of", key)?;
        self.store
            .history(key)
            .await
            .map_err(self.failed("read the history of", key))
    }
}
