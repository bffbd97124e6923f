//! Corrupted objects, written as raw messages: the reader reports the mismatch instead of the
//! end, never hands out the last chunk of data it could not verify, and never ends afterwards.

use anyhow::Context as _;
use async_nats::jetstream;
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use faststream_core::error::{ObjectError, ObjectReadError};
use faststream_core::ObjectStore;
use futures_util::StreamExt as _;
use tokio::io::AsyncReadExt as _;

use super::object_error;
use crate::common::{connected_broker, jetstream, on_each_server};

/// What a raw object's info claims about its chunks.
struct Claim<'a> {
    size: usize,
    chunks: usize,
    digest: &'a str,
}

/// Publishes `chunks` and an info claiming `claim`, as a broken or malicious client could.
async fn write_raw(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    chunks: &[&[u8]],
    claim: Claim<'_>,
) -> anyhow::Result<()> {
    let nuid = format!("RAW{}", name.replace(['-', '.'], ""));
    for chunk in chunks {
        js.publish(format!("$O.{bucket}.C.{nuid}"), chunk.to_vec().into())
            .await?
            .await?;
    }
    let info = serde_json::json!({
        "name": name,
        "bucket": bucket,
        "nuid": nuid,
        "size": claim.size,
        "chunks": claim.chunks,
        "digest": claim.digest,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    js.publish_with_headers(
        format!("$O.{bucket}.M.{}", URL_SAFE.encode(name)),
        headers,
        serde_json::to_vec(&info)?.into(),
    )
    .await?
    .await?;
    Ok(())
}

/// Reads `name` as a stream: the chunks handed out before the error, and the error. Fails if
/// the stream ends.
async fn read_until_error(
    store: &ObjectStore,
    name: &str,
) -> anyhow::Result<(Vec<u8>, ObjectReadError)> {
    let mut reader = store.get(name).await?;
    let mut read = Vec::new();
    let error = loop {
        match reader.next().await {
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            Some(Err(error)) => break error,
            None => anyhow::bail!("{name}: the reader ended after {} bytes", read.len()),
        }
    };
    // Never the end afterwards, as a stream or through AsyncRead.
    for _ in 0..3 {
        let again = reader.next().await.context("ended after an error")?;
        assert!(again.is_err(), "{name}: data after an error");
    }
    let mut rest = Vec::new();
    let io_error = reader
        .read_to_end(&mut rest)
        .await
        .err()
        .context("read_to_end ended after an error")?;
    assert!(rest.is_empty());
    assert!(
        ObjectReadError::from_io(&io_error).is_some(),
        "{io_error:?}"
    );
    Ok((read, error))
}

#[tokio::test]
async fn a_digest_mismatch_is_reported_instead_of_the_last_chunk() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("corrupt").await?;
        let js = jetstream(&server).await?;
        let wrong = format!("SHA-256={}", URL_SAFE.encode([0u8; 32]));
        let claim = |size, chunks| Claim {
            size,
            chunks,
            digest: &wrong,
        };

        // Three chunks: the first two arrive, the last is replaced by the error.
        write_raw(
            &js,
            "corrupt",
            "three",
            &[b"aaaa", b"bbbb", b"cc"],
            claim(10, 3),
        )
        .await?;
        let (read, error) = read_until_error(&store, "three").await?;
        assert_eq!(read, b"aaaabbbb");
        let ObjectError::DigestMismatch { expected, actual } = error.kind() else {
            anyhow::bail!("{error:?}");
        };
        assert_eq!(expected, &wrong);
        assert!(
            actual.starts_with("SHA-256=") && actual != &wrong,
            "{actual}"
        );
        assert_eq!((error.bucket(), error.object()), ("corrupt", "three"));
        assert!(
            faststream_core::error::chain(&error).starts_with(
                "could not read object `three` of bucket `corrupt`: its data has digest SHA-256="
            ),
            "{error}"
        );
        let io_error = store
            .get("three")
            .await?
            .read_to_end(&mut Vec::new())
            .await
            .err()
            .context("AsyncRead")?;
        assert_eq!(io_error.kind(), std::io::ErrorKind::InvalidData);

        // One chunk, and none: nothing at all is handed out.
        write_raw(&js, "corrupt", "one", &[b"only"], claim(4, 1)).await?;
        let (read, error) = read_until_error(&store, "one").await?;
        assert!(read.is_empty());
        assert!(
            matches!(error.kind(), ObjectError::DigestMismatch { .. }),
            "{error:?}"
        );
        write_raw(&js, "corrupt", "none", &[], claim(0, 0)).await?;
        let (_, error) = read_until_error(&store, "none").await?;
        assert!(
            matches!(error.kind(), ObjectError::DigestMismatch { .. }),
            "{error:?}"
        );

        // get_bytes fails the same way.
        let error = store.get_bytes("three").await.err().context("get_bytes")?;
        assert!(
            matches!(
                object_error(&error),
                Some(ObjectError::DigestMismatch { .. })
            ),
            "{error:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn size_and_chunk_count_mismatches() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("miscount").await?;
        let js = jetstream(&server).await?;
        // The right digest of "aaaabbbb", so only the counts are wrong.
        let raw = jetstream(&server)
            .await?
            .get_object_store("miscount")
            .await?;
        let digest = raw
            .put("right", &mut &b"aaaabbbb"[..])
            .await?
            .digest
            .context("digest")?;
        let claim = |size, chunks| Claim {
            size,
            chunks,
            digest: &digest,
        };

        // Claims more bytes than there are: noticed at the end.
        write_raw(&js, "miscount", "short", &[b"aaaa", b"bbbb"], claim(9, 2)).await?;
        let (read, error) = read_until_error(&store, "short").await?;
        assert_eq!(read, b"aaaa");
        assert!(
            matches!(
                error.kind(),
                ObjectError::SizeMismatch {
                    expected: 9,
                    actual: 8
                }
            ),
            "{error:?}"
        );
        // Fewer: noticed as soon as the data is longer.
        write_raw(&js, "miscount", "long", &[b"aaaa", b"bbbb"], claim(6, 2)).await?;
        let (read, error) = read_until_error(&store, "long").await?;
        assert_eq!(read, b"aaaa");
        assert!(
            matches!(
                error.kind(),
                ObjectError::SizeMismatch {
                    expected: 6,
                    actual: 8
                }
            ),
            "{error:?}"
        );
        // More or fewer chunks stored than claimed: refused before any data.
        let cases: [(&str, &[&[u8]], usize); 2] = [
            ("missing-chunk", &[b"aaaa", b"bbbb"], 3),
            ("extra-chunk", &[b"aaaa", b"bbbb", b"cc"], 2),
        ];
        for (name, stored, claimed) in cases {
            write_raw(&js, "miscount", name, stored, claim(8, claimed)).await?;
            let error = store.get(name).await.err().context(name)?;
            assert!(
                matches!(
                    object_error(&error),
                    Some(ObjectError::ChunkCountMismatch { expected, actual })
                        if *expected == claimed as u64 && *actual == stored.len() as u64
                ),
                "{name}: {error:?}"
            );
        }
        Ok(())
    })
    .await
}
