//! The `ObjectStore` handle: put and get (empty, one chunk, several), what a missing, deleted,
//! overwritten or replaced object gives, info, list, delete, links, names checked before any
//! request, and objects shared with raw async-nats both ways.

use anyhow::Context as _;
use async_nats::jetstream::object_store::ObjectMetadata;
use bytes::Bytes;
use faststream_core::error::{ObjectError, ObjectReadError};
use faststream_core::Error;
use futures_util::StreamExt as _;
use tokio::io::AsyncReadExt as _;

use super::{object_error, PseudoRandom};
use crate::common::{client_messages, connected_broker, jetstream, on_each_server};

#[tokio::test]
async fn put_and_get_round_trip_empty_small_and_chunked() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("trip").await?;
        let chunked = PseudoRandom::bytes(7, 300_000);
        for (name, data, chunks) in [
            ("empty", Vec::new(), 0),
            ("small", b"hello".to_vec(), 1),
            ("chunked", chunked.clone(), 3),
        ] {
            let info = store.put(name, &data[..]).await?;
            assert_eq!((info.size, info.chunks), (data.len(), chunks), "{name}");
            assert_eq!(info.bucket, "trip");
            // As a stream of chunks, as stored.
            let mut reader = store.get(name).await?;
            assert_eq!(reader.info().nuid, info.nuid);
            let mut read = Vec::new();
            let mut pieces = 0;
            while let Some(chunk) = reader.next().await {
                read.extend_from_slice(&chunk?);
                pieces += 1;
            }
            assert_eq!(read, data, "{name}");
            assert_eq!(pieces, chunks, "{name}: one item per chunk");
            // Through AsyncRead.
            let mut read = Vec::new();
            store.get(name).await?.read_to_end(&mut read).await?;
            assert_eq!(read, data, "{name}");
            assert_eq!(store.get_bytes(name).await?, data, "{name}");
            assert_eq!(store.info(name).await?.context("info")?, info);
        }
        // The chunk size of the metadata is used; a reader that returns little at a time still
        // makes full chunks.
        let meta = ObjectMetadata {
            name: "fine".into(),
            chunk_size: Some(1000),
            description: Some("small chunks".into()),
            ..Default::default()
        };
        let trickle = Trickle(&chunked[..10_500]);
        let info = store.put(meta, trickle).await?;
        assert_eq!((info.size, info.chunks), (10_500, 11));
        assert_eq!(info.description.as_deref(), Some("small chunks"));
        assert_eq!(store.get_bytes("fine").await?, &chunked[..10_500]);
        Ok(())
    })
    .await
}

