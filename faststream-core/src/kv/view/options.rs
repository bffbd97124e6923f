//! `KvViewOptions`: which bucket a view shows, and how its watch runs.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::Result;
use crate::kv::options::{KvWatch, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_WATCH_TIMEOUT};

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
///     .inactive_threshold(Duration::from_secs(60));
/// assert_eq!(options.bucket(), "flags");
/// assert!(!options.declares());
/// assert!(options.validate().is_ok());
/// assert_eq!(KvViewOptions::from("flags"), KvViewOptions::new("flags"));
/// assert!(KvViewOptions::new("no spaces").validate().is_err());
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
}

impl KvViewOptions {
    /// Views `bucket`, creating it with the default configuration if it does not exist.
    pub fn new(bucket: impl Into<Cow<'static, str>>) -> Self {
        Self {
            bucket: bucket.into(),
            declare: true,
            timeout: DEFAULT_WATCH_TIMEOUT,
            inactive_threshold: DEFAULT_INACTIVE_THRESHOLD,
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
        self.to_watch().validate()
    }

    /// The settings of the view's watch: these, and every other option at its default.
    pub(crate) fn to_watch(&self) -> KvWatch {
        KvWatch::new(self.bucket.clone())
            .declare(self.declare)
            .timeout(self.timeout)
            .inactive_threshold(self.inactive_threshold)
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
