//! The one error type a user meets from `App::run` and `NatsBroker`.

use std::time::Duration;

/// What went wrong, named precisely enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No NATS server answered at the URL within the connect timeout.
    #[error(
        "could not connect to NATS at {url} ({attempts} attempt(s) over {elapsed:.1?}): {reason}"
    )]
    Connect {
        /// The server URL, credentials removed.
        url: String,
        /// How many connection attempts were made.
        attempts: u32,
        /// How long the attempts took.
        elapsed: Duration,
        /// The last attempt's error.
        reason: String,
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
    InvalidName(#[from] faststream_rules::NameError),

    /// A bucket configuration value is out of range; no request was made.
    #[error("invalid configuration for bucket `{bucket}`: {reason}")]
    InvalidBucketConfig {
        /// The bucket.
        bucket: String,
        /// Which value and why.
        reason: String,
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
    #[error("could not declare bucket `{bucket}`: {reason}")]
    DeclareBucket {
        /// The bucket.
        bucket: String,
        /// The server's (or client's) reason.
        reason: String,
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

    /// A lifecycle hook returned an error or panicked.
    #[error("{stage} hook `{hook}` failed: {reason}")]
    Hook {
        /// `on_startup`, `after_startup`, `on_shutdown` or `after_shutdown`.
        stage: &'static str,
        /// The hook's path, e.g. `my_service::setup`.
        hook: String,
        /// The hook's error, with its causes.
        reason: String,
    },

    /// A key operation failed: an invalid key (no request made) or the server's answer.
    #[error("could not {operation} `{key}` in bucket `{bucket}`: {source}")]
    KeyValue {
        /// The bucket.
        bucket: String,
        /// `get`, `put`, `create`, `update`, `delete`, `purge`, ...
        operation: &'static str,
        /// The key.
        key: String,
        /// The reason: a `faststream_rules::NameError` for an invalid key, else the async-nats
        /// error (downcast it to, e.g., `async_nats::jetstream::kv::CreateError` for its kind).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A watch could not be started.
    #[error("{watcher} could not watch `{key}` in bucket `{bucket}`: {reason}")]
    Watch {
        /// Who was watching: ``subscriber `my_service::on_change` `` or `kv_watch`.
        watcher: String,
        /// The bucket.
        bucket: String,
        /// The watched pattern.
        key: String,
        /// The server's (or client's) reason.
        reason: String,
    },

    /// Listening for the shutdown signals failed.
    #[error("could not listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
