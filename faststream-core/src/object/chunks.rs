//! Where a reader's chunks come from: nothing (an empty object), one direct get (a one-chunk
//! object), or an ordered pull consumer on the version's chunk subject, whose batches bound how
//! much the server sends ahead of the reader.
//!
//! async-nats's own `get` uses an ordered push consumer, whose flow-control window lets the
//! server send tens of megabytes ahead of a slow reader; a pull consumer asks for at most
//! [`READ_WINDOW`] bytes' worth of chunks at a time (and the client asks again at half), so a
//! reader holds at most about one and a half windows, whatever the object's size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::object_store::ObjectInfo;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::error::ObjectError;
use crate::object::config::DeclaredObjectStore;
use crate::object::meta::{chunk_subject, read_meta};
use crate::object::reader::Verifier;

/// How many bytes of chunks one pull request asks for (rounded to whole chunks, at least two):
/// enough to keep the data flowing on a fast link, small enough to bound a reader's memory.
pub(crate) const READ_WINDOW: usize = 4 << 20;

/// The most chunks one pull request asks for, however small they are.
const MAX_BATCH: usize = 256;

/// How long a read waits for the next chunk before asking the server whether the chunks are
/// still there (a replaced version's chunks are purged, and then no more arrive).
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Pause after the consumer reports an error, before waiting for it again.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The chunks of one object version.
pub(crate) enum ChunkSource {
    /// No chunks: only the check at the end.
    Empty,
    /// The only chunk, fetched when the reader was opened.
    Single(Option<Bytes>),
    /// Several chunks, through a consumer.
    Consumer(Box<ChunkConsumer>),
}

impl ChunkSource {
    /// Opens the chunks of the version `info` describes, in `store`. A version whose chunks are
    /// gone is [`ObjectError::Replaced`] (or a chunk-count mismatch if its info is still the
    /// current one).
    pub(crate) async fn open(
        store: &Arc<DeclaredObjectStore>,
        info: &ObjectInfo,
        read_timeout: Duration,
    ) -> Result<Self, ObjectError> {
        match info.chunks {
            0 => Ok(Self::Empty),
            1 => Ok(Self::Single(Some(fetch_single(store, info).await?))),
            _ => Ok(Self::Consumer(Box::new(
                ChunkConsumer::open(store, info, read_timeout).await?,
            ))),
        }
    }

    /// The next chunk, checked by `verifier`; the last one only once the whole object is
    /// verified. `None` after it.
    pub(crate) async fn next_chunk(
        &mut self,
        verifier: &mut Verifier,
    ) -> Result<Option<Bytes>, ObjectError> {
        match self {
            Self::Empty => {
                verifier.finish()?;
                Ok(None)
            }
            Self::Single(chunk) => match chunk.take() {
                Some(chunk) => {
                    verifier.add(&chunk)?;
                    verifier.finish()?;
                    Ok(Some(chunk))
                }
                None => Ok(None),
            },
            Self::Consumer(consumer) => consumer.next_chunk(verifier).await,
        }
    }
}

/// The one chunk of a one-chunk version, with a single request.
async fn fetch_single(
    store: &Arc<DeclaredObjectStore>,
    info: &ObjectInfo,
) -> Result<Bytes, ObjectError> {
    let subject = chunk_subject(&store.bucket, &info.nuid);
    let fetched = if store.config().allow_direct {
        match store.stream.direct_get_first_for_subject(subject).await {
            Ok(message) => Some(message.payload),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => None,
            Err(error) => return Err(ObjectError::Read(ObjectError::shared(error))),
        }
    } else {
        match store.stream.get_next_raw_message_by_subject(subject).await {
            Ok(message) => Some(message.payload),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(error) => return Err(ObjectError::Read(ObjectError::shared(error))),
        }
    };
    match fetched {
        Some(chunk) => Ok(chunk),
        None => Err(chunks_gone(store, info, 0).await),
    }
}

