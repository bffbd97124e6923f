//! The kinds of error the crate's [`Error`] carries as its source, and the
//! errors of handlers and extractors. Every error type sits at the bottom of the module graph,
//! so that any layer can return them without importing a layer above it.
//!
//! As in async-nats, each error names what failed and keeps what caused it as its
//! [`source`](std::error::Error::source) rather than as text: `{:#}` on an `anyhow::Error` (or
//! `main` returning one) prints the whole chain, and a caller can match the kind and downcast
//! the cause. `Display` never repeats the source, so chains do not print a cause twice.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod app_error;
mod nats;
mod object;

pub use nats::NatsError;
pub use object::{DeclareObjectStoreError, ObjectError, ObjectReadError, SharedError};

// `Error` and `Result` are exported at the crate root, and only there.
pub(crate) use app_error::is_certificate_error;
pub(crate) use app_error::{Error, Result};

/// A boxed error from below this crate (async-nats, serde, a user's code).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The step of declaring or looking up a bucket that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareBucketError {
    /// Looking up the bucket's stream failed (other than "not found").
    #[error("looking up its stream failed")]
    Lookup(#[source] async_nats::jetstream::context::GetStreamError),
    /// Creating the bucket's stream failed.
    #[error("creating its stream failed")]
    Create(#[source] async_nats::jetstream::context::CreateStreamError),
    /// Updating an existing bucket's stream to allow atomic writes
    /// ([`BucketConfig::allow_atomic`](crate::kv::BucketConfig::allow_atomic)) failed.
    #[error("allowing atomic writes on its stream failed")]
    AllowAtomic(#[source] async_nats::jetstream::context::UpdateStreamError),
    /// A stream of the bucket's name exists but is not a Key-Value bucket.
    #[error("stream `{stream}` exists but is not a Key-Value bucket")]
    NotKeyValue {
        /// The stream's name.
        stream: String,
    },
}

/// Why a key operation with a TTL was refused before any request; the
/// [`source`](std::error::Error::source) of an [`Error::KeyValue`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// The bucket's stream does not allow per-message TTLs.
    #[error(
        "the bucket does not allow per-key TTLs: declare it with \
         `BucketConfig::limit_markers`"
    )]
    NotAllowed,
    /// The TTL is under a second: NATS counts TTLs in whole seconds, and refuses zero.
    #[error("the TTL must be at least 1s, got {ttl:?}")]
    TooShort {
        /// The TTL asked for.
        ttl: Duration,
    },
}

/// Why an atomic commit ([`KvBatch::commit`](crate::kv::KvBatch::commit)) was refused; the
/// [`source`](std::error::Error::source) of an [`Error::AtomicWrite`]. All but `Refused`,
/// `Send` and `Unconfirmed` are found before anything is sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtomicWriteError {
    /// The commit has no write.
    #[error("the commit has no write")]
    Empty,
    /// More writes than the server takes in one commit.
    #[error("{writes} writes, over the {limit} a commit may have")]
    TooLarge {
        /// The writes asked for.
        writes: usize,
        /// The most a commit may have ([`MAX_ATOMIC_WRITES`](crate::kv::MAX_ATOMIC_WRITES), or
        /// the server's own limit if it said so).
        limit: usize,
    },
    /// A write carrying an expected revision (`create`, `update`) follows another write of the
    /// same key in the commit: the server checks expectations against the bucket as it was
    /// before the commit, so only a key's first write in a commit may carry one.
    #[error(
        "`{key}` is written more than once and a later write expects a revision: only a key's \
         first write in a commit may be a `create` or an `update`"
    )]
    SecondExpectation {
        /// The key.
        key: String,
    },
    /// The bucket's stream does not allow atomic batches.
    #[error(
        "the bucket does not allow atomic writes: declare it with \
         `BucketConfig::allow_atomic(true)` (its stream's `allow_atomic`)"
    )]
    NotAllowed,
    /// The server refused the commit for another reason than a key's revision (too many
    /// commits in flight on the stream or server, a value too large, ...).
    #[error("the server refused it")]
    Refused(#[source] async_nats::jetstream::Error),
    /// Sending the commit's messages failed; the server abandons a partial batch.
    #[error("sending its messages failed")]
    Publish(#[source] BoxError),
    /// No answer (or an unreadable one) to the commit's last message within the request timeout:
    /// the commit may or may not have been applied (whole, if at all). Read the keys to know.
    #[error(
        "no valid acknowledgement of the commit within {waited:?}: it may or may not be applied"
    )]
    Unconfirmed {
        /// How long it waited.
        waited: Duration,
        /// What came instead of an acknowledgement, if anything.
        #[source]
        source: Option<BoxError>,
    },
}

/// Why [`KeyValue::write_back`](crate::KeyValue::write_back) refused a change before any
/// request; the [`source`](std::error::Error::source) of an [`Error::KeyValue`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteBackError {
    /// The change is of another bucket than the handle's.
    #[error("the change is of bucket `{bucket}`, not of this handle's")]
    OtherBucket {
        /// The change's bucket.
        bucket: String,
    },
}

