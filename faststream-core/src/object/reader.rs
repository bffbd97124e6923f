//! [`ObjectReader`]: an object's data, streamed and verified, as a `Stream` of chunks and as
//! `AsyncRead`.
//!
//! The digest can only be checked once all the data is read, so the reader holds back the
//! object's last chunk until the size, the chunk count and the digest are verified: the end of
//! the stream (or a read returning 0) always means "the whole object, verified", and a
//! corrupted object ends with an error instead, which the reader then repeats on every later
//! read.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::object_store::ObjectInfo;
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _};
use sha2::Digest as _;

use crate::error::{ObjectError, ObjectReadError};
use crate::object::chunks::ChunkSource;
use crate::object::meta::{digest_matches, digest_text};

/// The most [`ObjectReader::read_all`] reserves up front: an object info's size is only a
/// claim until the data is read.
const MAX_PREALLOCATION: usize = 64 << 20;

/// The data of one object version, streamed and verified; what
/// [`ObjectStore::get`](crate::ObjectStore::get) and
/// [`get_version`](crate::ObjectStore::get_version) return.
///
/// Read it as a [`Stream`] of chunks (`Bytes`, as stored, without copying) or through
/// [`tokio::io::AsyncRead`] (`tokio::io::copy` to a file, say); both may be mixed. Memory stays
/// bounded whatever the object's size: the server sends a few megabytes ahead of the reader.
///
/// - The end of the stream (`None`, or a read returning 0) always means the whole object was
///   read and matched its size, chunk count and digest: the last chunk is held back until then.
/// - A mismatch ([`ObjectError::DigestMismatch`], [`SizeMismatch`](ObjectError::SizeMismatch),
///   [`ChunkCountMismatch`](ObjectError::ChunkCountMismatch)) is an error instead of the end.
/// - If the version is replaced or deleted while it is read (its chunks are purged), the read
///   fails with [`ObjectError::Replaced`] within about a second of the data stopping.
/// - A read that gets no data for the store's
///   [`read_timeout`](crate::ObjectStore::with_read_timeout) fails with
///   [`ObjectError::Timeout`].
///
/// After an error the reader yields that error again on every later read, never the end. Through
/// `AsyncRead` the error is a `std::io::Error` whose inner error is the [`ObjectReadError`]
/// ([`ObjectReadError::from_io`]).
///
/// ```no_run
/// use futures_util::StreamExt as _;
///
/// # async fn demo(store: faststream_core::ObjectStore) -> anyhow::Result<()> {
/// let mut reader = store.get("video.mp4").await?;
/// let mut file = tokio::fs::File::create("/tmp/video.mp4").await?;
/// tokio::io::copy(&mut reader, &mut file).await?; // fails on a corrupted object
///
/// let mut chunks = store.get("video.mp4").await?;
/// while let Some(chunk) = chunks.next().await {
///     let chunk = chunk?; // the last one arrives only once the digest matched
///     println!("{} bytes", chunk.len());
/// }
/// # Ok(())
/// # }
/// ```
pub struct ObjectReader {
    info: ObjectInfo,
    chunks: BoxStream<'static, Result<Bytes, ObjectReadError>>,
    /// What `AsyncRead` has not handed out yet of the current chunk.
    leftover: Bytes,
}

impl ObjectReader {
    pub(crate) fn new(info: ObjectInfo, source: ChunkSource) -> Self {
        let state = ReadState {
            bucket: info.bucket.clone(),
            object: info.name.clone(),
            verifier: Verifier::new(&info),
            source,
            finished: false,
            failed: None,
        };
        let chunks = futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed();
        Self {
            info,
            chunks,
            leftover: Bytes::new(),
        }
    }

    /// The info of the version being read (for a link, of the object it links to).
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// Reads the rest of the object into memory, verified.
    pub async fn read_all(mut self) -> Result<Bytes, ObjectReadError> {
        let capacity = self.info.size.min(MAX_PREALLOCATION);
        let mut data = BytesMut::with_capacity(capacity);
        data.extend_from_slice(&std::mem::take(&mut self.leftover));
        while let Some(chunk) = self.chunks.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data.freeze())
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("bucket", &self.info.bucket)
            .field("object", &self.info.name)
            .field("nuid", &self.info.nuid)
            .field("size", &self.info.size)
            .finish_non_exhaustive()
    }
}

impl Stream for ObjectReader {
    type Item = Result<Bytes, ObjectReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.leftover.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut self.leftover))));
        }
        self.chunks.poll_next_unpin(cx)
    }
}

impl tokio::io::AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.leftover.is_empty() {
            match self.chunks.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.leftover = chunk,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                // The end: the object is whole and verified.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let len = self.leftover.len().min(buf.remaining());
        buf.put_slice(&self.leftover.split_to(len));
        Poll::Ready(Ok(()))
    }
}