/// What it means that the chunks of `info`'s version are gone, `received` of them read: if
/// the object's current info is still this version, the store is corrupted (chunks missing);
/// otherwise the version was replaced or deleted.
async fn chunks_gone(store: &DeclaredObjectStore, info: &ObjectInfo, received: u64) -> ObjectError {
    match read_meta(&store.store, &info.name).await {
        Ok(Some(current)) if current.nuid == info.nuid && !current.deleted => {
            ObjectError::ChunkCountMismatch {
                expected: info.chunks as u64,
                actual: received,
            }
        }
        Ok(_) => ObjectError::Replaced {
            nuid: info.nuid.clone(),
        },
        Err(error) => error,
    }
}

/// The chunks of a version of several chunks, through an ordered pull consumer.
pub(crate) struct ChunkConsumer {
    store: Arc<DeclaredObjectStore>,
    info: ObjectInfo,
    subject: String,
    /// `None` once every chunk arrived (the consumer is then deleted).
    messages: Option<pull::Ordered>,
    consumer: String,
    /// The stream sequence of the last chunk received.
    last_sequence: u64,
    read_timeout: Duration,
}

impl ChunkConsumer {
    async fn open(
        store: &Arc<DeclaredObjectStore>,
        info: &ObjectInfo,
        read_timeout: Duration,
    ) -> Result<Self, ObjectError> {
        let subject = chunk_subject(&store.bucket, &info.nuid);
        let consumer = store
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: DeliverPolicy::All,
                description: Some("faststream object reader".to_owned()),
                max_batch: batch_size(info) as i64,
                ..Default::default()
            })
            .await
            .map_err(|error| ObjectError::Read(ObjectError::shared(error)))?;
        let stored = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let this = |messages| Self {
            store: Arc::clone(store),
            info: info.clone(),
            subject,
            messages,
            consumer: name,
            last_sequence: 0,
            read_timeout,
        };
        if stored != info.chunks as u64 {
            // Dropping it deletes the consumer.
            drop(this(None));
            return Err(if stored == 0 {
                chunks_gone(store, info, 0).await
            } else {
                ObjectError::ChunkCountMismatch {
                    expected: info.chunks as u64,
                    actual: stored,
                }
            });
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|error| ObjectError::Read(ObjectError::shared(error)))?;
        Ok(this(Some(messages)))
    }

    async fn next_chunk(&mut self, verifier: &mut Verifier) -> Result<Option<Bytes>, ObjectError> {
        if verifier.all_read() {
            return Ok(None);
        }
        let message = self.next_message(verifier).await?;
        let (sequence, pending) = {
            let info = message
                .info()
                .map_err(|error| ObjectError::Read(Arc::from(error)))?;
            (info.stream_sequence, info.pending)
        };
        self.last_sequence = sequence;
        let chunk = message.message.payload;
        verifier.add(&chunk)?;
        if verifier.all_read() {
            if pending > 0 {
                return Err(ObjectError::ChunkCountMismatch {
                    expected: verifier.expected_chunks(),
                    actual: verifier.chunks() + pending,
                });
            }
            verifier.finish()?;
            self.messages = None;
            self.delete_consumer();
        } else if pending == 0 {
            return Err(chunks_gone(&self.store, &self.info, verifier.chunks()).await);
        }
        Ok(Some(chunk))
    }

    /// The next chunk's message. While none arrives, asks every [`STALL_CHECK`] whether the
    /// chunks are still there; gives up after the read timeout.
    async fn next_message(
        &mut self,
        verifier: &Verifier,
    ) -> Result<async_nats::jetstream::Message, ObjectError> {
        let started = Instant::now();
        let timed_out = ObjectError::Timeout {
            waited: self.read_timeout,
        };
        loop {
            let left = self.read_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(timed_out);
            }
            let Some(messages) = self.messages.as_mut() else {
                return Err(ObjectError::Read(ObjectError::shared(
                    std::io::Error::other("the chunk consumer was already closed"),
                )));
            };
            match tokio::time::timeout(STALL_CHECK.min(left), messages.next()).await {
                Ok(Some(Ok(message))) => return Ok(message),
                // Pull requests fail while the connection is down: the consumer goes on once it
                // is back, and the read timeout bounds the wait.
                Ok(Some(Err(error))) => {
                    tracing::debug!(
                        bucket = %self.store.bucket,
                        object = %self.info.name,
                        error = %crate::error::chain(&error),
                        "object chunk consumer error"
                    );
                    tokio::time::sleep(ERROR_BACKOFF.min(left)).await;
                }
                Ok(None) => {
                    return Err(ObjectError::Read(ObjectError::shared(
                        std::io::Error::other("the chunk consumer ended"),
                    )))
                }
                Err(_) => {
                    let left = self.read_timeout.saturating_sub(started.elapsed());
                    // Only the fields it needs: `self` holds the consumer, which is not `Sync`.
                    let check = check_stall(
                        &self.store,
                        &self.info,
                        &self.subject,
                        self.last_sequence,
                        verifier,
                    );
                    if let Ok(checked) = tokio::time::timeout(left, check).await {
                        checked?;
                    }
                }
            }
        }
    }

    /// Deletes the consumer in the background (the server would remove it 30 s after its last
    /// pull request expires, itself 30 s after it was made), so that many reads leave no
    /// consumers behind.
    fn delete_consumer(&mut self) {
        if self.consumer.is_empty() {
            return;
        }
        let consumer = std::mem::take(&mut self.consumer);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stream = self.store.stream.clone();
        runtime.spawn(async move {
            if let Err(error) = stream.delete_consumer(&consumer).await {
                tracing::debug!(%consumer, error = %crate::error::chain(&error), "could not delete an object reader's consumer");
            }
        });
    }
}

