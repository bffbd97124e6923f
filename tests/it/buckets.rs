//! `key_value()`: cached, uses existing buckets as they are, rejects conflicting explicit
//! configurations, and reports buckets that are missing or cannot be declared.

use crate::common::{client_messages, jetstream, on_each_server};
use anyhow::Context as _;
use faststream_core::error::{chain, DeclareBucketError};
use faststream_core::kv::BucketConfig;
use faststream_core::{App, BrokerConfig, Error, KvWatch, NatsBroker};

#[tokio::test]
async fn second_key_value_call_makes_no_request() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let before = client_messages(&server).await?;
        let first = broker.key_value("cached").await?;
        let after_first = client_messages(&server).await?;
        assert!(
            after_first > before,
            "the first call should ask the server ({before} -> {after_first} messages)"
        );
        let second = broker.key_value("cached").await?;
        let via_clone = broker.clone().key_value("cached").await?;
        let after_second = client_messages(&server).await?;
        assert_eq!(after_first, after_second, "the second call made a request");
        assert_eq!(first.name(), second.name());
        assert_eq!(first.name(), via_clone.name());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn created_bucket_works_with_every_client_operation() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker
            .key_value_with(BucketConfig::new("ops").history(5).description("ops test"))
            .await?;
        let first = store.put("a", "1".into()).await?;
        store.put("a", "2".into()).await?;
        assert_eq!(store.get("a").await?.as_deref(), Some(&b"2"[..]));
        let old = store
            .entry_for_revision("a", first)
            .await?
            .context("revision")?;
        assert_eq!(&old.value[..], b"1");
        store.create("b", "x".into()).await?;
        assert!(
            store.create("b", "y".into()).await.is_err(),
            "create of an existing key"
        );
        let revision = store.entry("b").await?.context("entry b")?.revision;
        store.update("b", "z".into(), revision).await?;
        store.delete("a").await?;
        store.purge("b").await?;
        let status = store.status().await?;
        assert_eq!(status.history(), 5);
        // A raw async-nats client sees the same bucket.
        let raw = jetstream(&server).await?.get_key_value("ops").await?;
        assert_eq!(raw.get("a").await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn existing_bucket_is_used_as_it_is_and_conflicts_are_named() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let creator = crate::common::connected_broker(&server).await?;
        creator
            .key_value_with(
                BucketConfig::new("shared")
                    .history(5)
                    .description("made elsewhere"),
            )
            .await?;

        // Another service: no config given, so the bucket is used as it is.
        let other = crate::common::connected_broker(&server).await?;
        let store = other.key_value("shared").await?;
        assert_eq!(store.status().await?.history(), 5);

        // An explicit, different config is an error naming each differing field, cached or not.
        let requested = BucketConfig::new("shared").history(3);
        let fresh = NatsBroker::connect(BrokerConfig::new(server.url())).await?;
        for broker in [&other, &fresh] {
            let error = broker
                .key_value_with(requested.clone())
                .await
                .err()
                .context("a conflicting config should fail")?;
            assert!(
                matches!(error, Error::BucketConfigConflict { .. }),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "bucket `shared` already exists with another configuration: \
                 description: existing \"made elsewhere\", requested \"\"; \
                 history: existing 5, requested 3"
            );
        }
        // The same config again is fine.
        creator
            .key_value_with(
                BucketConfig::new("shared")
                    .history(5)
                    .description("made elsewhere"),
            )
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn out_of_range_config_fails_before_any_request() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let before = client_messages(&server).await?;
        for (config, expected) in [
            (
                BucketConfig::new("bad").history(65),
                "invalid configuration for bucket `bad`: history must be 1..=64, got 65",
            ),
            (
                BucketConfig::new("bad").replicas(0),
                "invalid configuration for bucket `bad`: replicas must be 1..=5, got 0",
            ),
            (
                BucketConfig::new("bad.name"),
                "invalid bucket name `bad.name`: character `.` is not allowed \
                 (a bucket name uses only A-Z, a-z, 0-9, `_` and `-`)",
            ),
        ] {
            let error = broker
                .key_value_with(config)
                .await
                .err()
                .context("should fail")?;
            assert_eq!(error.to_string(), expected);
        }
        assert_eq!(
            client_messages(&server).await?,
            before,
            "a request was made"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn declare_false_on_a_missing_bucket_names_it() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        async fn never_called(_msg: String) {}
        // The service keeps a handle of its own: the app must still close the connection.
        let broker = BrokerConfig::new(server.url());
        let app = App::new(broker.clone()).without_registered().subscriber(
            "lookup_only",
            "k",
            KvWatch::new("absent").declare(false),
            never_called,
        );
        let error = crate::common::startup_error(app).await?;
        assert!(matches!(error, Error::BucketNotFound { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("bucket `absent` does not exist"),
            "{error}"
        );
        // And nothing was created, and nothing left connected.
        let missing = jetstream(&server).await?.get_key_value("absent").await;
        assert!(missing.is_err(), "the bucket was created");
        crate::common::wait_for_no_connections(&server).await?;
        drop(broker);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bucket_the_server_refuses_names_bucket_and_reason() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        // Another stream already takes the bucket's subjects.
        jetstream(&server)
            .await?
            .create_stream(async_nats::jetstream::stream::Config {
                name: "SQUATTER".into(),
                subjects: vec!["$KV.clash.>".into()],
                ..Default::default()
            })
            .await?;
        async fn never_called(_msg: String) {}
        // The service keeps a handle of its own: the app must still close the connection.
        let broker = BrokerConfig::new(server.url());
        let app = App::new(broker.clone()).without_registered().subscriber(
            "clashing",
            "k",
            KvWatch::new("clash"),
            never_called,
        );
        let error = crate::common::startup_error(app).await?;
        assert!(
            matches!(
                error,
                Error::DeclareBucket {
                    source: DeclareBucketError::Create(_),
                    ..
                }
            ),
            "{error:?}"
        );
        let text = chain(&error);
        assert!(
            text.starts_with("could not declare bucket `clash`: creating its stream failed: "),
            "{text}"
        );
        assert!(
            text.contains("overlap"),
            "the server's reason is missing: {text}"
        );
        // Connected but not started: the connection was closed.
        crate::common::wait_for_no_connections(&server).await?;
        drop(broker);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_bucket_created_by_another_process_meanwhile_is_used() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        // Two services start at once: one uses whatever `raceN` is (or creates the default),
        // the other insists on history 5. Whoever creates it first, the first one must start.
        let using = crate::common::connected_broker(&server).await?;
        let insisting = crate::common::connected_broker(&server).await?;
        let mut conflicts = 0;
        for round in 0..30 {
            let bucket = format!("race{round}");
            let (used, insisted) = tokio::join!(
                using.key_value(&bucket),
                insisting.key_value_with(BucketConfig::new(&bucket).history(5))
            );
            used.with_context(|| format!("round {round}: key_value() failed in the race"))?;
            match insisted {
                Ok(_) => {}
                Err(Error::BucketConfigConflict { .. }) => conflicts += 1,
                Err(other) => anyhow::bail!("round {round}: {}", chain(&other)),
            }
        }
        println!("30 races, {conflicts} won by the default configuration");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_mirrored_bucket_writes_to_its_origin() -> anyhow::Result<()> {
    use async_nats::jetstream::stream;
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let origin = broker
            .key_value_with(BucketConfig::new("origin").history(5))
            .await?;
        // A read replica as `nats kv add --mirror` makes it: the stream mirrors the origin's.
        jetstream(&server)
            .await?
            .create_stream(stream::Config {
                name: "KV_replica".to_owned(),
                mirror: Some(stream::Source {
                    name: "KV_origin".to_owned(),
                    ..Default::default()
                }),
                mirror_direct: true,
                allow_direct: true,
                max_messages_per_subject: 5,
                allow_rollup: true,
                deny_delete: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .context("creating the mirror stream")?;
        let replica = broker.key_value("replica").await?;
        replica
            .put("k", "through the replica".into())
            .await
            .context("put through a mirrored bucket")?;
        assert_eq!(
            origin.get("k").await?.as_deref(),
            Some(&b"through the replica"[..])
        );
        // The mirror catches up, and reads and watches of the replica see the origin's keys.
        let mut watcher = broker
            .kv_watch("k", KvWatch::new("replica").declare(false))
            .await?;
        let seen = watcher
            .get_one(crate::common::EVENT_TIMEOUT)
            .await
            .context("the replica's watch saw nothing")?;
        assert_eq!(seen.key(), "k");
        assert_eq!(&seen.value()[..], b"through the replica");
        assert_eq!(
            replica.get("k").await?.as_deref(),
            Some(&b"through the replica"[..])
        );
        Ok(())
    })
    .await
}
