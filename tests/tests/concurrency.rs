//! `max_workers`: handler calls run concurrently up to the limit, but the entries of one key are
//! never handled concurrently and always in revision order.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_each_server, Recorder, RunningApp};
use faststream_core::kv::BucketConfig;
use faststream_core::{App, KvMessage, KvWatch, NatsBroker, State};

/// What the handlers saw, shared by all calls.
#[derive(Clone, Default)]
struct Observed {
    in_flight_keys: Arc<Mutex<HashSet<String>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    overlaps: Arc<AtomicUsize>,
    order: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
    done: Recorder,
}

async fn observe(message: KvMessage, State(seen): State<Observed>) {
    let key = message.key().to_owned();
    let fresh = seen
        .in_flight_keys
        .lock()
        .map(|mut keys| keys.insert(key.clone()))
        .unwrap_or(false);
    if !fresh {
        seen.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
    // Uneven work, so that keys overtake each other.
    tokio::time::sleep(Duration::from_micros(200 * (message.revision() % 7))).await;
    if let Ok(mut order) = seen.order.lock() {
        order
            .entry(key.clone())
            .or_default()
            .push(message.revision());
    }
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Ok(mut keys) = seen.in_flight_keys.lock() {
        keys.remove(&key);
    }
    seen.done.push(message.revision().to_string());
}

mod attribute {
    use super::{observe, Observed};
    use faststream_core::{subscriber, KvMessage, KvWatch, State};

    #[subscriber("k.*", kv_watch = KvWatch::new("sharded").include_history(true), max_workers = 8)]
    async fn sharded(message: KvMessage, seen: State<Observed>) {
        observe(message, seen).await;
    }
}

async fn run_case(
    server: &faststream_testing::NatsServer,
    app: App,
    seen: &Observed,
    max: usize,
) -> anyhow::Result<()> {
    const KEYS: u64 = 20;
    const PER_KEY: u64 = 50;
    // Written before the app starts, so that the whole history arrives in one burst.
    let broker = common::connected_broker(server).await?;
    let store = broker
        .key_value_with(BucketConfig::new("sharded").history(64))
        .await?;
    for i in 0..KEYS * PER_KEY {
        store
            .put(format!("k.{}", i % KEYS), i.to_string().into())
            .await?;
    }
    let running = RunningApp::spawn(app);
    let total = (KEYS * PER_KEY) as usize;
    seen.done
        .wait_for("every entry", |e| e.len() >= total)
        .await?;
    running.stop().await??;

    assert_eq!(
        seen.overlaps.load(Ordering::SeqCst),
        0,
        "a key was handled concurrently"
    );
    let most = seen.most_in_flight.load(Ordering::SeqCst);
    assert!(
        most > 1 && most <= max,
        "at most {most} calls at once (limit {max})"
    );
    let order = seen
        .order
        .lock()
        .map(|order| order.clone())
        .unwrap_or_default();
    assert_eq!(order.len() as u64, KEYS);
    for (key, revisions) in order {
        assert_eq!(revisions.len() as u64, PER_KEY, "{key}");
        assert!(
            revisions.windows(2).all(|pair| pair[0] < pair[1]),
            "{key}: {revisions:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_under_concurrent_workers() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let seen = Observed::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(seen.clone())
            .subscriber(
                "sharded",
                "k.*",
                KvWatch::new("sharded")
                    .include_history(true)
                    .max_workers(16),
                observe,
            );
        run_case(&server, app, &seen, 16).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_workers_in_the_attribute() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let seen = Observed::default();
        let app = App::new(NatsBroker::new(server.url()))
            .only_module(concat!(module_path!(), "::attribute"))
            .with_state(seen.clone());
        run_case(&server, app, &seen, 8).await
    })
    .await
}