/// What the chunk stream carries from one item to the next.
struct ReadState {
    bucket: String,
    object: String,
    verifier: Verifier,
    source: ChunkSource,
    finished: bool,
    /// The error reported, reported again on every later read.
    failed: Option<ObjectReadError>,
}

impl ReadState {
    async fn next(&mut self) -> Option<Result<Bytes, ObjectReadError>> {
        if let Some(error) = &self.failed {
            return Some(Err(error.clone()));
        }
        if self.finished {
            return None;
        }
        match self.source.next_chunk(&mut self.verifier).await {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(kind) => {
                let error = ObjectReadError::new(&self.bucket, &self.object, kind);
                self.failed = Some(error.clone());
                Some(Err(error))
            }
        }
    }
}

/// Checks the data read against the object info: size as it arrives, the chunk count and the
/// digest at the end.
pub(crate) struct Verifier {
    expected_size: u64,
    expected_chunks: u64,
    expected_digest: Option<String>,
    hasher: sha2::Sha256,
    size: u64,
    chunks: u64,
}

impl Verifier {
    pub(crate) fn new(info: &ObjectInfo) -> Self {
        Self {
            expected_size: info.size as u64,
            expected_chunks: info.chunks as u64,
            expected_digest: info.digest.clone(),
            hasher: sha2::Sha256::new(),
            size: 0,
            chunks: 0,
        }
    }

    /// Chunks the object info says the version has.
    pub(crate) fn expected_chunks(&self) -> u64 {
        self.expected_chunks
    }

    /// Chunks read so far.
    pub(crate) fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Whether every chunk the object info promises was read.
    pub(crate) fn all_read(&self) -> bool {
        self.chunks >= self.expected_chunks
    }

    /// Takes in one chunk; more data than the object info's size is an error at once.
    pub(crate) fn add(&mut self, chunk: &[u8]) -> Result<(), ObjectError> {
        self.chunks += 1;
        self.size += chunk.len() as u64;
        if self.size > self.expected_size {
            return Err(ObjectError::SizeMismatch {
                expected: self.expected_size,
                actual: self.size,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Checks the whole object: size, chunk count, digest. An object info without a digest
    /// (written by a client that sets none) is checked for size and chunk count only.
    pub(crate) fn finish(&mut self) -> Result<(), ObjectError> {
        if self.size != self.expected_size {
            return Err(ObjectError::SizeMismatch {
                expected: self.expected_size,
                actual: self.size,
            });
        }
        if self.chunks != self.expected_chunks {
            return Err(ObjectError::ChunkCountMismatch {
                expected: self.expected_chunks,
                actual: self.chunks,
            });
        }
        let actual = self.hasher.finalize_reset();
        match &self.expected_digest {
            Some(expected) if !digest_matches(expected, &actual) => {
                Err(ObjectError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest_text(&actual),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data: &[&[u8]], digest_of: &[u8]) -> ObjectInfo {
        serde_json::from_value(serde_json::json!({
            "name": "o",
            "bucket": "b",
            "nuid": "N",
            "size": data.iter().map(|chunk| chunk.len()).sum::<usize>(),
            "chunks": data.len(),
            "digest": digest_text(&sha2::Sha256::digest(digest_of)),
        }))
        .unwrap()
    }

    #[test]
    fn verifies_size_chunks_and_digest() {
        let whole = info(&[b"ab", b"c"], b"abc");
        let mut verifier = Verifier::new(&whole);
        verifier.add(b"ab").unwrap();
        verifier.add(b"c").unwrap();
        assert!(verifier.all_read());
        verifier.finish().unwrap();

        let corrupted = info(&[b"ab", b"c"], b"abd");
        let mut verifier = Verifier::new(&corrupted);
        verifier.add(b"ab").unwrap();
        verifier.add(b"c").unwrap();
        assert!(matches!(
            verifier.finish(),
            Err(ObjectError::DigestMismatch { .. })
        ));

        let mut verifier = Verifier::new(&whole);
        verifier.add(b"ab").unwrap();
        assert!(matches!(
            verifier.add(b"cd"),
            Err(ObjectError::SizeMismatch {
                expected: 3,
                actual: 4
            })
        ));

        let mut verifier = Verifier::new(&whole);
        verifier.add(b"abc").unwrap();
        assert!(matches!(
            verifier.finish(),
            Err(ObjectError::ChunkCountMismatch {
                expected: 2,
                actual: 1
            })
        ));
    }

    /// Readers move between tasks; stores are shared between them.
    #[test]
    fn readers_are_send_and_stores_send_and_sync() {
        fn send<T: Send + 'static>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<ObjectReader>();
        send_sync::<crate::ObjectStore>();
        send_sync::<ObjectReadError>();
    }

    #[test]
    fn empty_object() {
        let mut verifier = Verifier::new(&info(&[], b""));
        assert!(verifier.all_read());
        verifier.finish().unwrap();
    }
}
