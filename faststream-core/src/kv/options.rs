//! `KvWatch`: which bucket a subscriber watches and how.

use std::borrow::Cow;

/// Settings of a `kv_watch` subscriber: the bucket, and how to treat it.
///
/// `#[subscriber("key", kv_watch = "bucket")]` is shorthand for
/// `kv_watch = KvWatch::new("bucket")`.
///
/// ```
/// use faststream_core::KvWatch;
///
/// // Use the bucket only if it already exists; never create it.
/// let watch = KvWatch::new("settings").declare(false);
/// assert_eq!(watch.bucket(), "settings");
/// assert!(!watch.declares());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWatch {
    bucket: Cow<'static, str>,
    declare: bool,
}

impl KvWatch {
    /// Watches `bucket`, creating it with the default configuration if it does not exist.
    pub fn new(bucket: impl Into<Cow<'static, str>>) -> Self {
        Self {
            bucket: bucket.into(),
            declare: true,
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

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether start-up creates the bucket when it is missing.
    pub fn declares(&self) -> bool {
        self.declare
    }

    /// Checks the settings without contacting the server.
    pub(crate) fn validate(&self) -> Result<(), faststream_names::NameError> {
        faststream_names::validate_bucket(&self.bucket)
    }
}

impl From<&'static str> for KvWatch {
    fn from(bucket: &'static str) -> Self {
        Self::new(bucket)
    }
}
