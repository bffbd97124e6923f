//! Writing an object: its data streamed in chunks to `$O.<bucket>.C.<nuid>` (a few
//! acknowledgements in flight, never the whole object in memory), then its info to
//! `$O.<bucket>.M.<base64url(name)>` with `Nats-Rollup: sub` (which drops the previous info),
//! then the previous version's chunks purged: the layout async-nats and nats.go write, so any
//! client reads what this one wrote.
//!
//! Unlike async-nats's `put`, a chunk is filled to the chunk size whatever sizes the caller's
//! reader returns, the name is checked before any data is sent, and a put that fails part-way
//! purges the chunks it had published.

use std::collections::VecDeque;

use async_nats::jetstream::object_store::{ObjectInfo, ObjectMetadata, ObjectOptions};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{HeaderMap, Subject};
use bytes::{BufMut as _, BytesMut};
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::error::ObjectError;
use crate::object::config::DeclaredObjectStore;
use crate::object::meta::{
    chunk_subject, digest_text, meta_subject, read_meta, validate_object_name,
};

/// The chunk size when the metadata sets none: async-nats's and nats.go's.
pub const DEFAULT_CHUNK_SIZE: usize = 128 * 1024;

/// Chunks published and not yet acknowledged, at most.
const ACKS_IN_FLIGHT: usize = 8;

/// How a put's chunks and info end up.
struct Written {
    size: usize,
    chunks: usize,
    digest: String,
}

/// Writes the object `meta` names with the data of `data`; returns its new info.
pub(crate) async fn put(
    store: &DeclaredObjectStore,
    jetstream: &jetstream::Context,
    meta: ObjectMetadata,
    data: &mut (impl AsyncRead + Unpin),
) -> Result<ObjectInfo, ObjectError> {
    validate_object_name(&meta.name)?;
    let max = jetstream.client().server_info().max_payload;
    let chunk_size = meta.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    if chunk_size == 0 || chunk_size > max {
        return Err(ObjectError::InvalidChunkSize { chunk_size, max });
    }
    let nuid = nuid::next().to_string();
    let subject = chunk_subject(&store.bucket, &nuid);
    let written = match publish_chunks(jetstream, &subject, chunk_size, data).await {
        Ok(written) => written,
        Err(error) => {
            purge_quietly(store, &subject).await;
            return Err(error);
        }
    };
    // Looked up as late as possible: the version this one replaces, whose chunks go.
    let previous = match read_meta(&store.store, &meta.name).await {
        Ok(previous) => previous,
        Err(error) => {
            purge_quietly(store, &subject).await;
            return Err(error);
        }
    };
    let info = ObjectInfo {
        name: meta.name,
        description: meta.description,
        metadata: meta.metadata,
        headers: meta.headers,
        options: Some(ObjectOptions {
            link: None,
            max_chunk_size: Some(chunk_size),
        }),
        bucket: store.bucket.clone(),
        nuid,
        size: written.size,
        chunks: written.chunks,
        modified: Some(time::OffsetDateTime::now_utc()),
        digest: Some(written.digest),
        deleted: false,
    };
    if let Err(error) = publish_info(jetstream, &info).await {
        purge_quietly(store, &subject).await;
        return Err(ObjectError::PublishInfo(error));
    }
    if let Some(previous) = previous
        .filter(|previous| !previous.deleted && previous.chunks > 0 && previous.nuid != info.nuid)
    {
        purge(store, &chunk_subject(&store.bucket, &previous.nuid)).await?;
    }
    Ok(info)
}

/// Publishes `data` in chunks of `chunk_size` to `subject`, a few acknowledgements in flight.
async fn publish_chunks(
    jetstream: &jetstream::Context,
    subject: &str,
    chunk_size: usize,
    data: &mut (impl AsyncRead + Unpin),
) -> Result<Written, ObjectError> {
    let subject = Subject::from(subject);
    let publish_failed = |error| ObjectError::PublishChunks(ObjectError::shared(error));
    let mut hasher = sha2::Sha256::new();
    let mut acks: VecDeque<PublishAckFuture> = VecDeque::with_capacity(ACKS_IN_FLIGHT);
    let (mut size, mut chunks) = (0, 0);
    let mut ended = false;
    while !ended {
        let mut chunk = BytesMut::with_capacity(chunk_size);
        while chunk.len() < chunk_size {
            let room = chunk_size - chunk.len();
            let read = data
                .read_buf(&mut (&mut chunk).limit(room))
                .await
                .map_err(|error| ObjectError::Input(ObjectError::shared(error)))?;
            if read == 0 {
                ended = true;
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        hasher.update(&chunk);
        size += chunk.len();
        chunks += 1;
        let ack = jetstream
            .publish(subject.clone(), chunk.freeze())
            .await
            .map_err(publish_failed)?;
        acks.push_back(ack);
        if acks.len() >= ACKS_IN_FLIGHT {
            if let Some(ack) = acks.pop_front() {
                ack.await.map_err(publish_failed)?;
            }
        }
    }
    for ack in acks {
        ack.await.map_err(publish_failed)?;
    }
    Ok(Written {
        size,
        chunks,
        digest: digest_text(&hasher.finalize()),
    })
}

/// Publishes an object info, replacing the object's previous one (`Nats-Rollup: sub`).
pub(crate) async fn publish_info(
    jetstream: &jetstream::Context,
    info: &ObjectInfo,
) -> Result<(), crate::error::SharedError> {
    let payload = serde_json::to_vec(info).map_err(ObjectError::shared)?;
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    jetstream
        .publish_with_headers(
            meta_subject(&info.bucket, &info.name),
            headers,
            payload.into(),
        )
        .await
        .map_err(ObjectError::shared)?
        .await
        .map_err(ObjectError::shared)?;
    Ok(())
}

/// Purges the chunks on `subject`.
pub(crate) async fn purge(store: &DeclaredObjectStore, subject: &str) -> Result<(), ObjectError> {
    store
        .stream
        .purge()
        .filter(subject)
        .await
        .map(drop)
        .map_err(|error| ObjectError::Purge(ObjectError::shared(error)))
}

/// Purges the chunks of a put that failed; a failure is only logged (the put's own error is
/// what the caller needs).
async fn purge_quietly(store: &DeclaredObjectStore, subject: &str) {
    if let Err(error) = purge(store, subject).await {
        tracing::warn!(
            bucket = %store.bucket,
            %subject,
            error = %crate::error::chain(&error),
            "could not purge the chunks of a failed put"
        );
    }
}
