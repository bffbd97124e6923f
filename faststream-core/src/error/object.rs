//! The errors of object storage: [`ObjectError`] says what went wrong with one object (the
//! [`source`](std::error::Error::source) of an [`Error::Object`](crate::Error::Object)),
//! [`ObjectReadError`] is what an [`ObjectReader`](crate::object::ObjectReader) yields, and
//! [`DeclareObjectStoreError`] the step of declaring a store that failed.

use std::sync::Arc;
use std::time::Duration;

/// A cause kept by an [`ObjectError`]: shared, so that a reader can report the same error again
/// on every later read (it never reports the end of an object it could not verify).
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// What went wrong with one object. A caller matches the kind: [`NotFound`](Self::NotFound),
/// [`Replaced`](Self::Replaced), the mismatches of a corrupted object, [`Timeout`](Self::Timeout),
/// and the failed requests, which keep the client's error as their
/// [`source`](std::error::Error::source).
///
/// ```
/// use faststream_core::error::ObjectError;
/// use faststream_core::Error;
///
/// fn is_gone(error: &Error) -> bool {
///     matches!(
///         error,
///         Error::Object { source: ObjectError::NotFound | ObjectError::Replaced { .. }, .. }
///     )
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object's name is not one a store can hold; no request was made.
    #[error("invalid object name: {problem}")]
    InvalidName {
        /// What is wrong with it.
        problem: String,
    },
    /// The object does not exist, or was deleted.
    #[error("it does not exist (or was deleted)")]
    NotFound,
    /// The version being read was replaced by a newer one or deleted (its chunks were purged)
    /// before all of it was read. [`ObjectStore::get`](crate::ObjectStore::get) reads the
    /// newest version instead when this happens before reading starts.
    #[error("the version being read (nuid {nuid}) was replaced or deleted: its chunks are gone")]
    Replaced {
        /// The version's unique id, as its [`ObjectInfo`](crate::object::ObjectInfo) says.
        nuid: String,
    },
    /// The data read does not have the digest its object info promises: the object is
    /// corrupted. Reported instead of the end of the object.
    #[error("its data has digest {actual}, but its object info says {expected}")]
    DigestMismatch {
        /// The digest in the object info (`SHA-256=<base64url>`).
        expected: String,
        /// The digest of the data read, in the same form.
        actual: String,
    },
    /// The data read is larger or smaller than its object info says.
    #[error("its data is {actual} bytes, but its object info says {expected}")]
    SizeMismatch {
        /// The size in the object info.
        expected: u64,
        /// The bytes read (for data longer than expected, as many as were read when it was
        /// noticed).
        actual: u64,
    },
    /// The server holds more or fewer chunks of the version than its object info says.
    #[error("its data has {actual} chunk(s), but its object info says {expected}")]
    ChunkCountMismatch {
        /// The chunk count in the object info.
        expected: u64,
        /// The chunks the server holds.
        actual: u64,
    },
    /// No data arrived for this long (the server or the connection is down, or too slow).
    #[error("no data arrived for {waited:?}")]
    Timeout {
        /// How long the read waited without progress.
        waited: Duration,
    },
    /// The object is a link to a whole bucket, which has no data of its own to read.
    #[error("it is a link to bucket `{bucket}`, not to an object")]
    BucketLink {
        /// The linked bucket.
        bucket: String,
    },
    /// The object links to another link: links are followed one level only.
    #[error(
        "it links to `{object}` in bucket `{bucket}`, itself a link (links are followed one level)"
    )]
    NestedLink {
        /// The linked bucket.
        bucket: String,
        /// The linked object.
        object: String,
    },
    /// The object info given to [`ObjectStore::get_version`](crate::ObjectStore::get_version)
    /// is of another bucket.
    #[error("its object info is of bucket `{bucket}`")]
    OtherBucket {
        /// The bucket the object info names.
        bucket: String,
    },
    /// The chunk size asked for cannot be published; no request was made.
    #[error("chunk size {chunk_size} is not in 1..={max} (the server's maximum payload)")]
    InvalidChunkSize {
        /// The chunk size asked for.
        chunk_size: usize,
        /// The largest the server accepts.
        max: usize,
    },
    /// Looking up the object's info failed, or the info could not be decoded.
    #[error("looking up its object info failed")]
    Lookup(#[source] SharedError),
    /// Reading its chunks from the server failed.
    #[error("reading its data from the server failed")]
    Read(#[source] SharedError),
    /// Reading the data to store (the caller's `AsyncRead`) failed; the chunks already
    /// published were purged.
    #[error("reading the data to store failed")]
    Input(#[source] SharedError),
    /// Publishing a chunk failed; the chunks already published were purged.
    #[error("publishing its chunks failed")]
    PublishChunks(#[source] SharedError),
    /// Publishing its object info failed; the chunks published were purged.
    #[error("publishing its object info failed")]
    PublishInfo(#[source] SharedError),
    /// Purging chunks failed: for a put, the new version is stored but the chunks of the version
    /// it replaced are left over; for a delete, the object is marked deleted but its chunks are
    /// left over.
    #[error("it is written, but purging the chunks of its previous version failed")]
    Purge(#[source] SharedError),
    /// Following a link to another bucket failed: that bucket's error.
    #[error("following its link failed")]
    Link(#[source] Arc<crate::Error>),
}

impl ObjectError {
    /// Wraps a cause for one of the variants that keep one.
    pub(crate) fn shared(error: impl std::error::Error + Send + Sync + 'static) -> SharedError {
        Arc::new(error)
    }
}

/// Why an [`ObjectReader`](crate::object::ObjectReader) could not go on: the object and bucket,
/// and the [`kind`](Self::kind) of failure (also the [`source`](std::error::Error::source)).
///
/// A reader that failed yields the same error again on every later read: it never reports the
/// end of an object it could not verify. Through `AsyncRead` it is the inner error of the
/// `std::io::Error` (`get_ref()`, or `into_inner()` and `downcast`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not read object `{object}` of bucket `{bucket}`")]
pub struct ObjectReadError {
    bucket: String,
    object: String,
    #[source]
    kind: ObjectError,
}

impl ObjectReadError {
    pub(crate) fn new(
        bucket: impl Into<String>,
        object: impl Into<String>,
        kind: ObjectError,
    ) -> Self {
        Self {
            bucket: bucket.into(),
            object: object.into(),
            kind,
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object's name.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// What went wrong.
    pub fn kind(&self) -> &ObjectError {
        &self.kind
    }

    /// Finds the `ObjectReadError` inside an error of the reader's `AsyncRead` side.
    ///
    /// ```
    /// # fn check(error: std::io::Error) {
    /// use faststream_core::error::{ObjectError, ObjectReadError};
    ///
    /// if let Some(failure) = ObjectReadError::from_io(&error) {
    ///     if let ObjectError::DigestMismatch { expected, actual } = failure.kind() {
    ///         eprintln!("{} is corrupted: {actual} != {expected}", failure.object());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn from_io(error: &std::io::Error) -> Option<&Self> {
        error.get_ref()?.downcast_ref::<Self>()
    }
}

impl From<ObjectReadError> for std::io::Error {
    /// An `io::Error` whose inner error is `error`, of a kind that says what happened:
    /// `TimedOut`, `InvalidData` for a corrupted object, `NotFound` for one gone, else `Other`.
    fn from(error: ObjectReadError) -> Self {
        let kind = match error.kind {
            ObjectError::Timeout { .. } => std::io::ErrorKind::TimedOut,
            ObjectError::DigestMismatch { .. }
            | ObjectError::SizeMismatch { .. }
            | ObjectError::ChunkCountMismatch { .. } => std::io::ErrorKind::InvalidData,
            ObjectError::NotFound | ObjectError::Replaced { .. } => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}

impl From<ObjectReadError> for crate::Error {
    /// [`Error::Object`](crate::Error::Object) with the operation `read`.
    fn from(error: ObjectReadError) -> Self {
        crate::Error::Object {
            bucket: error.bucket,
            object: error.object,
            operation: "read",
            source: error.kind,
        }
    }
}

/// The step of declaring or looking up an object store that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareObjectStoreError {
    /// Looking up the store's stream failed (other than "not found").
    #[error("looking up its stream failed")]
    Lookup(#[source] async_nats::jetstream::context::GetStreamError),
    /// Creating the store's stream failed.
    #[error("creating its stream failed")]
    Create(#[source] async_nats::jetstream::context::CreateStreamError),
    /// A stream of the store's name exists but is not an object store.
    #[error("stream `{stream}` exists but is not an object store (its subjects are {subjects:?})")]
    NotObjectStore {
        /// The stream's name.
        stream: String,
        /// The stream's subjects.
        subjects: Vec<String>,
    },
    /// async-nats could not open the store.
    #[error("opening it failed")]
    Open(#[source] async_nats::jetstream::context::ObjectStoreError),
}
