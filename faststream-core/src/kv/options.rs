//! `KvWatch`: which bucket a subscriber watches and how.

use std::borrow::Cow;
use std::time::Duration;

pub use faststream_rules::MAX_WORKERS;

use crate::error::{Error, Result};
use crate::kv::group::GroupSettings;
use crate::kv::start_at::StartAt;

/// The default [`KvWatch::timeout`].
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`KvWatch::inactive_threshold`].
pub const DEFAULT_INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);
/// Below this, a heartbeat every `timeout / 2` would load the server for little gain.
const MIN_WATCH_TIMEOUT: Duration = Duration::from_millis(200);
/// The server's own lower bound for a consumer's inactive threshold is about this.
const MIN_INACTIVE_THRESHOLD: Duration = Duration::from_secs(1);

/// Settings of a `kv_watch` subscriber: the bucket, and how to watch it. FastStream's `KvWatch`
/// options, each of which takes effect (see each method).
///
/// `#[subscriber("key", kv_watch = "bucket")]` is shorthand for
/// `kv_watch = KvWatch::new("bucket")`.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::KvWatch;
///
/// let watch = KvWatch::new("accounts")
///     .include_history(true)
///     .ignore_deletes(true)
///     .inactive_threshold(Duration::from_secs(60));
/// assert_eq!(watch.bucket(), "accounts");
/// assert!(watch.validate().is_ok());
/// assert!(KvWatch::new("a").include_history(true).updates_only(true).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWatch {
    // Read directly by the watcher and the dispatcher; users set them with the builder methods.
    pub(crate) bucket: Cow<'static, str>,
    pub(crate) declare: bool,
    pub(crate) include_history: bool,
    pub(crate) updates_only: bool,
    pub(crate) ignore_deletes: bool,
    pub(crate) headers_only: bool,
    pub(crate) meta_only: bool,
    pub(crate) inactive_threshold: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_workers: usize,
    /// `Some`: the subscriber is a member of this consumer group.
    pub(crate) group: Option<GroupSettings>,
    /// The watch is of an object store's metadata (an `obj_watch`), not of a bucket's keys.
    pub(crate) objects: bool,
    pub(crate) batched_catch_up: bool,
}

impl KvWatch {
    /// Watches `bucket`, creating it with the default configuration if it does not exist.
    pub fn new(bucket: impl Into<Cow<'static, str>>) -> Self {
        Self {
            bucket: bucket.into(),
            declare: true,
            include_history: false,
            updates_only: false,
            ignore_deletes: false,
            headers_only: false,
            meta_only: false,
            inactive_threshold: DEFAULT_INACTIVE_THRESHOLD,
            timeout: DEFAULT_WATCH_TIMEOUT,
            max_workers: 1,
            group: None,
            objects: false,
            batched_catch_up: false,
        }
    }

    /// `true` (the default): create the bucket at start-up if it is missing, with the default
    /// configuration, or use it as it is. `false`: only look it up; a missing bucket stops
    /// start-up with an error naming it.
    #[must_use]
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// Deliver every retained revision of every matching key, oldest first, instead of only
    /// the latest one (the server's "deliver all" policy).
    #[must_use]
    pub fn include_history(mut self, include_history: bool) -> Self {
        self.include_history = include_history;
        self
    }

    /// Deliver only changes made after the watch started, nothing that existed before it
    /// (nats.go's `UpdatesOnly`; the server's "deliver new" policy). Contradicts
    /// `include_history`.
    #[must_use]
    pub fn updates_only(mut self, updates_only: bool) -> Self {
        self.updates_only = updates_only;
        self
    }

    /// Never call the handler for `DEL`, `PURGE` and `EXPIRED` entries (every entry that is not
    /// a `PUT`).
    #[must_use]
    pub fn ignore_deletes(mut self, ignore_deletes: bool) -> Self {
        self.ignore_deletes = ignore_deletes;
        self
    }

    /// `true`: read the latest values in pages of batched direct gets (nats-server 2.11+),
    /// then go on with a consumer from the next revision; default `false` (a consumer only).
    ///
    /// Taken only where it gives the same entries: a watch of the latest values (not
    /// `include_history`, `updates_only`, `headers_only` or `meta_only`) of a bucket that allows
    /// direct gets and holds one message per key (history 1, or no key rewritten yet);
    /// otherwise, and on older servers, the watch uses its consumer as usual. Not the default
    /// because it is slower where it was measured: nats-server spends about twice the CPU per
    /// entry on a batched direct get as on a consumer's delivery, and each entry comes with six
    /// headers for the client to parse (see BENCHMARKS.md, "Batched catch-up").
    #[must_use]
    pub fn batched_catch_up(mut self, batched: bool) -> Self {
        self.batched_catch_up = batched;
        self
    }

    /// Ask the server for the entries' headers only, without values: the handler sees empty
    /// values, and [`KvMessage::value_size`](crate::KvMessage::value_size) tells how large each
    /// value is. Key-Value entries carry no user headers, so this is the same as `meta_only`.
    #[must_use]
    pub fn headers_only(mut self, headers_only: bool) -> Self {
        self.headers_only = headers_only;
        self
    }

