//! Fault injection on real servers: SIGKILL and restart (same port and store), dropped
//! connections, restarts during the initial snapshot and under a running writer, twenty in a
//! row, a 20 s outage, twenty cuts with 64 workers, a bucket deleted and created again, a memory
//! stream whose sequence goes back, a closed connection. Asserted from what the handlers
//! recorded and from the server's consumer list: nothing lost, duplicated or stale, no history
//! replayed, no consumer leaked, the first entry within 5 s of the server being back.

mod common;

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
        assert!(resumed < RESUME_BOUND, "resumed only after {resumed:?}");
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

        let history: Vec<u64> = history.events().iter().map(|e| revision(e)).collect();
        let store = jetstream(&server).await?.get_key_value("busy").await?;
        common::assert_watch_guarantees(&store, &history, &latest.events(), last, KEYS).await?;
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

/// The first entry after a fault must arrive within this long of the server accepting
/// connections again (measured figures are far lower; see the printed lines).
const RESUME_BOUND: Duration = Duration::from_secs(5);

/// Entries of subscriber `name`, recorded as `name key@revision=value`.
#[derive(Clone, Default)]
struct Named(Recorder);

/// A handler recording `name key@revision=value`.
fn record_as(
    name: &'static str,
) -> impl Fn(
    KvMessage,
    State<Named>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |message, State(named)| {
        Box::pin(async move {
            named.0.push(format!(
                "{name} {}@{}={}",
                message.key(),
                message.revision(),
                String::from_utf8_lossy(message.value())
            ));
        })
    }
}