impl Drop for ChunkConsumer {
    fn drop(&mut self) {
        self.messages = None;
        self.delete_consumer();
    }
}

/// No chunk for a while: fails if the chunks are gone or all were received already (fewer than
/// the object info says); otherwise the wait goes on.
async fn check_stall(
    store: &DeclaredObjectStore,
    info: &ObjectInfo,
    subject: &str,
    last_sequence: u64,
    verifier: &Verifier,
) -> Result<(), ObjectError> {
    match store.stream.get_last_raw_message_by_subject(subject).await {
        Ok(last) if last.sequence > last_sequence => Ok(()),
        Ok(_) => Err(ObjectError::ChunkCountMismatch {
            expected: verifier.expected_chunks(),
            actual: verifier.chunks(),
        }),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
            Err(chunks_gone(store, info, verifier.chunks()).await)
        }
        // The server cannot say now (the connection is down): keep waiting.
        Err(error) => {
            tracing::debug!(
                bucket = %store.bucket,
                object = %info.name,
                error = %crate::error::chain(&error),
                "could not check an object's chunks"
            );
            Ok(())
        }
    }
}

/// Chunks per pull request: [`READ_WINDOW`] bytes' worth, from the larger of the chunk size
/// the object was written with and its average chunk.
fn batch_size(info: &ObjectInfo) -> usize {
    let declared = info
        .options
        .as_ref()
        .and_then(|options| options.max_chunk_size)
        .unwrap_or(0);
    let average = info.size.div_ceil(info.chunks.max(1));
    let chunk = declared.max(average).max(1);
    (READ_WINDOW / chunk).clamp(2, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: usize, chunks: usize, max_chunk_size: Option<usize>) -> ObjectInfo {
        serde_json::from_value(serde_json::json!({
            "name": "o",
            "bucket": "b",
            "nuid": "N",
            "size": size,
            "chunks": chunks,
            "options": { "max_chunk_size": max_chunk_size },
        }))
        .unwrap()
    }

    #[test]
    fn batches_bound_the_bytes_in_flight() {
        // async-nats's default chunk of 128 KiB: 32 chunks, 4 MiB.
        assert_eq!(batch_size(&info(100 << 20, 800, Some(128 << 10))), 32);
        // A chunk size that understates the chunks: the average decides.
        assert_eq!(batch_size(&info(100 << 20, 100, Some(1024))), 4);
        // Huge chunks: still two at a time, so the next is on its way.
        assert_eq!(batch_size(&info(64 << 20, 8, None)), 2);
        // Tiny chunks: at most MAX_BATCH.
        assert_eq!(batch_size(&info(1000, 100, Some(10))), MAX_BATCH);
    }
}
