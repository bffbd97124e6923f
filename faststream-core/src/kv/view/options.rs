//! `KvViewOptions`: which bucket a view shows, and how its watch runs.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::Result;
use crate::kv::options::{KvWatch, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_WATCH_TIMEOUT};

/// How long a view may take to catch up unless [`KvViewOptions::catch_up_timeout`] or, for a
/// view an app declares, [`App::wait_for_catch_up`](crate::App::wait_for_catch_up) says.
pub const DEFAULT_VIEW_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a [`KvView`](super::KvView): the bucket, whether to create it, and how the
/// view's watch runs.
///
/// A view holds each key's latest value, so it takes none of the [`KvWatch`] options that
/// change what is delivered or how it is handled (`include_history`, `updates_only`,
/// `ignore_deletes`, `headers_only`, `meta_only`, `max_workers`, `group`): this type has no
/// such methods. A bucket's name converts into the default settings, so
/// `broker.kv_view::<Flag>("flags", ">")` needs no `KvViewOptions` at all.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::kv::KvViewOptions;
///
/// let options = KvViewOptions::new("flags")
///     .declare(false)
///     .timeout(Duration::from_secs(2))
///     .inactive_threshold(Duration::from_secs(60))
///     .catch_up_timeout(Duration::from_secs(10));
/// assert_eq!(options.bucket(), "flags");
/// assert!(!options.declares());
/// assert!(options.validate().is_ok());
/// assert_eq!(KvViewOptions::from("flags"), KvViewOptions::new("flags"));
/// assert!(KvViewOptions::new("no spaces").validate().is_err());
/// assert!(KvViewOptions::new("flags").catch_up_timeout(Duration::ZERO).validate().is_err());
/// ```
///
/// Options that do not apply to a view do not compile:
///
/// ```compile_fail,E0599
/// use faststream_core::kv::KvViewOptions;
///
/// let options = KvViewOptions::new("flags").include_history(true);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvViewOptions {
    bucket: Cow<'static, str>,
    declare: bool,
    timeout: Duration,
    inactive_threshold: Duration,
    /// `None`: the default of whoever starts the view.
    catch_up_timeout: Option<Duration>,
    batched_catch_up: bool,
}

impl KvViewOptions {
    /// Views `bucket`, creating it with the default configuration if it does not exist.
    pub fn new(bucket: impl Into<Cow<'static, str>>) -> Self {
        Self {
            bucket: bucket.into(),
            declare: true,
            timeout: DEFAULT_WATCH_TIMEOUT,
            inactive_threshold: DEFAULT_INACTIVE_THRESHOLD,
            catch_up_timeout: None,
            batched_catch_up: false,
        }
    }

    /// `true` (the default): create the bucket if it is missing, with the default
    /// configuration, or use it as it is. `false`: only look it up; a missing bucket is an
    /// error naming it. As [`KvWatch::declare`].
    #[must_use]
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// How long the view's watch may go without hearing from the server before it is
    /// re-created after the last revision seen; also bounds each request that creates it.
    /// Default 5 s. As [`KvWatch::timeout`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the server keeps the view's consumer after the view goes away. Default 30 s.
    /// As [`KvWatch::inactive_threshold`].
    #[must_use]
    pub fn inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = threshold;
        self
    }

    /// How long the view may take to catch up (hold the bucket's state as of its start) before
    /// what starts it fails with [`Error::CatchUpTimeout`](crate::Error::CatchUpTimeout) naming the bucket and the time:
    /// [`NatsBroker::kv_view`](crate::NatsBroker::kv_view) (default
    /// [`DEFAULT_VIEW_CATCH_UP_TIMEOUT`], 60 s), or the start-up of an app that declares the
    /// view (default: the app's [`wait_for_catch_up`](crate::App::wait_for_catch_up) timeout,
    /// else 60 s). A catch-up that cannot finish (the server unreachable, or a lookup the
    /// catch-up needs refused) fails there instead of waiting forever.
    #[must_use]
    pub fn catch_up_timeout(mut self, timeout: Duration) -> Self {
        self.catch_up_timeout = Some(timeout);
        self
    }

    /// Catch up through batched direct gets rather than a consumer where the bucket and the
    /// server allow it; default `false`. As [`KvWatch::batched_catch_up`].
    #[must_use]
    pub fn batched_catch_up(mut self, batched: bool) -> Self {
        self.batched_catch_up = batched;
        self
    }

    /// The catch-up timeout set with [`catch_up_timeout`](Self::catch_up_timeout), if any.
    pub(crate) fn chosen_catch_up_timeout(&self) -> Option<Duration> {
        self.catch_up_timeout
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether the bucket is created when it is missing.
    pub fn declares(&self) -> bool {
        self.declare
    }

    /// Checks the settings without contacting the server; every problem, the bucket name
    /// included, is listed in the [`Error::InvalidWatch`](crate::Error::InvalidWatch).
    pub fn validate(&self) -> Result<()> {
        let mut problems = self.to_watch().problems();
        if self
            .catch_up_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            problems.push("`catch_up_timeout` must be more than zero".to_owned());
        }
        crate::kv::options::invalid_watch(&self.bucket, problems)
    }

    /// The settings of the view's watch: these, and every other option at its default.
    pub(crate) fn to_watch(&self) -> KvWatch {
        KvWatch::new(self.bucket.clone())
            .declare(self.declare)
            .timeout(self.timeout)
            .inactive_threshold(self.inactive_threshold)
            .batched_catch_up(self.batched_catch_up)
    }
}

impl From<&str> for KvViewOptions {
    fn from(bucket: &str) -> Self {
        Self::new(bucket.to_owned())
    }
}

impl From<String> for KvViewOptions {
    fn from(bucket: String) -> Self {
        Self::new(bucket)
    }
}
