//! `ObjWatch`: how an `obj_watch` subscriber (or [`NatsBroker::obj_watch`]) watches an object
//! store.
//!
//! [`NatsBroker::obj_watch`]: crate::NatsBroker::obj_watch

use std::borrow::Cow;
use std::time::Duration;

use crate::kv::options::{KvWatch, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_WATCH_TIMEOUT};

/// Settings of an `obj_watch` subscriber: FastStream's `ObjWatch` options, each of which takes
/// effect (see each method), plus `max_workers`.
///
/// `#[subscriber("reports", obj_watch = true)]` is shorthand for
/// `obj_watch = ObjWatch::new()`; the subscriber's first argument is the bucket, as in
/// FastStream.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::ObjWatch;
///
/// let watch = ObjWatch::new().ignore_deletes(true).timeout(Duration::from_secs(2));
/// assert!(watch.validate("reports").is_ok());
/// assert!(watch.validate("not a bucket").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjWatch {
    declare: bool,
    include_history: bool,
    updates_only: bool,
    ignore_deletes: bool,
    meta_only: bool,
    inactive_threshold: Duration,
    timeout: Duration,
    max_workers: usize,
}

impl Default for ObjWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjWatch {
    /// The defaults: FastStream's (`declare`, every object's latest version first, deletions
    /// included, a 5 s timeout), one call at a time.
    pub fn new() -> Self {
        Self {
            declare: true,
            include_history: false,
            updates_only: false,
            ignore_deletes: false,
            meta_only: false,
            inactive_threshold: DEFAULT_INACTIVE_THRESHOLD,
            timeout: DEFAULT_WATCH_TIMEOUT,
            max_workers: 1,
        }
    }

    /// `true` (the default): create the object store at start-up if it is missing, with the
    /// default configuration, or use it as it is. `false`: only look it up; a missing store
    /// stops start-up with an error naming it.
    #[must_use]
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// Deliver every retained metadata message instead of only each object's latest one.
    ///
    /// An object's metadata is written with a subject rollup (`Nats-Rollup: sub`): each put or
    /// delete replaces the object's previous metadata on the server. So the history holds one
    /// message per object, and this delivers the same set as the default; it is kept for
    /// FastStream's (and nats.go's) API, and differs only while a rollup is in flight.
    #[must_use]
    pub fn include_history(mut self, include_history: bool) -> Self {
        self.include_history = include_history;
        self
    }

    /// Deliver only changes made after the watch started (nats.go's `UpdatesOnly`).
    /// Contradicts `include_history`.
    #[must_use]
    pub fn updates_only(mut self, updates_only: bool) -> Self {
        self.updates_only = updates_only;
        self
    }

    /// Never call the handler for a deleted object (metadata with `deleted: true`).
    #[must_use]
    pub fn ignore_deletes(mut self, ignore_deletes: bool) -> Self {
        self.ignore_deletes = ignore_deletes;
        self
    }

    /// Accepted for FastStream's API. The watch carries only metadata in any case (an object's
    /// content is read with [`ObjectStore::get_version`](crate::ObjectStore::get_version)), so
    /// there is nothing more to leave out; nats-py ignores it too.
    #[must_use]
    pub fn meta_only(mut self, meta_only: bool) -> Self {
        self.meta_only = meta_only;
        self
    }

    /// How long the server keeps the watch's consumer after the watcher goes away (default
    /// 30 s).
    #[must_use]
    pub fn inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = threshold;
        self
    }

    /// How long the watch may hear nothing from the server (not even a heartbeat) before it
    /// is re-created; the server heartbeats every `timeout / 2` (default 5 s, FastStream's).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Up to `workers` handler calls at once (1..=[`MAX_WORKERS`](crate::kv::MAX_WORKERS),
    /// default 1); the changes of one object are never handled concurrently and stay in order.
    #[must_use]
    pub fn max_workers(mut self, workers: usize) -> Self {
        self.max_workers = workers;
        self
    }

    /// Whether start-up creates the object store when it is missing.
    pub fn declares(&self) -> bool {
        self.declare
    }

    /// Whether deleted objects are passed over.
    pub fn ignores_deletes(&self) -> bool {
        self.ignore_deletes
    }

    /// Checks the settings for a watch of `bucket` without contacting the server; every
    /// problem, the bucket name included, is listed in the
    /// [`Error::InvalidWatch`](crate::Error::InvalidWatch).
    pub fn validate(&self, bucket: &str) -> crate::Result<()> {
        self.watch_of(bucket.to_owned().into()).validate()
    }

    /// The Key-Value watch of the store's metadata subjects these settings make: the watcher,
    /// loops and metrics of a Key-Value watch serve object watches unchanged.
    pub(crate) fn watch_of(&self, bucket: Cow<'static, str>) -> KvWatch {
        let mut watch = KvWatch::new(bucket)
            .declare(self.declare)
            .include_history(self.include_history)
            .updates_only(self.updates_only)
            .inactive_threshold(self.inactive_threshold)
            .timeout(self.timeout)
            .max_workers(self.max_workers)
            // A deletion is a put of metadata saying `deleted`: the loops pass it over (the
            // watcher passes over the Key-Value deletions, which an object store never writes).
            .ignore_deletes(self.ignore_deletes);
        watch.objects = true;
        watch
    }
}

/// `obj_watch = true`: the default settings.
impl From<bool> for ObjWatch {
    fn from(_: bool) -> Self {
        Self::new()
    }
}
