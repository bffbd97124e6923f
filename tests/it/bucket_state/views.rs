//! `KvView`: a live, typed map of a bucket, for tests and for the handlers and hooks of an app.

use super::*;
use faststream_core::kv::KvViewOptions;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn a_view_holds_decoded_values_and_follows_changes() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("flags").await?;
        store
            .put("checkout.new-ui", r#"{"enabled":true}"#.into())
            .await?;
        store
            .put("search.v2", r#"{"enabled":false}"#.into())
            .await?;
        store.put("gone", r#"{"enabled":true}"#.into()).await?;
        store.delete("gone").await?;

        let mut flags: KvView<Flag> = broker.kv_view("flags", ">").await?;
        assert_eq!(flags.keys(), ["checkout.new-ui", "search.v2"]);
        assert!(flags
            .get("checkout.new-ui")
            .is_some_and(|flag| flag.enabled));
        assert_eq!(flags.revision(), 4);
        assert!(flags.status().is_caught_up());

        // A value that does not decode leaves the key out: no stale value.
        store.put("search.v2", "not json".into()).await?;
        wait_for_view(&mut flags, "the bad value", |view| view.len() == 1).await?;
        assert_eq!(flags.get("search.v2"), None);
        let revision = store.put("search.v2", r#"{"enabled":true}"#.into()).await?;
        wait_for_view(&mut flags, "the good value", |view| {
            view.revision() == revision
        })
        .await?;
        assert!(flags.get("search.v2").is_some_and(|flag| flag.enabled));

        let snapshot = flags.snapshot();
        store.purge("checkout.new-ui").await?;
        wait_for_view(&mut flags, "the purge", |view| view.len() == 1).await?;
        // The snapshot taken before still shows its revision.
        assert_eq!((snapshot.len(), snapshot.revision()), (2, revision));
        let mut pairs: Vec<_> = snapshot
            .iter()
            .map(|(key, flag)| (key.to_owned(), flag.enabled))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("checkout.new-ui".to_owned(), true),
                ("search.v2".to_owned(), true)
            ]
        );

        let raw = broker.kv_view_raw("flags", "search.*").await?;
        assert_eq!(
            raw.get("search.v2").as_deref(),
            Some(&bytes::Bytes::from(r#"{"enabled":true}"#))
        );
        let text = broker
            .kv_view_decoded("flags", ">", |value| String::from_utf8(value.to_vec()))
            .await?;
        assert_eq!(text.len(), 1);

        // What a view cannot honour (`include_history`, ...) has no method on its options;
        // what it can is checked as for a watch.
        let error = broker
            .kv_view::<Flag>(
                KvViewOptions::new("flags").timeout(Duration::from_millis(1)),
                ">",
            )
            .await
            .err()
            .context("a 1 ms timeout should be refused")?;
        assert!(matches!(error, Error::InvalidWatch { .. }), "{error}");
        assert!(error.to_string().contains("timeout"), "{error}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_under_a_writer_equals_the_bucket_across_a_server_restart() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(BucketConfig::new("live").history(5))
            .await?;
        for key in 0..50 {
            store
                .put(format!("k.{key}"), key.to_string().into())
                .await?;
        }
        let view = broker.kv_view_raw("live", ">").await?;
        assert_eq!(view.len(), 50);

        // Puts and deletes over 100 keys, going on through the restart.
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                for n in 0u64..3_000 {
                    let key = format!("k.{}", (n * 7) % 100);
                    loop {
                        let written = if n % 5 == 0 {
                            store.delete(&key).await.map(|_| ())
                        } else {
                            store.put(&key, n.to_string().into()).await.map(|_| ())
                        };
                        if written.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let mut changes = view.clone();
        wait_for_view(&mut changes, "some writes", |view| view.revision() > 500).await?;
        server.restart().await?;
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .context("the writer did not finish")??;

        let last = store.put("k.final", "done".into()).await?;
        wait_for_view(
            &mut changes,
            &format!("the last write, revision {last}"),
            |view| view.revision() == last,
        )
        .await?;
        let mut expected = std::collections::BTreeMap::new();
        let mut keys = store.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            if let Some(value) = store.get(&key).await? {
                expected.insert(key, value);
            }
        }
        let actual: std::collections::BTreeMap<_, _> = view
            .snapshot()
            .iter()
            .map(|(key, value)| (key.to_owned(), (**value).clone()))
            .collect();
        assert_eq!(actual, expected);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_drops_keys_older_than_the_bucket_ttl_when_the_server_says_nothing(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(BucketConfig::new("short").ttl(Duration::from_secs(1)))
            .await?;
        let mut view = broker.kv_view_raw("short", ">").await?;
        // The server stamps the entry after this instant, and shares this host's clock.
        let before = std::time::Instant::now();
        store.put("session", "x".into()).await?;
        wait_for_view(&mut view, "the put", |view| view.len() == 1).await?;
        wait_for_view(&mut view, "the expiry", |view| view.is_empty()).await?;
        let lived = before.elapsed();
        println!(
            "{}: a key of a 1 s bucket ttl left the view after {lived:?}",
            server.binary()
        );
        // Measured 1.001-1.002 s: the view's own timer at the entry's age; up to 1 s late on a
        // loaded machine.
        assert!(
            lived >= Duration::from_millis(950) && lived < Duration::from_secs(2),
            "dropped after {lived:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn handlers_and_hooks_take_the_views_the_app_declares() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let flags = broker.key_value("app-flags").await?;
        flags.put("audit", r#"{"enabled":true}"#.into()).await?;
        let orders = broker.key_value("orders").await?;

        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_kv_view::<Flag>("app-flags", ">")
            .subscriber(
                "on_order",
                "o.*",
                KvWatch::new("orders"),
                with_views::on_order,
            )
            .hook(
                faststream_core::HookStage::AfterStartup,
                "started",
                with_views::started,
            );
        let running = RunningApp::spawn(app);
        events.wait_for_event("started with 1 flags").await?;
        orders.put("o.1", "book".into()).await?;
        events.wait_for_event("book audited=true").await?;
        flags.put("audit", r#"{"enabled":false}"#.into()).await?;
        // The view follows: an order handled after the change sees it (orders handled before
        // the view applied it may not).
        let next_order = AtomicU64::new(2);
        faststream_testing::wait_for("the view to change", EVENT_TIMEOUT, || async {
            let n = next_order.fetch_add(1, Ordering::Relaxed);
            orders
                .put(format!("o.{n}"), format!("pen{n}").into())
                .await?;
            let prefix = format!("pen{n} audited=");
            let events = events
                .wait_for(&prefix, |events| {
                    events.iter().any(|e| e.starts_with(&prefix))
                })
                .await?;
            anyhow::Ok(events.iter().any(|e| *e == format!("{prefix}false")))
        })
        .await?;
        running.stop().await??;

        // Misuse is found before connecting, all of it at once.
        let error = startup_error(
            App::new(BrokerConfig::new("nats://127.0.0.1:1"))
                .without_registered()
                .with_state(Events::default())
                .with_kv_view::<Flag>("app-flags", ">")
                .with_kv_view::<Flag>("other", ">")
                .with_kv_view::<String>("bad bucket", ">")
                .subscriber(
                    "needs_view",
                    "o.*",
                    KvWatch::new("orders"),
                    with_views::too_early,
                )
                .hook(
                    faststream_core::HookStage::OnStartup,
                    "early",
                    with_views::too_early,
                )
                .hook(
                    faststream_core::HookStage::AfterStartup,
                    "fine",
                    with_views::started,
                ),
        )
        .await?;
        let text = error.to_string();
        assert!(matches!(error, Error::Setup { .. }), "{text}");
        assert!(text.contains("one view per value type"), "{text}");
        assert!(text.contains("bad bucket"), "{text}");
        assert!(text.contains("not available in on_startup hooks"), "{text}");
        let missing = startup_error(
            App::new(BrokerConfig::new("nats://127.0.0.1:1"))
                .without_registered()
                .subscriber(
                    "needs_view",
                    "o.*",
                    KvWatch::new("orders"),
                    with_views::too_early,
                ),
        )
        .await?;
        assert!(
            missing
                .to_string()
                .contains("declare it with `App::with_kv_view`"),
            "{missing}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_drops_a_key_when_its_expiry_marker_arrives() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(BucketConfig::new("leases").limit_markers(Duration::from_secs(1)))
            .await?;
        store.put("kept", "x".into()).await?;
        let mut view = broker.kv_view_raw("leases", ">").await?;
        // No bucket ttl: only the server's marker can remove the key from the view.
        let revision = store
            .create_with_ttl("lease", "x".into(), Duration::from_secs(1))
            .await?;
        wait_for_view(&mut view, "the lease", |view| view.revision() >= revision).await?;
        assert!(view.contains_key("lease"));
        wait_for_view(&mut view, "the expiry", |view| !view.contains_key("lease")).await?;
        assert_eq!(view.keys(), ["kept"]);
        assert!(view.revision() > revision, "removed by the marker");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_reloads_a_bucket_that_was_created_again_and_drops_what_vanished(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let config = BucketConfig::new("again").history(2);
        let store = broker.key_value_with(config.clone()).await?;
        store.put("a", "1".into()).await?;
        store.put("b", "2".into()).await?;
        let mut view = broker.kv_view_raw("again", ">").await?;
        assert_eq!(view.keys(), ["a", "b"]);

        // Deleted and created again behind the broker's back, with other keys.
        let js = jetstream(&server).await?;
        js.delete_stream("KV_again").await?;
        let other = connected_broker(&server).await?;
        let fresh = other.key_value_with(config).await?;
        fresh.put("c", "3".into()).await?;
        wait_for_view(&mut view, "the new bucket's state", |view| {
            view.keys() == ["c"]
        })
        .await?;
        assert_eq!(view.revision(), 1);
        Ok(())
    })
    .await
}
