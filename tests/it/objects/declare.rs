//! `object_storage()`: the store async-nats would create, cached (one set of requests even for
//! concurrent first calls), existing stores used as they are, explicit configurations checked
//! field by field, look-up only, and what cannot be declared.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::stream::{Compression, DiscardPolicy};
use faststream_core::error::{chain, DeclareObjectStoreError};
use faststream_core::kv::StorageType;
use faststream_core::object::ObjectStoreConfig;
use faststream_core::Error;

use crate::common::{
    client_messages, connected_broker, jetstream, on_each_server, on_each_server_before_and_since,
};

#[tokio::test]
async fn declared_once_per_broker_even_when_asked_concurrently() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        // One first call: what it costs.
        let single = connected_broker(&server).await?;
        let before = client_messages(&server).await?;
        let first = single.object_storage("once").await?;
        let one_call = client_messages(&server).await? - before;
        assert!(one_call > 0, "the first call made no request");
        // Again, through a clone, and the same store exactly: no request.
        let before = client_messages(&server).await?;
        let again = single.clone().object_storage("once").await?;
        single
            .object_storage_with(ObjectStoreConfig::new("once"))
            .await?;
        single.lookup_object_storage("once").await?;
        assert_eq!(
            client_messages(&server).await?,
            before,
            "a cached call made a request"
        );
        assert_eq!(first.name(), again.name());

        // Two concurrent first calls of a fresh broker cost what one does.
        let concurrent = connected_broker(&server).await?;
        let before = client_messages(&server).await?;
        let (a, b) = tokio::join!(
            concurrent.object_storage("twice"),
            concurrent.object_storage("twice")
        );
        let (a, b) = (a?, b?);
        assert_eq!(a.name(), b.name());
        assert_eq!(client_messages(&server).await? - before, one_call);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_store_is_the_one_async_nats_creates() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        broker.object_storage("ours").await?;
        let js = jetstream(&server).await?;
        let config = js
            .get_stream("OBJ_ours")
            .await?
            .cached_info()
            .config
            .clone();
        assert_eq!(config.subjects, ["$O.ours.C.>", "$O.ours.M.>"]);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert!(config.allow_rollup && config.allow_direct);
        assert!(!config.deny_delete && !config.deny_purge);
        js.get_object_store("ours").await?;

        // A store async-nats created is the default configuration exactly.
        js.create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "theirs".into(),
            ..Default::default()
        })
        .await?;
        broker
            .object_storage_with(ObjectStoreConfig::new("theirs"))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn existing_stores_are_used_as_they_are_and_conflicts_are_named() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let creator = connected_broker(&server).await?;
        let made = ObjectStoreConfig::new("made")
            .description("made elsewhere")
            .max_bytes(1 << 20)
            .ttl(Duration::from_secs(3600));
        creator.object_storage_with(made.clone()).await?;
        creator.object_storage_with(made.clone()).await?; // the same again is fine

        // Another service with no configuration uses it as it is.
        let other = connected_broker(&server).await?;
        other.object_storage("made").await?;
        // An explicit, different configuration names each differing field, cached or not.
        let requested = ObjectStoreConfig::new("made").storage(StorageType::Memory);
        let fresh = connected_broker(&server).await?;
        for broker in [&other, &fresh] {
            let error = broker
                .object_storage_with(requested.clone())
                .await
                .err()
                .context("a conflicting configuration")?;
            assert!(
                matches!(error, Error::ObjectStoreConfigConflict { .. }),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "object store `made` already exists with another configuration: \
                 description: existing \"made elsewhere\", requested \"\"; \
                 ttl: existing 3600s, requested 0ns; \
                 max_bytes: existing 1048576, requested unlimited; \
                 storage: existing File, requested Memory"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn lookup_only_and_what_cannot_be_declared() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let error = broker
            .lookup_object_storage("absent")
            .await
            .err()
            .context("lookup of a missing store")?;
        assert!(
            matches!(&error, Error::ObjectStoreNotFound { bucket } if bucket == "absent"),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("object store `absent` does not exist"));
        let js = jetstream(&server).await?;
        assert!(js.get_stream("OBJ_absent").await.is_err(), "it was created");

        // Out-of-range values: no request.
        let before = client_messages(&server).await?;
        for (config, expected) in [
            (
                ObjectStoreConfig::new("bad").replicas(0),
                "invalid configuration for bucket `bad`: replicas must be 1..=5, got 0",
            ),
            (
                ObjectStoreConfig::new("bad.name"),
                "invalid bucket name `bad.name`: character `.` is not allowed \
                 (a bucket name uses only A-Z, a-z, 0-9, `_` and `-`)",
            ),
        ] {
            let error = broker
                .object_storage_with(config)
                .await
                .err()
                .context("bad")?;
            assert_eq!(error.to_string(), expected);
        }
        assert!(broker.object_storage("bad name").await.is_err());
        assert_eq!(
            client_messages(&server).await?,
            before,
            "a request was made"
        );

        // A stream of the store's name that is not an object store.
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "OBJ_impostor".into(),
            subjects: vec!["impostor.>".into()],
            ..Default::default()
        })
        .await?;
        let error = broker
            .object_storage("impostor")
            .await
            .err()
            .context("impostor")?;
        assert!(
            matches!(
                error,
                Error::DeclareObjectStore {
                    source: DeclareObjectStoreError::NotObjectStore { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            chain(&error),
            "could not declare object store `impostor`: stream `OBJ_impostor` exists but is not \
             an object store (its subjects are [\"impostor.>\"])"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn compression_needs_nats_server_2_10() -> anyhow::Result<()> {
    on_each_server_before_and_since(2, 10, |server| async move {
        let broker = connected_broker(&server).await?;
        let config = ObjectStoreConfig::new("squeezed").compression(true);
        if server.binary().version_at_least(2, 10) {
            broker.object_storage_with(config.clone()).await?;
            let stream = jetstream(&server).await?.get_stream("OBJ_squeezed").await?;
            assert_eq!(
                stream.cached_info().config.compression,
                Some(Compression::S2)
            );
            // Checked on the next declaration too.
            let plain = connected_broker(&server).await?;
            let error = plain
                .object_storage_with(ObjectStoreConfig::new("squeezed"))
                .await
                .err()
                .context("conflict")?;
            assert!(
                error
                    .to_string()
                    .ends_with("compression: existing true, requested false"),
                "{error}"
            );
        } else {
            let before = client_messages(&server).await?;
            let error = broker
                .object_storage_with(config)
                .await
                .err()
                .context("2.9")?;
            assert!(matches!(error, Error::ServerTooOld { .. }), "{error:?}");
            assert_eq!(
                client_messages(&server).await?,
                before,
                "a request was made"
            );
        }
        Ok(())
    })
    .await
}