/// The events of subscriber `name`, without the name.
fn of(events: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{name} ");
    events
        .iter()
        .filter_map(|event| event.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_bucket_deleted_and_created_again_is_watched_from_its_start() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        create_bucket(&server, "again", 5).await?;
        let events = Named::default();
        // A short timeout: a deleted stream takes the consumer with it, silently, and the
        // watch notices the silence after `timeout`.
        let watch = || KvWatch::new("again").timeout(Duration::from_secs(1));
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("latest", "k.*", watch(), record_as("latest"))
            .subscriber("history", "k.*", watch().include_history(true), record_as("history"))
            .subscriber("updates", "k.*", watch().updates_only(true), record_as("updates"))
            .hook(HookStage::AfterStartup, "started", |State(events): State<Named>| async move {
                events.0.push("started");
            });
        put_fresh(&server, "again", "k.a", "old1").await?;
        put_fresh(&server, "again", "k.b", "old2").await?;
        let running = RunningApp::spawn(app);
        events.0.wait_for_event("started").await?;
        put_fresh(&server, "again", "k.c", "old3").await?;
        events
            .0
            .wait_for("the old entries", |e| {
                ["latest", "history", "updates"]
                    .iter()
                    .all(|name| of(e, name).contains(&"k.c@3=old3".to_owned()))
            })
            .await?;

        let js = jetstream(&server).await?;
        js.delete_key_value("again").await?;
        // Absence can only be watched over a while: the watches must not re-create the bucket
        // while each has noticed (timeout 1 s) and looked it up several times.
        let window = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < window {
            anyhow::ensure!(
                js.get_stream("KV_again").await.is_err(),
                "the bucket was re-created behind the operator's back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        create_bucket(&server, "again", 5).await?;
        let created = Instant::now();
        put_fresh(&server, "again", "k.a", "new1").await?;
        put_fresh(&server, "again", "k.b", "new2").await?;
        let all = events
            .0
            .wait_for("the new bucket's entries", |e| {
                ["latest", "history", "updates"]
                    .iter()
                    .all(|name| of(e, name).contains(&"k.b@2=new2".to_owned()))
            })
            .await?;
        let resumed = created.elapsed();
        wait_for_consumers_within(&server, "again", 3, Duration::from_secs(5)).await?;
        eprintln!(
            "re-created bucket on nats-server {}: new entries within {resumed:?}; consumers after: 3",
            server.binary().version
        );
        running.stop().await??;
        assert_eq!(
            of(&all, "latest"),
            ["k.a@1=old1", "k.b@2=old2", "k.c@3=old3", "k.a@1=new1", "k.b@2=new2"]
        );
        assert_eq!(of(&all, "history"), of(&all, "latest"));
        assert_eq!(of(&all, "updates"), ["k.c@3=old3", "k.a@1=new1", "k.b@2=new2"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stream_sequence_going_back_restarts_the_watch() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        // Memory storage: a restart keeps the bucket but not its entries; revisions start over.
        let broker = common::connected_broker(&server).await?;
        broker
            .key_value_with(
                BucketConfig::new("volatile")
                    .history(5)
                    .storage(faststream_core::kv::StorageType::Memory),
            )
            .await?;
        drop(broker);
        for value in ["1", "2", "3"] {
            put_fresh(&server, "volatile", "k", value).await?;
        }
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber(
                "v",
                "k",
                KvWatch::new("volatile").include_history(true),
                record,
            );
        let running = RunningApp::spawn(app);
        events.wait_for_event("k@3=3").await?;
        let back = crash_and_restart(&mut server).await?;
        // 2.9 forgets a memory stream on restart; declaring it again is what a service would do.
        if jetstream(&server)
            .await?
            .get_stream("KV_volatile")
            .await
            .is_err()
        {
            let broker = common::connected_broker(&server).await?;
            broker
                .key_value_with(
                    BucketConfig::new("volatile")
                        .history(5)
                        .storage(faststream_core::kv::StorageType::Memory),
                )
                .await?;
        }
        let revision = put_fresh(&server, "volatile", "k", "after").await?;
        anyhow::ensure!(
            revision == 1,
            "the memory stream kept its sequence: {revision}"
        );
        events.wait_for_event("k@1=after").await?;
        eprintln!(
            "sequence gone back on nats-server {}: first entry {:?} after the server was back",
            server.binary().version,
            back.elapsed()
        );
        wait_for_consumers_within(&server, "volatile", 1, Duration::from_secs(5)).await?;
        running.stop().await??;
        assert_eq!(events.events(), ["k@1=1", "k@2=2", "k@3=3", "k@1=after"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_outage_longer_than_the_timeout_leaks_no_consumer() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        const OUTAGE: Duration = Duration::from_secs(20);
        create_bucket(&server, "outage", 10).await?;
        let events = Named::default();
        let app = App::new(NatsBroker::new(server.url()))
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
        let broker = common::connected_broker(&server).await?;
        let mut direct = broker.kv_watch(">", KvWatch::new("outage")).await?;
        let polled = Recorder::default();
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
        wait_for_consumers(&server, "outage", 4).await?;

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
        let leak = wait_for_consumers_within(&server, "outage", 4, Duration::from_secs(5)).await;
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

/// Waits until the bucket's stream has exactly `expected` consumers, at most `within`.
async fn wait_for_consumers_within(
    server: &NatsServer,
    bucket: &str,
    expected: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let names: Vec<String> = consumer_configs(server, bucket)
            .await?
            .into_iter()
            .map(|config| config.name.unwrap_or_default())
            .collect();
        if names.len() == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} consumers on `{bucket}` after {within:?}, expected {expected}: {names:?}",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn twenty_cuts_with_64_workers_and_entries_pending_leak_no_consumer() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const KEYS: u64 = 200;
        create_bucket(&server, "cuts", 64).await?;
        let proxy = TcpProxy::start(server.port()).await?;
        let events = Recorder::default();
        // Slow calls, so that calls keep finishing (and `next()` keeps being dropped) while
        // the watch is being re-created.
        async fn record_slowly_10(message: KvMessage, events: State<Recorder>) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            record(message, events).await;
        }
        let app = App::new(NatsBroker::new(proxy.url()))
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
        wait_for_consumers_within(&server, "cuts", 1, Duration::from_secs(5)).await?;
        let counted = counted.elapsed();
        running.stop().await??;
        let mut revisions: Vec<u64> = events.events().iter().map(|e| revision(e)).collect();
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

/// Records `key@revision=round` (the round is the value's first byte), 1 ms per entry.
async fn record_round(message: KvMessage, State(events): State<Recorder>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let round = message
        .value()
        .first()
        .map_or('?', |byte| char::from(*byte));
    events.push(format!("{}@{}={round}", message.key(), message.revision()));
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
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
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
        let events = events.events();
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

#[tokio::test]
async fn a_closed_connection_ends_the_watch() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        create_bucket(&server, "closing", 1).await?;
        let broker = common::connected_broker(&server).await?;
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
