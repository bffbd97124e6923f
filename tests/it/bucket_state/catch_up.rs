//! Caught up: a watch knows when it has delivered the bucket's state, and `after_startup` hooks
//! wait for every subscriber to handle it.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn an_empty_bucket_and_updates_only_are_caught_up_at_once() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let mut watcher = broker.kv_watch(">", KvWatch::new("empty")).await?;
        assert!(watcher.is_caught_up());
        let status = watcher.status();
        let (entries, catch_up) = read_until_caught_up(&mut watcher).await?;
        assert_eq!((entries, catch_up.entries), (0, 0));
        assert!(status.is_caught_up());
        assert_eq!(status.pending(), 0);

        let store = broker.key_value("full").await?;
        store.put("a", "1".into()).await?;
        let mut updates = broker
            .kv_watch(">", KvWatch::new("full").updates_only(true))
            .await?;
        let (entries, _) = read_until_caught_up(&mut updates).await?;
        assert_eq!(entries, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn catch_up_counts_the_state_of_10000_keys_and_the_whole_history() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let broker = connected_broker(&server).await?;
        broker
            .key_value_with(BucketConfig::new("big").history(3))
            .await?;
        fill(&js, "big", 10_000, 1).await?;

        let mut latest = broker.kv_watch("k.>", KvWatch::new("big")).await?;
        let status = latest.status();
        let (entries, catch_up) = read_until_caught_up(&mut latest).await?;
        assert_eq!((entries, catch_up.entries), (10_000, 10_000));
        assert_eq!(status.caught_up().await, Some(catch_up));
        assert_eq!(status.pending(), 0);

        // Two more revisions of the first 2,000 keys: 14,000 retained in all.
        fill(&js, "big", 2_000, 2).await?;
        let mut history = broker
            .kv_watch("k.>", KvWatch::new("big").include_history(true))
            .await?;
        let (entries, _) = read_until_caught_up(&mut history).await?;
        assert_eq!(entries, 14_000);
        // Afterwards, changes arrive as entries with nothing pending.
        broker
            .key_value("big")
            .await?
            .put("k.1", "new".into())
            .await?;
        let next = history.get_one(EVENT_TIMEOUT).await.context("the change")?;
        assert_eq!((next.key(), next.delta()), ("k.1", 0));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn catch_up_ends_under_a_steady_writer() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let broker = connected_broker(&server).await?;
        broker.key_value("busy").await?;
        fill(&js, "busy", 3_000, 1).await?;
        // A writer keeps overwriting keys during the catch-up (history 1: an overwritten
        // value is gone before it is sent). The reader is faster, so it catches up, and by
        // then it has seen every key.
        let writer = tokio::spawn({
            let js = js.clone();
            async move {
                for n in 0u64.. {
                    let ack = js
                        .publish(format!("$KV.busy.k.{}", n % 3_000), "w".into())
                        .await;
                    if ack.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        });
        let mut watcher = broker.kv_watch("k.>", KvWatch::new("busy")).await?;
        let mut keys = std::collections::HashSet::new();
        let outcome = tokio::time::timeout(EVENT_TIMEOUT * 2, async {
            loop {
                match watcher.next_event().await {
                    Some(WatchEvent::Entry(entry)) => {
                        keys.insert(entry.key().to_owned());
                    }
                    Some(WatchEvent::CaughtUp(catch_up)) => return Some(catch_up),
                    _ => return None,
                }
            }
        })
        .await;
        let catch_up = outcome.context("no catch-up")?.context("the watch ended")?;
        assert_eq!(keys.len(), 3_000, "keys seen when caught up ({catch_up:?})");
        writer.abort();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn after_startup_hooks_wait_until_every_subscriber_has_handled_its_state(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        connected_broker(&server).await?.key_value("seeded").await?;
        fill(&js, "seeded", 2_000, 1).await?;
        for workers in [1, 8] {
            let handled = Arc::new(AtomicU64::new(0));
            let events = Events::default();
            let app = App::new(BrokerConfig::new(server.url()))
                .without_registered()
                .with_state(Arc::clone(&handled))
                .with_state(events.clone())
                .wait_for_catch_up(EVENT_TIMEOUT)
                .subscriber(
                    "slow",
                    "k.*",
                    KvWatch::new("seeded").max_workers(workers),
                    startup::slow_count,
                )
                .hook(
                    faststream_core::HookStage::AfterStartup,
                    "record",
                    startup::record_handled,
                );
            let running = RunningApp::spawn(app);
            let seen = events
                .wait_for("the hook", |events| !events.is_empty())
                .await?;
            running.stop().await??;
            assert_eq!(seen, ["after_startup saw 2000"], "max_workers {workers}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_watch_still_behind_at_the_catch_up_timeout_fails_start_up() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = connected_broker(&server).await?.key_value("stuck").await?;
        store.put("a", "1".into()).await?;
        store.put("b", "2".into()).await?;
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .wait_for_catch_up(Duration::from_millis(500))
            .shutdown_timeout(Duration::from_millis(200))
            .subscriber(
                "stuck_one",
                ">",
                KvWatch::new("stuck"),
                startup::never_returns,
            );
        let error = startup_error(app).await?;
        let Error::CatchUpTimeout { timeout, behind } = &error else {
            anyhow::bail!("expected CatchUpTimeout, got {error:?}");
        };
        assert_eq!(*timeout, Duration::from_millis(500));
        assert_eq!(behind.len(), 1, "{behind:?}");
        assert!(behind[0].contains("stuck_one"), "{error}");
        Ok(())
    })
    .await
}
