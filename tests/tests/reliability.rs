//! Fault injection on real servers: SIGKILL and restart (same port and store), dropped
//! connections, restarts during the initial snapshot and under a running writer, twenty in a
//! row. Asserted from what the handlers recorded: nothing lost, duplicated or stale, no history
//! replayed, no consumer leaked.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use common::{consumer_configs, jetstream, on_each_server, Recorder, RunningApp, EVENT_TIMEOUT};
use faststream_core::kv::BucketConfig;
use faststream_core::{App, HookStage, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::{NatsServer, TcpProxy};

/// Records `key@revision=value`.
async fn record(message: KvMessage, State(events): State<Recorder>) {
    events.push(format!(
        "{}@{}={}",
        message.key(),
        message.revision(),
        String::from_utf8_lossy(message.value())
    ));
}

/// Like [`record`], slowly: 1 ms per entry, so that a snapshot takes a while.
async fn record_slowly(message: KvMessage, events: State<Recorder>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    record(message, events).await;
}

fn revision(event: &str) -> u64 {
    event
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('='))
        .and_then(|(revision, _)| revision.parse().ok())
        .unwrap_or(0)
}

/// Creates `bucket` with `history` through a fresh connection.
async fn create_bucket(server: &NatsServer, bucket: &str, history: i64) -> anyhow::Result<()> {
    let broker = common::connected_broker(server).await?;
    broker
        .key_value_with(BucketConfig::new(bucket).history(history))
        .await?;
    Ok(())
}

/// Puts through a fresh connection, retrying until the server answers.
async fn put_fresh(
    server: &NatsServer,
    bucket: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let attempt = async {
            let store = jetstream(server).await?.get_key_value(bucket).await?;
            anyhow::Ok(store.put(key, Bytes::from(value.to_owned())).await?)
        };
        match attempt.await {
            Ok(revision) => return Ok(revision),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "put failed; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error.context("put after restart")),
        }
    }
}

/// SIGKILL, restart on the same port and store; returns when the server accepts clients.
async fn crash_and_restart(server: &mut NatsServer) -> anyhow::Result<Instant> {
    server.kill().await?;
    server.restart().await?;
    Ok(Instant::now())
}

#[tokio::test]
async fn resumes_promptly_after_a_restart_without_replaying_history() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        create_bucket(&server, "restart", 10).await?;
        put_fresh(&server, "restart", "k.a", "1").await?;
        put_fresh(&server, "restart", "k.a", "2").await?;
        put_fresh(&server, "restart", "k.b", "1").await?;
        put_fresh(&server, "restart", "other", "x").await?;

        let seen = Recorder::default();
        let idle = Recorder::default();
        async fn record_idle(message: KvMessage, State(idle): State<IdleEvents>) {
            idle.0
                .push(format!("{}@{}", message.key(), message.revision()));
        }
        #[derive(Clone)]
        struct IdleEvents(Recorder);
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(seen.clone())
            .with_state(IdleEvents(idle.clone()))
            .subscriber("seen", "k.*", KvWatch::new("restart"), record)
            // Receives nothing before the restart.
            .subscriber("idle", "new.*", KvWatch::new("restart"), record_idle)
            .hook(HookStage::AfterStartup, "started", common::record_started);
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
        assert_eq!(
            seen.events(),
            ["started", "k.a@2=2", "k.b@3=1", &format!("k.a@{a3}=3")]
        );
        assert_eq!(idle.events(), [format!("new.1@{new1}")]);
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
        struct Latest(Recorder);
        async fn record_latest(message: KvMessage, State(latest): State<Latest>) {
            latest
                .0
                .push(format!("{}@{}", message.key(), message.revision()));
        }
        let history = Recorder::default();
        let latest = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
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
                let deadline = Instant::now() + EVENT_TIMEOUT;
                while let Err(error) = store
                    .put(format!("k.{}", i % KEYS), i.to_string().into())
                    .await
                {
                    anyhow::ensure!(Instant::now() < deadline, "writer stuck: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            anyhow::Ok(())
        });
        history
            .wait_for("the first writes", |e| e.len() >= 300)
            .await?;
        crash_and_restart(&mut server).await?;
        writer.await??;

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

        // include_history: every revision exactly once, in order.
        let revisions: Vec<u64> = history.events().iter().map(|e| revision(e)).collect();
        assert_eq!(revisions, (1..=last).collect::<Vec<_>>());

        // default: per key strictly increasing, ending at the bucket's current revision.
        let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
        for event in latest.events() {
            let (key, revision) = event.split_once('@').context("event")?;
            let revision: u64 = revision.parse()?;
            let previous = per_key.insert(key.to_owned(), revision);
            assert!(
                previous < Some(revision),
                "{key}: {previous:?} then {revision}"
            );
        }
        let store = jetstream(&server).await?.get_key_value("busy").await?;
        for (key, seen) in &per_key {
            let current = store.entry(key).await?.context("entry")?.revision;
            assert_eq!(*seen, current, "{key} is stale");
        }
        assert_eq!(per_key.len() as u64, KEYS);
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
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
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
        let revisions: Vec<u64> = events.events().iter().map(|e| revision(e)).collect();
        assert_eq!(revisions, (1..=KEYS).collect::<Vec<_>>());
        Ok(())
    })
    .await
}

/// Waits until the bucket's stream has exactly `expected` consumers.
async fn wait_for_consumers(
    server: &NatsServer,
    bucket: &str,
    expected: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let consumers = consumer_configs(server, bucket).await?.len();
        if consumers == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{consumers} consumers on `{bucket}`, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn twenty_restarts_and_twenty_dropped_connections_leak_no_consumer() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        create_bucket(&server, "churn", 5).await?;
        let proxy = TcpProxy::start(server.port()).await?;
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(proxy.url()))
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
        wait_for_consumers(&server, "churn", 2).await?;
        running.stop().await??;
        let events = events.events();
        assert_eq!(events.len(), 80, "duplicates or losses: {events:?}");
        resume_times.sort();
        eprintln!(
            "40 faults on nats-server {}: resume median {:?}, max {:?}; consumers after: 2",
            server.binary().version,
            resume_times[resume_times.len() / 2],
            resume_times[resume_times.len() - 1]
        );
        Ok(())
    })
    .await
}