    /// Deliver the entries' metadata (key, revision, operation, time, size) without their
    /// values; the server sends headers only.
    #[must_use]
    pub fn meta_only(mut self, meta_only: bool) -> Self {
        self.meta_only = meta_only;
        self
    }

    /// How long the server keeps the watch's consumer after the watcher goes away (set on the
    /// server's consumer; default 30 s).
    #[must_use]
    pub fn inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = threshold;
        self
    }

    /// How long the watch may go without hearing from the server (entries or its idle
    /// heartbeats, which the server sends every `timeout / 2`) before it is considered broken
    /// and re-created after the last revision seen. Also bounds each request that creates the
    /// watch. Default 5 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Up to `workers` handler calls at once (default 1: one at a time, as FastStream). Entries
    /// of the same key are never handled concurrently and always in revision order: an entry
    /// whose key is being handled waits for that call. Also `#[subscriber(.., max_workers = 8)]`.
    #[must_use]
    pub fn max_workers(mut self, workers: usize) -> Self {
        self.max_workers = workers;
        self
    }

    /// Makes the subscriber a member of a consumer group on this bucket and key pattern:
    /// the instances of a service that run it share the changes (each handled by one of them),
    /// the changes of a key are handled one at a time and in revision order across all of
    /// them, and progress is kept on the server, so a member started later goes on where the
    /// group left off. `"billing"` gives the default settings; see [`GroupSettings`] for the
    /// rest. Needs nats-server 2.11 or newer. Also `#[subscriber(.., group = "billing")]`.
    ///
    /// What a group starts from is chosen as for a watch: the latest value of each key (the
    /// default), every retained revision (`include_history`) or only later changes
    /// (`updates_only`). `max_workers` is per instance.
    #[must_use]
    pub fn group(mut self, group: impl Into<GroupSettings>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The consumer group the subscriber is a member of, if any.
    pub fn group_settings(&self) -> Option<&GroupSettings> {
        self.group.as_ref()
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether start-up creates the bucket when it is missing.
    pub fn declares(&self) -> bool {
        self.declare
    }

    /// Whether the server sends headers only (`headers_only` or `meta_only`). An object
    /// watch always reads the metadata, which is its messages' whole content.
    pub(crate) fn without_values(&self) -> bool {
        !self.objects && (self.headers_only || self.meta_only)
    }

    /// Whether this watches an object store (`obj_watch`) rather than a bucket's keys.
    pub(crate) fn is_objects(&self) -> bool {
        self.objects
    }

    pub(crate) fn start_at(&self) -> StartAt {
        if self.include_history {
            StartAt::Beginning
        } else if self.updates_only {
            StartAt::NewOnly
        } else {
            StartAt::LatestPerKey
        }
    }

    /// The idle heartbeat asked of the server: half the timeout, so one lost heartbeat is
    /// tolerated.
    pub(crate) fn idle_heartbeat(&self) -> Duration {
        self.timeout / 2
    }

    /// Checks the settings without contacting the server; every problem, the bucket name
    /// included, is listed in the [`Error::InvalidWatch`].
    pub fn validate(&self) -> Result<()> {
        invalid_watch(&self.bucket, self.problems())
    }

    /// Every problem of the settings, one sentence each, the bucket name included.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = faststream_rules::validate_bucket(&self.bucket) {
            problems.push(error.to_string());
        }
        if self.include_history && self.updates_only {
            problems.push(
                "`include_history` and `updates_only` contradict each other: one delivers \
                 every retained revision, the other nothing from before the start"
                    .to_owned(),
            );
        }
        if self.timeout < MIN_WATCH_TIMEOUT {
            problems.push(format!(
                "`timeout` must be at least {MIN_WATCH_TIMEOUT:?} (the server's heartbeats come \
                 every timeout / 2), got {:?}",
                self.timeout
            ));
        }
        if self.inactive_threshold < MIN_INACTIVE_THRESHOLD {
            problems.push(format!(
                "`inactive_threshold` must be at least {MIN_INACTIVE_THRESHOLD:?}, got {:?}",
                self.inactive_threshold
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.max_workers) {
            problems.push(format!(
                "`max_workers` must be 1..={MAX_WORKERS}, got {}",
                self.max_workers
            ));
        }
        if let Some(group) = &self.group {
            problems.extend(group.problems());
        }
        problems
    }
}

impl From<String> for KvWatch {
    fn from(bucket: String) -> Self {
        Self::new(bucket)
    }
}

impl From<&'static str> for KvWatch {
    fn from(bucket: &'static str) -> Self {
        Self::new(bucket)
    }
}

/// `Ok` without problems, else the [`Error::InvalidWatch`] listing them for `bucket`.
pub(crate) fn invalid_watch(bucket: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidWatch {
            bucket: bucket.to_owned(),
            problems,
        })
    }
}
