//! Expiry as its own event: on nats-server 2.11+, a bucket declared with `limit_markers` gets a
//! marker when a key ages out, which watchers see as `EXPIRED`, told apart from `DEL` and
//! `PURGE`; older servers refuse limit markers and per-key TTLs before any request.

use std::time::Duration;

use crate::common::{
    connected_broker, on_each_server_before, on_each_server_before_and_since, on_each_server_since,
    record_entry, Events, RunningApp, EVENT_TIMEOUT,
};
use faststream_core::error::TtlError;
use faststream_core::kv::BucketConfig;
use faststream_core::{App, BrokerConfig, Error, KvMessage, KvWatch, Operation, State};

/// The server's minimum marker TTL; per-key TTLs shorter than it are raised to it, so with it
/// a 1 s TTL expires after about a second.
const MARKER_TTL: Duration = Duration::from_secs(1);
const KEY_TTL: Duration = Duration::from_secs(1);

/// Records `kept: OP key` for each entry an `ignore_deletes` watch hands over.
async fn record_kept(message: KvMessage, State(events): State<Events>) {
    events.push(format!("kept: {} {}", message.operation(), message.key()));
}

/// Waits until `key` has no entry at all (`purge_with_ttl`'s marker aged out).
async fn wait_until_gone(store: &faststream_core::KeyValue, key: &str) -> anyhow::Result<()> {
    faststream_testing::wait_for(
        &format!("`{key}` to have no entry"),
        EVENT_TIMEOUT,
        || async { anyhow::Ok(store.entry(key).await?.is_none()) },
    )
    .await
}