/// The step of starting a watch that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Subscribing to the watch's delivery inbox failed.
    #[error("subscribing to the watch's inbox failed")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The server did not create the watch's consumer.
    #[error("creating the watch's consumer failed")]
    CreateConsumer(#[source] async_nats::jetstream::stream::ConsumerError),
    /// Looking up the bucket's stream (to check it is still the one watched) failed.
    #[error("looking up the bucket's stream failed")]
    StreamInfo(#[source] async_nats::jetstream::context::GetStreamError),
    /// The bucket's stream does not exist (deleted, or not created yet).
    #[error("the bucket's stream `{stream}` does not exist")]
    BucketMissing {
        /// The stream's name.
        stream: String,
    },
    /// The connection stayed down; no request was sent.
    #[error("not connected to NATS for {waited:?}")]
    Disconnected {
        /// How long the watch waited for the connection.
        waited: std::time::Duration,
    },
    /// The connection closed for good before a view had caught up with its bucket.
    #[error("the NATS connection closed before the view caught up")]
    ClosedBeforeCaughtUp,
    /// The thread that keeps a view's map could not be started.
    #[error("could not start the view's thread")]
    ViewThread(#[source] std::io::Error),
}

/// The step of setting up, joining, reading or deleting a consumer group that failed; the
/// [`source`](std::error::Error::source) of an [`Error::Group`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The group was created with other settings than this member's. Each difference names the
    /// setting, the group's value and this member's: delete the group
    /// ([`KvGroup::delete`](crate::kv::group::KvGroup::delete)) to start it afresh with new ones.
    #[error("it was created with other settings than this member's: {}", differences.join("; "))]
    SettingsDiffer {
        /// One sentence per setting that differs.
        differences: Vec<String>,
    },
    /// A stream of the group's name exists but was not made for this group.
    #[error("stream `{stream}` exists but is not this group's copy of the bucket")]
    NotAGroup {
        /// The stream's name.
        stream: String,
    },
    /// The group does not exist (looked up, not created).
    #[error("it does not exist (its stream `{stream}` was not found)")]
    NotFound {
        /// The group's stream.
        stream: String,
    },
    /// A request about one of the group's streams failed.
    #[error("could not {operation} stream `{stream}`")]
    Stream {
        /// `look up`, `create`, `delete`, `read`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// A request about one of the group's partition consumers failed.
    #[error("could not {operation} the consumer of partition {partition}")]
    Consumer {
        /// `create`, `read`, `unpin`.
        operation: &'static str,
        /// The partition.
        partition: u16,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// The members bucket could not be created or read.
    #[error("could not {operation} the members bucket `{bucket}`")]
    Members {
        /// `create`, `read`, `join`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },
    /// A dead letter could not be read, replayed or discarded.
    #[error("could not {operation} dead letter {sequence}")]
    DeadLetter {
        /// `replay`, `discard`, `read`.
        operation: &'static str,
        /// Its sequence in the dead-letter stream.
        sequence: u64,
        /// What failed.
        #[source]
        source: BoxError,
    },
}

/// Why a handler or hook call did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// An argument could not be extracted; the function was not called.
    #[error("an argument could not be extracted")]
    Rejected(#[source] Rejection),
    /// The function returned an error.
    #[error("it returned an error")]
    Failed(#[source] BoxError),
    /// The function (or one of its extractors) panicked.
    #[error("it panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// Why an argument could not be extracted from a message. The handler is not called; the
/// rejection is logged (at error level, or at debug level for a [`skip`](Self::skip)) with the
/// subscriber, bucket, key and revision, and the watch goes on.
#[derive(Debug, Clone)]
pub struct Rejection {
    reason: String,
    skip: bool,
    /// The handler argument that rejected the message, set by the handler call.
    argument: Option<RejectedArgument>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Which argument of a handler rejected a message: what the log line of a rejection names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RejectedArgument {
    /// Its position in the handler's signature, from 1.
    pub(crate) position: usize,
    /// Its type, as `std::any::type_name` spells it.
    pub(crate) type_name: &'static str,
}

impl Rejection {
    /// A failure to decode, with the reason to log as an error.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self {
            reason: reason.to_string(),
            skip: false,
            argument: None,
            source: None,
        }
    }

    /// A failure to decode because of `source` (a serde error, say), kept as the
    /// rejection's [`source`](std::error::Error::source).
    pub fn caused_by(
        reason: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            source: Some(Arc::new(source)),
            ..Self::new(reason)
        }
    }

    /// Not an error: this message is not for this handler (for example a `DEL` for a
    /// `Json<T>` argument). Logged at debug level.
    pub fn skip(reason: impl fmt::Display) -> Self {
        Self {
            skip: true,
            ..Self::new(reason)
        }
    }

    /// Whether this is a [`skip`](Self::skip).
    pub fn is_skip(&self) -> bool {
        self.skip
    }

    /// The rejection of the handler's argument at `position` (from 1), of type `type_name`.
    pub(crate) fn of_argument(self, position: usize, type_name: &'static str) -> Self {
        Self {
            argument: Some(RejectedArgument {
                position,
                type_name,
            }),
            ..self
        }
    }

    /// The handler argument that rejected the message, once the handler call has set it.
    pub(crate) fn argument(&self) -> Option<RejectedArgument> {
        self.argument
    }
}

impl PartialEq for Rejection {
    /// Rejections are equal when they say the same; causes are compared by their text.
    fn eq(&self, other: &Self) -> bool {
        let cause = |rejection: &Self| rejection.source.as_ref().map(ToString::to_string);
        self.reason == other.reason
            && self.skip == other.skip
            && self.argument == other.argument
            && cause(self) == cause(other)
    }
}

impl Eq for Rejection {}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// An error and its causes on one line, as log fields want them (`{:#}` of an `anyhow::Error`
/// does the same for an owned error). async-nats's errors print their cause in their own text
/// as well, so a cause already shown is not repeated.
///
/// ```
/// use faststream_core::error::chain;
///
/// let error = faststream_core::KvWatch::new("bad.name").validate().unwrap_err();
/// assert!(chain(&error).starts_with("invalid watch of bucket `bad.name`"));
/// ```
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
