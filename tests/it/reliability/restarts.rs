//! Server restarts (SIGKILL, same port and store): idle, under a writer, during the initial
//! snapshot, twenty in a row.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn resumes_promptly_after_a_restart_without_replaying_history() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        create_bucket(&server, "restart", 10).await?;
        put_fresh(&server, "restart", "k.a", "1").await?;
        put_fresh(&server, "restart", "k.a", "2").await?;
        put_fresh(&server, "restart", "k.b", "1").await?;
        put_fresh(&server, "restart", "other", "x").await?;

        let seen = Events::default();
        let idle = Events::default();
        async fn record_idle(message: KvMessage, State(idle): State<IdleEvents>) {
            idle.0
                .push(format!("{}@{}", message.key(), message.revision()));
        }
        #[derive(Clone)]
        struct IdleEvents(Events);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(seen.clone())
            .with_state(IdleEvents(idle.clone()))
            .subscriber("seen", "k.*", KvWatch::new("restart"), record)
            // Receives nothing before the restart.
            .subscriber("idle", "new.*", KvWatch::new("restart"), record_idle)
            .hook(
                HookStage::AfterStartup,
                "started",
                crate::common::record_started,
            );
        let running = RunningApp::spawn(app);
        seen.wait_for("the snapshot", |e| e.len() >= 3).await?;

        let back = crash_and_restart(&mut server).await?;
        let a3 = put_fresh(&server, "restart", "k.a", "3").await?;
        let new1 = put_fresh(&server, "restart", "new.1", "x").await?;
        let resumed = seen
            .wait_for_event(&format!("k.a@{a3}=3"))
            .await
            .map(|_| back.elapsed())?;
        idle.wait_for_event(&format!("new.1@{new1}")).await?;
        eprintln!(
            "resume on nats-server {}: first entry {resumed:?} after the server was back",
            server.binary().version
        );
        running.stop().await??;
        assert!(resumed < RESUME_BOUND, "resumed only after {resumed:?}");
        assert_eq!(
            seen.snapshot(),
            ["started", "k.a@2=2", "k.b@3=1", &format!("k.a@{a3}=3")]
        );
        assert_eq!(idle.snapshot(), [format!("new.1@{new1}")]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn every_revision_once_across_a_restart_under_a_running_writer() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        const WRITES: u64 = 1500;
        const KEYS: u64 = 50;
        create_bucket(&server, "busy", 64).await?;
        #[derive(Clone)]
        struct Latest(Events);
        async fn record_latest(message: KvMessage, State(latest): State<Latest>) {
            latest
                .0
                .push(format!("{}@{}", message.key(), message.revision()));
        }
        let history = Events::default();
        let latest = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(history.clone())
            .with_state(Latest(latest.clone()))
            .subscriber(
                "history",
                ">",
                KvWatch::new("busy").include_history(true),
                record,
            )
            .subscriber("latest", ">", KvWatch::new("busy"), record_latest);
        let running = RunningApp::spawn(app);

        // The writer keeps one reconnecting connection and retries failed puts.
        let writer_js = jetstream(&server).await?;
        let writer = tokio::spawn(async move {
            let store = writer_js.get_key_value("busy").await?;
            for i in 0..WRITES {
                faststream_testing::wait_for("the writer's put", EVENT_TIMEOUT, || async {
                    let key = format!("k.{}", i % KEYS);
                    anyhow::Ok(Some(store.put(key, i.to_string().into()).await?))
                })
                .await?;
            }
            anyhow::Ok(())
        });
        history
            .wait_for("the first writes", |e| e.len() >= 300)
            .await?;
        let back = crash_and_restart(&mut server).await?;
        // A marker put through a fresh connection: the writer's own put in flight at the crash
        // waits out its request timeout, which says nothing about the watch.
        let marker = put_fresh(&server, "busy", "k.0", "marker").await?;
        history
            .wait_for_event(&format!("k.0@{marker}=marker"))
            .await?;
        let resumed = back.elapsed();
        writer.await??;
        eprintln!(
            "restart under a writer on nats-server {}: next entry {resumed:?} after the server was back",
            server.binary().version
        );
        anyhow::ensure!(resumed < RESUME_BOUND, "resumed only after {resumed:?}");

        let stream = jetstream(&server).await?.get_stream("KV_busy").await?;
        let last = stream.cached_info().state.last_sequence;
        anyhow::ensure!(
            last >= WRITES,
            "the stream lost writes: last sequence {last}"
        );
        history
            .wait_for("every revision", |e| {
                e.last().is_some_and(|e| revision(e) == last)
            })
            .await?;
        latest
            .wait_for("the last revision", |e| {
                e.iter().any(|e| e.ends_with(&format!("@{last}")))
            })
            .await?;
        running.stop().await??;

        let history: Vec<u64> = history.snapshot().iter().map(|e| revision(e)).collect();
        let store = jetstream(&server).await?.get_key_value("busy").await?;
        crate::common::assert_watch_guarantees(&store, &history, &latest.snapshot(), last, KEYS).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn restart_during_the_initial_snapshot_loses_and_repeats_nothing() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        const KEYS: u64 = 2000;
        create_bucket(&server, "snapshot", 1).await?;
        let store = jetstream(&server).await?.get_key_value("snapshot").await?;
        for i in 0..KEYS {
            store
                .put(format!("k.{i}"), Bytes::from_static(b"v"))
                .await?;
        }
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("snapshot", "k.*", KvWatch::new("snapshot"), record_slowly);
        let running = RunningApp::spawn(app);
        events
            .wait_for("part of the snapshot", |e| e.len() >= 300)
            .await?;
        crash_and_restart(&mut server).await?;
        events
            .wait_for("the whole snapshot", |e| {
                e.last().is_some_and(|e| revision(e) == KEYS)
            })
            .await?;
        running.stop().await??;
        let revisions: Vec<u64> = events.snapshot().iter().map(|e| revision(e)).collect();
        assert_eq!(revisions, (1..=KEYS).collect::<Vec<_>>());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn twenty_restarts_and_twenty_dropped_connections_leak_no_consumer() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        create_bucket(&server, "churn", 5).await?;
        let proxy = TcpProxy::start(server.port()).await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(proxy.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("first", "k", KvWatch::new("churn"), record)
            .subscriber(
                "second",
                ">",
                KvWatch::new("churn").include_history(true),
                record,
            );
        let running = RunningApp::spawn(app);
        let mut resume_times = Vec::new();
        for round in 0..40 {
            let back = if round % 2 == 0 {
                crash_and_restart(&mut server).await?
            } else {
                proxy.cut();
                Instant::now()
            };
            let value = format!("round{round}");
            let revision = put_fresh(&server, "churn", "k", &value).await?;
            let expected = format!("k@{revision}={value}");
            events
                .wait_for(&expected, |e| {
                    e.iter().filter(|e| **e == expected).count() == 2
                })
                .await?;
            resume_times.push(back.elapsed());
        }
        wait_for_consumers(&server, "churn", 2, EVENT_TIMEOUT).await?;
        running.stop().await??;
        let events = events.snapshot();
        assert_eq!(events.len(), 80, "duplicates or losses: {events:?}");
        resume_times.sort();
        let max = resume_times[resume_times.len() - 1];
        eprintln!(
            "40 faults on nats-server {}: resume median {:?}, max {max:?}; consumers after: 2",
            server.binary().version,
            resume_times[resume_times.len() / 2],
        );
        anyhow::ensure!(max < RESUME_BOUND, "resumed only after {max:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_latest_per_key_watch_restarted_mid_snapshot_delivers_no_superseded_value(
) -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        const KEYS: u64 = 1200;
        create_bucket(&server, "superseded", 10).await?;
        let store = jetstream(&server)
            .await?
            .get_key_value("superseded")
            .await?;
        // Every key once, then the second half again: the snapshot holds the first half's
        // first revisions, then the second half's second ones, and the second half's first
        // revisions lie between them in the stream. Values of 8 KiB, so that the server's flow
        // control holds back most of the snapshot and the restart re-creates the watch midway.
        let value = |round: u8| Bytes::from(vec![b'0' + round; 8192]);
        for i in 0..KEYS {
            store.put(format!("k.{i}"), value(1)).await?;
        }
        for i in KEYS / 2..KEYS {
            store.put(format!("k.{i}"), value(2)).await?;
        }
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("latest", "k.*", KvWatch::new("superseded"), record_round);
        let running = RunningApp::spawn(app);
        events
            .wait_for("part of the snapshot", |e| e.len() >= 100)
            .await?;
        crash_and_restart(&mut server).await?;
        let last = KEYS + KEYS / 2;
        events
            .wait_for("the whole snapshot", |e| {
                e.last().is_some_and(|e| revision(e) == last)
            })
            .await?;
        running.stop().await??;
        let events = events.snapshot();
        let stale: Vec<&str> = events
            .iter()
            .filter(|e| {
                let key: u64 = e[2..]
                    .split('@')
                    .next()
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0);
                key >= KEYS / 2 && e.ends_with("=1")
            })
            .map(String::as_str)
            .take(5)
            .collect();
        assert!(stale.is_empty(), "superseded values delivered: {stale:?}…");
        assert_eq!(events.len() as u64, KEYS, "each key once");
        Ok(())
    })
    .await
}