/// A reader handing out at most 100 bytes per read.
struct Trickle<'a>(&'a [u8]);

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.0.len().min(100).min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn missing_deleted_and_overwritten_objects() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("lifecycle").await?;
        let not_found = |error: &Error| matches!(object_error(error), Some(ObjectError::NotFound));

        let missing = store.get("nothing").await.err().context("get of a missing object")?;
        assert!(not_found(&missing), "{missing:?}");
        assert_eq!(
            missing.to_string(),
            "could not get object `nothing` in bucket `lifecycle`"
        );
        assert!(store.info("nothing").await?.is_none());
        let error = store.delete("nothing").await.err().context("delete of a missing one")?;
        assert!(not_found(&error), "{error:?}");

        // Overwritten: get reads the newest; the old version is gone, the new one readable.
        let first = store.put_bytes("doc", Bytes::from_static(b"v1")).await?;
        let second = store.put_bytes("doc", Bytes::from_static(b"version 2")).await?;
        assert_ne!(first.nuid, second.nuid);
        assert_eq!(store.get_bytes("doc").await?, "version 2");
        let replaced = store
            .get_version(&first)
            .await
            .err()
            .context("get_version of a replaced version")?;
        assert!(
            matches!(object_error(&replaced), Some(ObjectError::Replaced { nuid }) if *nuid == first.nuid),
            "{replaced:?}"
        );
        assert_eq!(store.get_version(&second).await?.read_all().await?, "version 2");

        // The same with versions of several chunks (read through a consumer).
        let big = PseudoRandom::bytes(1, 400_000);
        let old = store.put("big", &big[..]).await?;
        let new = store.put("big", &big[..200_000]).await?;
        assert!(old.chunks > 1 && new.chunks > 1);
        let replaced = store.get_version(&old).await.err().context("old big version")?;
        assert!(
            matches!(object_error(&replaced), Some(ObjectError::Replaced { .. })),
            "{replaced:?}"
        );
        assert_eq!(store.get_version(&new).await?.read_all().await?, big[..200_000]);

        // Deleted: not found by name, its version replaced, left out of list and info.
        store.delete("doc").await?;
        let error = store.get("doc").await.err().context("get of a deleted object")?;
        assert!(not_found(&error), "{error:?}");
        let error = store.get_version(&second).await.err().context("deleted version")?;
        assert!(
            matches!(object_error(&error), Some(ObjectError::Replaced { .. })),
            "{error:?}"
        );
        assert!(store.info("doc").await?.is_none());
        let error = store.delete("doc").await.err().context("second delete")?;
        assert!(not_found(&error), "{error:?}");
        let names: Vec<String> = store.list().await?.into_iter().map(|info| info.name).collect();
        assert_eq!(names, ["big"]);
        // Its chunks are gone from the stream.
        let stream = jetstream(&server).await?.get_stream("OBJ_lifecycle").await?;
        let subject = format!("$O.lifecycle.C.{}", second.nuid);
        assert!(stream.get_last_raw_message_by_subject(&subject).await.is_err());
        let subject = format!("$O.lifecycle.C.{}", old.nuid);
        assert!(stream.get_last_raw_message_by_subject(&subject).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_reader_of_a_replaced_version_fails_instead_of_ending() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("midread").await?;
        // Many chunks, so the reader is still reading when the version goes.
        let data = PseudoRandom::bytes(3, 8 << 20);
        for replace in ["put", "delete"] {
            store.put("moving", &data[..]).await?;
            let mut reader = store.get("moving").await?;
            let first = reader.next().await.context("first chunk")??;
            assert!(!first.is_empty());
            match replace {
                "put" => drop(
                    store
                        .put_bytes("moving", Bytes::from_static(b"new"))
                        .await?,
                ),
                _ => store.delete("moving").await?,
            }
            let started = std::time::Instant::now();
            let mut read = first.len();
            let error = loop {
                match reader.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    Some(Err(error)) => break error,
                    None => anyhow::bail!("{replace}: the reader ended after {read} bytes"),
                }
            };
            assert!(
                matches!(error.kind(), ObjectError::Replaced { .. }),
                "{replace}: {error:?}"
            );
            assert!(read < data.len(), "{replace}: read all {read} bytes");
            // Noticed at the first check after the data stopped (1 s).
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{replace}: took {:?}",
                started.elapsed()
            );
            // And it stays failed.
            let again = reader.next().await.context("no end after an error")?;
            assert!(
                matches!(again, Err(ref e) if matches!(e.kind(), ObjectError::Replaced { .. }))
            );
            let mut rest = Vec::new();
            let io_error = reader
                .read_to_end(&mut rest)
                .await
                .err()
                .context("read_to_end")?;
            let inner = ObjectReadError::from_io(&io_error).context("inner error")?;
            assert_eq!((inner.bucket(), inner.object()), ("midread", "moving"));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn names_and_chunk_sizes_are_checked_before_any_request() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("names").await?;
        let before = client_messages(&server).await?;
        let long = "x".repeat(2049);
        for name in [String::new(), "a\nb".to_owned(), long] {
            for error in [
                store
                    .put_bytes(name.as_str(), Bytes::from_static(b"x"))
                    .await
                    .err(),
                store.get(&name).await.err(),
                store.delete(&name).await.err(),
                store.info(&name).await.err(),
            ] {
                let error = error.context("an invalid name was accepted")?;
                assert!(
                    matches!(object_error(&error), Some(ObjectError::InvalidName { .. })),
                    "{error:?}"
                );
            }
        }
        let meta = ObjectMetadata {
            name: "huge-chunks".into(),
            chunk_size: Some(64 << 20),
            ..Default::default()
        };
        let error = store
            .put(meta, &b"x"[..])
            .await
            .err()
            .context("chunk size")?;
        assert!(
            matches!(
                object_error(&error),
                Some(ObjectError::InvalidChunkSize { .. })
            ),
            "{error:?}"
        );
        assert_eq!(
            client_messages(&server).await?,
            before,
            "a request was made"
        );
        // Any other character is fine, as in other clients.
        let odd = "reports/2024 06/résumé (final).pdf";
        store.put_bytes(odd, Bytes::from_static(b"pdf")).await?;
        assert_eq!(store.get_bytes(odd).await?, "pdf");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn objects_are_shared_with_async_nats_both_ways() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("shared").await?;
        let raw = jetstream(&server).await?.get_object_store("shared").await?;
        let data = PseudoRandom::bytes(11, 500_000);
        // Written here, read by async-nats (which checks the digest too).
        store.put("ours", &data[..]).await?;
        let mut read = Vec::new();
        raw.get("ours").await?.read_to_end(&mut read).await?;
        assert_eq!(read, data);
        // Written by async-nats, read here, listed, deleted here and gone for async-nats.
        raw.put("theirs", &mut &data[..250_000]).await?;
        assert_eq!(store.get_bytes("theirs").await?, data[..250_000]);
        let mut names: Vec<String> = store
            .list()
            .await?
            .into_iter()
            .map(|info| info.name)
            .collect();
        names.sort();
        assert_eq!(names, ["ours", "theirs"]);
        store.delete("theirs").await?;
        assert!(raw.get("theirs").await.is_err());
        // The async-nats store behind the handle is the same bucket.
        assert_eq!(store.store().info("ours").await?.size, data.len());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn links_are_followed_one_level() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("linking").await?;
        let other = broker.object_storage("linked").await?;
        let target = store.put_bytes("target", Bytes::from_static(b"payload")).await?;
        let elsewhere = other.put_bytes("far", Bytes::from_static(b"far away")).await?;
        let raw = store.store();
        raw.add_link("near-link", &target).await?;
        raw.add_link("far-link", &elsewhere).await?;
        raw.add_bucket_link("bucket-link", "linked").await?;
        assert_eq!(store.get_bytes("near-link").await?, "payload");
        let reader = store.get("far-link").await?;
        assert_eq!(reader.info().bucket, "linked");
        assert_eq!(reader.read_all().await?, "far away");
        let error = store.get("bucket-link").await.err().context("bucket link")?;
        assert!(
            matches!(object_error(&error), Some(ObjectError::BucketLink { bucket }) if bucket == "linked"),
            "{error:?}"
        );
        // A link to a link is not followed (async-nats refuses to make one: written raw).
        let link_to_link = serde_json::json!({
            "name": "link-to-link",
            "bucket": "linking",
            "nuid": "LINK2LINK",
            "options": { "link": { "name": "near-link", "bucket": "linking" } },
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Rollup", "sub");
        jetstream(&server)
            .await?
            .publish_with_headers(
                "$O.linking.M.bGluay10by1saW5r",
                headers,
                serde_json::to_vec(&link_to_link)?.into(),
            )
            .await?
            .await?;
        let error = store.get("link-to-link").await.err().context("nested link")?;
        assert!(
            matches!(object_error(&error), Some(ObjectError::NestedLink { .. })),
            "{error:?}"
        );
        // A link whose target is gone.
        store.delete("target").await?;
        let error = store.get("near-link").await.err().context("dangling link")?;
        assert!(matches!(object_error(&error), Some(ObjectError::NotFound)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "could not get object `target` in bucket `linking`"
        );
        Ok(())
    })
    .await
}