#[tokio::test]
async fn delete_purge_and_expiry_arrive_told_apart() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(
                BucketConfig::new("expiry")
                    .history(10)
                    .limit_markers(MARKER_TTL),
            )
            .await?;
        store.put("ready", "1".into()).await?;

        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("all", ">", KvWatch::new("expiry"), record_entry)
            .subscriber(
                "kept",
                ">",
                KvWatch::new("expiry").ignore_deletes(true),
                record_kept,
            );
        let running = RunningApp::spawn(app);
        events
            .wait_for("both watches running", |e| {
                e.iter().any(|e| e == "kept: PUT ready")
                    && e.iter().any(|e| e.starts_with("PUT ready"))
            })
            .await?;

        store.put("del", "v".into()).await?;
        store.delete("del").await?;
        store.put("pur", "v".into()).await?;
        store.purge("pur").await?;
        let created_at = std::time::Instant::now();
        store.create_with_ttl("ttl", "v".into(), KEY_TTL).await?;
        store.put("pur_ttl", "v".into()).await?;
        store.purge_with_ttl("pur_ttl", KEY_TTL).await?;
        events.wait_for_event("EXPIRED ttl \"\" size=0").await?;
        let lived = created_at.elapsed();
        println!(
            "{}: EXPIRED of a 1 s key ttl after {lived:?}",
            server.binary()
        );
        // Measured 1.003 s; the server's TTL timer may fire up to 1 s late on a loaded machine.
        assert!(
            lived >= KEY_TTL && lived < KEY_TTL + Duration::from_secs(1),
            "expired after {lived:?}"
        );
        // The `ignore_deletes` watch is in revision order: a later put arriving there while the
        // expiry did not shows it was skipped, not late.
        store.put("after", "v".into()).await?;
        let recorded = events
            .wait_for("`PUT after` on both watches", |e| {
                e.iter().any(|e| e == "kept: PUT after")
                    && e.iter().any(|e| e.starts_with("PUT after"))
            })
            .await?;
        wait_until_gone(&store, "pur_ttl").await?;
        running.stop().await??;

        let all: Vec<_> = recorded
            .iter()
            .filter(|e| !e.starts_with("kept:"))
            .collect();
        assert_eq!(
            all,
            [
                "PUT ready \"1\" size=1",
                "PUT del \"v\" size=1",
                "DEL del \"\" size=0",
                "PUT pur \"v\" size=1",
                "PURGE pur \"\" size=0",
                "PUT ttl \"v\" size=1",
                "PUT pur_ttl \"v\" size=1",
                "PURGE pur_ttl \"\" size=0",
                "EXPIRED ttl \"\" size=0",
                "PUT after \"v\" size=1",
            ]
        );
        let kept: Vec<_> = recorded.iter().filter(|e| e.starts_with("kept:")).collect();
        assert_eq!(
            kept,
            [
                "kept: PUT ready",
                "kept: PUT del",
                "kept: PUT pur",
                "kept: PUT ttl",
                "kept: PUT pur_ttl",
                "kept: PUT after",
            ]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_bucket_ttl_expiry_with_markers_arrives_as_expired() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(
                BucketConfig::new("aged")
                    .ttl(Duration::from_secs(1))
                    .limit_markers(MARKER_TTL),
            )
            .await?;
        let mut watcher = broker
            .kv_watch("k", KvWatch::new("aged").updates_only(true))
            .await?;
        let put_at = std::time::Instant::now();
        let revision = store.put("k", "v".into()).await?;
        let put = watcher.get_one(EVENT_TIMEOUT).await;
        assert_eq!(
            put.map(|m| (m.operation(), m.revision())),
            Some((Operation::Put, revision))
        );
        let expired = watcher
            .get_one(EVENT_TIMEOUT)
            .await
            .ok_or_else(|| anyhow::anyhow!("no expiry within {EVENT_TIMEOUT:?}"))?;
        let lived = put_at.elapsed();
        println!(
            "{}: EXPIRED of a 1 s bucket ttl after {lived:?}",
            server.binary()
        );
        assert_eq!(expired.operation(), Operation::Expired);
        assert_eq!(expired.key(), "k");
        // Measured 1.25 s: the server checks ages on a timer of its own; 1.25 s more for a
        // loaded machine.
        assert!(
            lived >= Duration::from_secs(1) && lived < Duration::from_millis(2500),
            "expired after {lived:?}"
        );
        assert!(expired.value().is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn servers_before_2_11_refuse_limit_markers_and_ttls() -> anyhow::Result<()> {
    on_each_server_before(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let too_old = |error: &Error, method: &str| match error {
            Error::ServerTooOld {
                feature,
                required,
                server,
            } => {
                assert!(feature.contains(method), "{feature}");
                assert_eq!(*required, "2.11");
                assert!(server.starts_with("2.9"), "{server}");
                let text = error.to_string();
                assert!(text.contains("2.11") && text.contains("2.9"), "{text}");
            }
            other => panic!("not ServerTooOld: {other:?}"),
        };
        let error = broker
            .key_value_with(BucketConfig::new("markers").limit_markers(MARKER_TTL))
            .await
            .expect_err("limit markers on 2.9");
        too_old(&error, "BucketConfig::limit_markers");
        // Nothing was created.
        let missing = broker
            .lookup_key_value("markers")
            .await
            .expect_err("created");
        assert!(
            matches!(missing, Error::BucketNotFound { .. }),
            "{missing:?}"
        );

        let store = broker.key_value("plain").await?;
        let error = store
            .create_with_ttl("k", "v".into(), KEY_TTL)
            .await
            .expect_err("create_with_ttl on 2.9");
        too_old(&error, "KeyValue::create_with_ttl");
        let error = store
            .purge_with_ttl("k", KEY_TTL)
            .await
            .expect_err("purge_with_ttl on 2.9");
        too_old(&error, "KeyValue::purge_with_ttl");
        assert_eq!(store.entry("k").await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ttls_on_a_bucket_without_markers_are_refused() -> anyhow::Result<()> {
    // Refused on both sides of 2.11, each in its own way: both must run.
    on_each_server_before_and_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("plain").await?;
        let ttl_error = |error: &Error| match error {
            Error::KeyValue {
                bucket,
                key,
                source,
                ..
            } => {
                assert_eq!((bucket.as_str(), key.as_str()), ("plain", "k"));
                source.downcast_ref::<TtlError>().cloned()
            }
            _ => None,
        };

        let error = store
            .create_with_ttl("k", "v".into(), Duration::from_millis(500))
            .await
            .expect_err("a TTL under a second");
        assert_eq!(
            ttl_error(&error),
            Some(TtlError::TooShort {
                ttl: Duration::from_millis(500)
            })
        );

        let error = store
            .create_with_ttl("k", "v".into(), KEY_TTL)
            .await
            .expect_err("create_with_ttl without markers");
        if server.binary().version_at_least(2, 11) {
            assert_eq!(ttl_error(&error), Some(TtlError::NotAllowed), "{error:?}");
            let text = faststream_core::error::chain(&error);
            assert_eq!(
                text,
                "could not create `k` in bucket `plain`: the bucket does not allow per-key \
                 TTLs: declare it with `BucketConfig::limit_markers`"
            );
            let error = store
                .purge_with_ttl("k", KEY_TTL)
                .await
                .expect_err("purge_with_ttl without markers");
            assert_eq!(ttl_error(&error), Some(TtlError::NotAllowed), "{error:?}");
            // Asking for markers on the existing plain bucket is a conflict naming them.
            let conflict = broker
                .key_value_with(BucketConfig::new("plain").limit_markers(MARKER_TTL))
                .await
                .expect_err("plain bucket declared with markers");
            assert!(
                conflict
                    .to_string()
                    .contains("limit_markers: existing none, requested 1s"),
                "{conflict}"
            );
        } else {
            assert!(matches!(error, Error::ServerTooOld { .. }), "{error:?}");
        }
        assert_eq!(store.entry("k").await?, None, "a value was written");
        Ok(())
    })
    .await
}
