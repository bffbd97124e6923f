//! Connections lost: a long outage, twenty cuts with 64 workers busy, a closed connection.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn an_outage_longer_than_the_timeout_leaks_no_consumer() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        const OUTAGE: Duration = Duration::from_secs(20);
        create_bucket(&server, "outage", 10).await?;
        let events = Named::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("latest", ">", KvWatch::new("outage"), record_as("latest"))
            .subscriber(
                "history",
                ">",
                KvWatch::new("outage").include_history(true),
                record_as("history"),
            )
            .subscriber(
                "workers",
                ">",
                KvWatch::new("outage").max_workers(8),
                record_as("workers"),
            );
        let running = RunningApp::spawn(app);
        // A fourth watcher polled with `get_one`, which drops `next()` every 100 ms.
        let broker = crate::common::connected_broker(&server).await?;
        let mut direct = broker.kv_watch(">", KvWatch::new("outage")).await?;
        let polled = Events::default();
        let poller = {
            let polled = polled.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(entry) = direct.get_one(Duration::from_millis(100)).await {
                        polled.push(format!("{}@{}", entry.key(), entry.revision()));
                    }
                }
            })
        };
        let before = put_fresh(&server, "outage", "k", "before").await?;
        polled.wait_for_event(&format!("k@{before}")).await?;
        wait_for_consumers(&server, "outage", 4, EVENT_TIMEOUT).await?;

        server.stop().await?;
        tokio::time::sleep(OUTAGE).await; // The fault itself, not a wait for an event.
        server.restart().await?;
        let back = Instant::now();
        let after = put_fresh(&server, "outage", "k", "after").await?;
        let expected = format!("k@{after}=after");
        events
            .0
            .wait_for("every subscriber's entry", |e| {
                ["latest", "history", "workers"]
                    .iter()
                    .all(|name| of(e, name).contains(&expected))
            })
            .await?;
        polled.wait_for_event(&format!("k@{after}")).await?;
        let resumed = back.elapsed();
        // Within 5 s of resuming: long before any inactive threshold (30 s) would clean up.
        let counted = Instant::now();
        let leak = wait_for_consumers(&server, "outage", 4, Duration::from_secs(5)).await;
        eprintln!(
            "{OUTAGE:?} outage on nats-server {}: all four watchers had the first entry {resumed:?} \
             after the server was back; consumers {:?} later: {}",
            server.binary().version,
            counted.elapsed(),
            consumer_configs(&server, "outage").await?.len()
        );
        leak?;
        anyhow::ensure!(resumed < RESUME_BOUND, "resumed only after {resumed:?}");
        poller.abort();
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn twenty_cuts_with_64_workers_and_entries_pending_leak_no_consumer() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const KEYS: u64 = 200;
        create_bucket(&server, "cuts", 64).await?;
        let proxy = TcpProxy::start(server.port()).await?;
        let events = Events::default();
        // Slow calls, so that calls keep finishing (and `next()` keeps being dropped) while
        // the watch is being re-created.
        async fn record_slowly_10(message: KvMessage, events: State<Events>) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            record(message, events).await;
        }
        let app = App::new(BrokerConfig::new(proxy.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber(
                "workers",
                ">",
                KvWatch::new("cuts").include_history(true).max_workers(64),
                record_slowly_10,
            );
        let running = RunningApp::spawn(app);
        let writer_js = jetstream(&server).await?;
        let store = writer_js.get_key_value("cuts").await?;
        let mut resume_times = Vec::new();
        for round in 0..20u64 {
            // Entries pending: a burst the workers are still handling when the cut comes.
            for i in 0..KEYS {
                store
                    .put(format!("k.{i}"), round.to_string().into())
                    .await?;
            }
            proxy.cut();
            let back = Instant::now();
            let value = format!("marker{round}");
            let revision = put_fresh(&server, "cuts", "marker", &value).await?;
            events
                .wait_for_event(&format!("marker@{revision}={value}"))
                .await?;
            resume_times.push(back.elapsed());
        }
        let last = writer_js
            .get_stream("KV_cuts")
            .await?
            .cached_info()
            .state
            .last_sequence;
        anyhow::ensure!(
            last > 20 * KEYS,
            "the stream lost writes: last sequence {last}"
        );
        events
            .wait_for("every revision", |e| e.len() as u64 >= last)
            .await?;
        let counted = Instant::now();
        wait_for_consumers(&server, "cuts", 1, Duration::from_secs(5)).await?;
        let counted = counted.elapsed();
        running.stop().await??;
        let mut revisions: Vec<u64> = events.snapshot().iter().map(|e| revision(e)).collect();
        revisions.sort_unstable();
        assert_eq!(
            revisions,
            (1..=last).collect::<Vec<_>>(),
            "lost or repeated"
        );
        resume_times.sort();
        eprintln!(
            "20 cuts with 64 workers on nats-server {}: resume median {:?}, max {:?}; \
             consumers {counted:?} after the last entry: 1",
            server.binary().version,
            resume_times[resume_times.len() / 2],
            resume_times[resume_times.len() - 1]
        );
        anyhow::ensure!(resume_times[resume_times.len() - 1] < RESUME_BOUND);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_closed_connection_ends_the_watch() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        create_bucket(&server, "closing", 1).await?;
        let broker = crate::common::connected_broker(&server).await?;
        let options = KvWatch::new("closing").timeout(Duration::from_millis(500));
        let mut watcher = broker.kv_watch(">", options).await?;
        let next = tokio::spawn(async move { watcher.next().await.map(|e| e.revision()) });
        // The bucket goes away: the watch is left re-creating its consumer (it notices within
        // its 500 ms timeout) when the connection closes.
        jetstream(&server)
            .await?
            .delete_key_value("closing")
            .await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        broker.client()?.drain().await?;
        let ended = tokio::time::timeout(EVENT_TIMEOUT, next)
            .await
            .context("next() did not end after the connection closed")??;
        assert_eq!(ended, None);
        Ok(())
    })
    .await
}
