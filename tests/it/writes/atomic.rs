//! Atomic commits (nats-server 2.12+): every write stored at consecutive revisions with its
//! batch headers, or none; the key whose expectation failed named; everything that cannot work
//! refused before anything is sent, on new and old servers.

use anyhow::Context as _;
use faststream_core::error::AtomicWriteError;
use faststream_core::kv::{BucketConfig, MAX_ATOMIC_WRITES};
use faststream_core::{Error, Operation};

use super::atomic_bucket;
use crate::common::{
    client_messages, connected_broker, jetstream, on_each_server_before, on_each_server_since,
};

/// How many messages the bucket's stream holds.
async fn stored(server: &faststream_testing::NatsServer, bucket: &str) -> anyhow::Result<u64> {
    let mut stream = jetstream(server)
        .await?
        .get_stream(format!("KV_{bucket}"))
        .await?;
    Ok(stream.info().await?.state.messages)
}

#[tokio::test]
async fn a_commit_stores_every_write_at_consecutive_revisions() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "atomic_ok", 5).await?;
        kv.put("gone", "x".into()).await?;
        let before = kv.put("a", "1".into()).await?;
        let committed = kv
            .atomic()
            .update("a", "2".into(), before)
            .create("b", "new".into())
            .put_json("c", &serde_json::json!({ "n": 3 }))
            .delete("gone")
            .commit()
            .await?;
        assert_eq!(committed.len(), 4);
        let revisions: Vec<u64> = committed.revisions().iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions, [before + 1, before + 2, before + 3, before + 4]);
        assert_eq!(committed.revision("b"), Some(before + 2));
        assert_eq!(kv.get("a").await?.as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.get("b").await?.as_deref(), Some(&b"new"[..]));
        assert_eq!(
            kv.get_json::<serde_json::Value>("c").await?,
            Some(serde_json::json!({ "n": 3 }))
        );
        let gone = kv.entry("gone").await?.context("gone")?;
        assert_eq!(Operation::from(gone.operation), Operation::Delete);
        assert_eq!(gone.revision, before + 4);

        // Stored with their batch headers; the last one says it is the commit.
        let stream = jetstream(&server).await?.get_stream("KV_atomic_ok").await?;
        for (index, revision) in revisions.iter().enumerate() {
            let message = stream.get_raw_message(*revision).await?;
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
            assert_eq!(
                header("Nats-Batch-Id").as_deref(),
                Some(committed.batch_id())
            );
            assert_eq!(header("Nats-Batch-Sequence"), Some((index + 1).to_string()));
            let commit = header("Nats-Batch-Commit");
            assert_eq!(commit.is_some(), index == 3, "{index}: {commit:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stale_expectation_refuses_the_whole_commit_naming_the_key() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "atomic_stale", 1).await?;
        let a = kv.put("a", "1".into()).await?;
        let b = kv.put("b", "1".into()).await?;
        let b_now = kv.put("b", "changed".into()).await?;
        let messages = stored(&server, "atomic_stale").await?;

        let error = kv
            .atomic()
            .update("a", "2".into(), a)
            .put("c", "3".into())
            .update("b", "2".into(), b)
            .commit()
            .await
            .expect_err("b changed");
        assert!(error.is_key_changed(), "{error:?}");
        match &error {
            Error::KeyChanged {
                bucket,
                operation,
                key,
                expected_revision,
                current_revision,
            } => {
                assert_eq!(
                    (bucket.as_str(), *operation, key.as_str()),
                    ("atomic_stale", "commit", "b")
                );
                assert_eq!((*expected_revision, *current_revision), (b, Some(b_now)));
            }
            other => anyhow::bail!("expected KeyChanged, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            format!(
                "could not commit `b` in bucket `atomic_stale`: it changed since revision {b} \
                 (it is at revision {b_now})"
            )
        );
        // Nothing of it was written.
        assert_eq!(kv.entry("a").await?.context("a")?.revision, a);
        assert_eq!(kv.get("b").await?.as_deref(), Some(&b"changed"[..]));
        assert_eq!(kv.entry("c").await?, None);
        assert_eq!(stored(&server, "atomic_stale").await?, messages);

        // A create of a key with a value names it, expecting no entry.
        let error = kv
            .atomic()
            .put("c", "3".into())
            .create("a", "again".into())
            .commit()
            .await
            .expect_err("a exists");
        assert!(
            matches!(&error, Error::KeyChanged { key, expected_revision: 0, current_revision: Some(r), .. }
                if key == "a" && *r == a),
            "{error:?}"
        );
        assert_eq!(kv.entry("c").await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_create_writes_over_a_delete_marker() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "atomic_create", 5).await?;
        kv.put("x", "old".into()).await?;
        kv.delete("x").await?;
        kv.put("y", "old".into()).await?;
        kv.purge("y").await?;
        let committed = kv
            .atomic()
            .create("x", "new".into())
            .create("y", "new".into())
            .create("z", "new".into())
            .commit()
            .await?;
        for key in ["x", "y", "z"] {
            assert_eq!(kv.get(key).await?.as_deref(), Some(&b"new"[..]), "{key}");
        }
        assert_eq!(committed.len(), 3);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn what_cannot_work_is_refused_before_anything_is_sent() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "atomic_checks", 1).await?;
        let before = client_messages(&server).await?;

        let mut too_many = kv.atomic();
        for i in 0..=MAX_ATOMIC_WRITES {
            too_many = too_many.put(format!("k.{i}"), "v".into());
        }
        let error = too_many.commit().await.expect_err("too many");
        assert!(
            matches!(&error, Error::AtomicWrite { bucket, writes: 1001,
                source: AtomicWriteError::TooLarge { writes: 1001, limit: 1000 } } if bucket == "atomic_checks"),
            "{error:?}"
        );
        assert_eq!(
            faststream_core::error::chain(&error),
            "could not commit 1001 write(s) atomically to bucket `atomic_checks`: 1001 writes, \
             over the 1000 a commit may have"
        );

        let error = kv
            .atomic()
            .put("a", "1".into())
            .update("a", "2".into(), 7)
            .commit()
            .await
            .expect_err("second expectation");
        assert!(
            matches!(&error, Error::AtomicWrite { source: AtomicWriteError::SecondExpectation { key }, .. } if key == "a"),
            "{error:?}"
        );
        let empty = kv.atomic().commit().await.expect_err("empty");
        assert!(
            matches!(&empty, Error::AtomicWrite { writes: 0, source: AtomicWriteError::Empty, .. }),
            "{empty:?}"
        );
        let bad_key = kv
            .atomic()
            .put("ok", "1".into())
            .put("bad..key", "1".into())
            .commit()
            .await
            .expect_err("invalid key");
        assert!(
            matches!(&bad_key, Error::KeyValue { key, .. } if key == "bad..key"),
            "{bad_key:?}"
        );
        let mut not_json = std::collections::HashMap::new();
        not_json.insert((1, 2), "a map with non-string keys");
        let error = kv
            .atomic()
            .put_json("m", &not_json)
            .commit()
            .await
            .expect_err("does not encode");
        assert!(
            matches!(&error, Error::KeyValue { key, operation: "write atomically", .. } if key == "m"),
            "{error:?}"
        );
        assert_eq!(client_messages(&server).await?, before, "a request was made");
        assert_eq!(stored(&server, "atomic_checks").await?, 0);

        // 1000 writes are taken.
        let mut full = kv.atomic();
        for i in 0..MAX_ATOMIC_WRITES {
            full = full.put(format!("k.{i}"), "v".into());
        }
        assert_eq!(full.commit().await?.len(), MAX_ATOMIC_WRITES);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_bucket_without_allow_atomic_is_refused_until_declared_with_it() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let broker = connected_broker(&server).await?;
        let plain = broker.key_value("atomic_plain").await?;
        plain.put("a", "1".into()).await?;
        let error = plain
            .atomic()
            .put("a", "2".into())
            .commit()
            .await
            .expect_err("not allowed");
        assert!(
            matches!(
                &error,
                Error::AtomicWrite {
                    source: AtomicWriteError::NotAllowed,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            faststream_core::error::chain(&error).contains("BucketConfig::allow_atomic(true)"),
            "{error}"
        );
        assert_eq!(stored(&server, "atomic_plain").await?, 1);

        // Declaring it with `allow_atomic` updates the existing bucket's stream...
        let other = connected_broker(&server).await?;
        let allowed = other
            .key_value_with(BucketConfig::new("atomic_plain").allow_atomic(true))
            .await?;
        allowed.atomic().put("a", "2".into()).commit().await?;
        // ...which the first handle finds by reading the stream's info again.
        plain.atomic().put("a", "3".into()).commit().await?;
        assert_eq!(plain.get("a").await?.as_deref(), Some(&b"3"[..]));

        // Asking for it off, or for other changes with it, is a conflict naming the fields.
        let third = connected_broker(&server).await?;
        let error = third
            .key_value_with(BucketConfig::new("atomic_plain"))
            .await
            .expect_err("allow_atomic differs");
        assert!(
            matches!(&error, Error::BucketConfigConflict { differences, .. }
                if differences == &["allow_atomic: existing true, requested false"]),
            "{error:?}"
        );
        let plain_two = third.key_value("atomic_plain_two").await?;
        drop(plain_two);
        let error = third
            .key_value_with(
                BucketConfig::new("atomic_plain_two")
                    .history(3)
                    .allow_atomic(true),
            )
            .await
            .expect_err("history differs");
        assert!(
            matches!(&error, Error::BucketConfigConflict { differences, .. }
                if differences.len() == 2 && differences[0] == "history: existing 1, requested 3"),
            "{error:?}"
        );
        let mut stream = jetstream(&server)
            .await?
            .get_stream("KV_atomic_plain_two")
            .await?;
        assert!(
            !stream.info().await?.config.allow_atomic_publish,
            "updated despite a conflict"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn servers_before_2_12_refuse_atomic_writes_before_anything_is_sent() -> anyhow::Result<()> {
    on_each_server_before(2, 12, |server| async move {
        let broker = connected_broker(&server).await?;
        let kv = broker.key_value("atomic_old").await?;
        kv.put("a", "1".into()).await?;
        let before = client_messages(&server).await?;
        let error = kv
            .atomic()
            .put("a", "2".into())
            .put("b", "2".into())
            .commit()
            .await
            .expect_err("too old");
        let version = server.binary().version.clone();
        assert!(
            matches!(&error, Error::ServerTooOld { required: "2.12", server, .. } if *server == version),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "atomic writes (KeyValue::atomic) need nats-server 2.12 or newer; the server is \
                 {version}"
            )
        );
        let error = broker
            .key_value_with(BucketConfig::new("atomic_old_two").allow_atomic(true))
            .await
            .expect_err("too old");
        assert!(
            matches!(&error, Error::ServerTooOld { feature, .. } if feature.contains("BucketConfig::allow_atomic")),
            "{error:?}"
        );
        assert_eq!(client_messages(&server).await?, before, "a request was made");
        assert_eq!(stored(&server, "atomic_old").await?, 1);
        assert_eq!(kv.get("b").await?, None);
        Ok(())
    })
    .await
}
