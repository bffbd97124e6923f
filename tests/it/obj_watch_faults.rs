//! Object store subscribers through faults and with workers: a server killed and restarted
//! (nothing replayed, nothing missed), the store deleted and created again (its new objects
//! handled), and `max_workers` never handling one object twice at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::object_store::{Config, ObjectStore};
use faststream_core::{App, BrokerConfig, ObjMessage, ObjWatch, State};
use faststream_testing::NatsServer;

use crate::common::{jetstream, on_each_server, Events, RunningApp, EVENT_TIMEOUT};

/// Puts through a fresh connection, retrying until the server answers (after a restart, or
/// while a store is being created again).
async fn put_fresh(server: &NatsServer, bucket: &str, name: &str) -> anyhow::Result<()> {
    faststream_testing::wait_for("the put", EVENT_TIMEOUT, || async {
        let js = jetstream(server).await?;
        let store = js
            .create_object_store(Config {
                bucket: bucket.to_owned(),
                ..Default::default()
            })
            .await?;
        let put = store.put(name, &mut &b"content"[..]).await;
        let seen = format!("{:?}", put.as_ref().err());
        anyhow::Ok((put.ok().map(|_| ()), seen))
    })
    .await
}

async fn record(object: ObjMessage, State(events): State<Events>) {
    events.push(format!("{}@{}", object.name(), object.revision()));
}

#[tokio::test]
async fn a_server_restart_replays_nothing_and_misses_nothing() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let mut server = server;
        put_fresh(&server, "ledger", "before").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .obj_subscriber(
                "ledger",
                "ledger",
                ObjWatch::new().timeout(Duration::from_secs(1)),
                record,
            );
        let running = RunningApp::spawn(app);
        events.wait_for("the state", |e| !e.is_empty()).await?;
        put_fresh(&server, "ledger", "first").await?;
        events.wait_for("first", |e| e.len() >= 2).await?;
        server.restart().await?;
        put_fresh(&server, "ledger", "after").await?;
        put_fresh(&server, "ledger", "last").await?;
        // A replay would come before the objects written after the restart.
        let all = events
            .wait_for("the last object", |e| {
                e.iter().any(|e| e.starts_with("last@"))
            })
            .await?;
        running.stop().await??;
        let names: Vec<&str> = all
            .iter()
            .map(|e| e.split('@').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["before", "first", "after", "last"], "{all:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_store_deleted_and_created_again_is_watched_anew() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        put_fresh(&server, "cycled", "old").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .obj_subscriber(
                "cycled",
                "cycled",
                ObjWatch::new().timeout(Duration::from_secs(1)),
                record,
            );
        let running = RunningApp::spawn(app);
        events.wait_for("the old object", |e| !e.is_empty()).await?;
        jetstream(&server)
            .await?
            .delete_object_store("cycled")
            .await?;
        put_fresh(&server, "cycled", "new").await?;
        let all = events
            .wait_for("the new object", |e| {
                e.iter().any(|e| e.starts_with("new@"))
            })
            .await?;
        running.stop().await??;
        // The new store starts its sequence again (chunk 1, metadata 2): its object is
        // handled, not dropped as older than what the old store delivered.
        assert_eq!(all, ["old@2", "new@2"]);
        Ok(())
    })
    .await
}

/// Calls in flight per object name, and what was seen of them.
#[derive(Clone, Default)]
struct InFlight {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    overlaps: Arc<Mutex<Vec<String>>>,
    most_at_once: Arc<Mutex<usize>>,
}

async fn slow_record(object: ObjMessage, State(flight): State<InFlight>, events: State<Events>) {
    let name = object.name().to_owned();
    {
        let mut calls = flight.calls.lock().unwrap_or_else(|e| e.into_inner());
        let count = calls.entry(name.clone()).or_default();
        *count += 1;
        if *count > 1 {
            flight
                .overlaps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name.clone());
        }
        let total: usize = calls.values().sum();
        let mut most = flight
            .most_at_once
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *most = (*most).max(total);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    if let Some(count) = flight
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&name)
    {
        *count -= 1;
    }
    record(object, events).await;
}

#[tokio::test]
async fn max_workers_never_handles_one_object_twice_at_once() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let flight = InFlight::default();
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_state(flight.clone())
            .obj_subscriber(
                "parallel",
                "parallel",
                ObjWatch::new().max_workers(4),
                slow_record,
            );
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        let store: ObjectStore = faststream_testing::wait_for("the store", EVENT_TIMEOUT, || {
            let js = js.clone();
            async move {
                let store = js.get_object_store("parallel").await;
                let seen = format!("{:?}", store.as_ref().err());
                anyhow::Ok((store.ok(), seen))
            }
        })
        .await?;
        // Six objects, five versions each, written as fast as the store takes them.
        for version in 0..5 {
            for object in 0..6 {
                let content = format!("{object}.{version}");
                store
                    .put(format!("o{object}").as_str(), &mut content.as_bytes())
                    .await?;
            }
        }
        let all = events
            .wait_for("the last versions", |e| e.len() >= 30)
            .await?;
        running.stop().await??;
        assert_eq!(all.len(), 30, "{all:?}");
        let overlaps = flight
            .overlaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert!(overlaps.is_empty(), "handled twice at once: {overlaps:?}");
        let most = *flight
            .most_at_once
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            most > 1,
            "never more than one call at once: the workers did not run"
        );
        // Per object, revisions in increasing order.
        let mut last: HashMap<&str, u64> = HashMap::new();
        for event in &all {
            let (name, revision) = event.split_once('@').unwrap_or((event, "0"));
            let revision: u64 = revision.parse()?;
            let previous = last.insert(name, revision).unwrap_or(0);
            assert!(revision > previous, "{name} out of order in {all:?}");
        }
        Ok(())
    })
    .await
}
