//! `max_workers`: handler calls run concurrently up to the limit, but the entries of one key are
//! never handled concurrently and always in revision order.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{on_each_server, Events, RunningApp};
use faststream_core::kv::BucketConfig;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, State};

/// What the handlers saw, shared by all calls.
#[derive(Clone, Default)]
struct Observed {
    in_flight_keys: Arc<Mutex<HashSet<String>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    overlaps: Arc<AtomicUsize>,
    order: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
    done: Events,
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
    let broker = crate::common::connected_broker(server).await?;
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
        let app = App::new(BrokerConfig::new(server.url()))
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
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::attribute"))
            .with_state(seen.clone());
        run_case(&server, app, &seen, 8).await
    })
    .await
}

/// Panics when dropped: held by a handler, it panics outside the handler's own future when a
/// handler timeout abandons the call (the call is dropped by the dispatcher, not unwound).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a guard's Drop panicked");
        }
    }
}

#[derive(Clone, Default)]
struct Handled(Events);

/// `stuck` never finishes (the handler timeout drops it, and the guard's Drop panics); any
/// other value is recorded as `<subscriber> <value>`.
async fn stuck_or_record(message: KvMessage, State(handled): State<Handled>) {
    let value = String::from_utf8_lossy(message.value()).into_owned();
    if value == "stuck" {
        let _guard = PanicsOnDrop;
        std::future::pending::<()>().await;
    }
    handled.0.push(format!("{} {value}", message.bucket()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_outside_the_handler_future_stops_neither_key_nor_subscriber() -> anyhow::Result<()>
{
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let mut stores = Vec::new();
        for bucket in ["sequential", "concurrent"] {
            stores.push(
                broker
                    .key_value_with(BucketConfig::new(bucket).history(64))
                    .await?,
            );
        }
        let handled = Handled::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(handled.clone())
            .with_state(handled.0.clone())
            .handler_timeout(Duration::from_millis(200))
            .subscriber(
                "sequential",
                "k",
                KvWatch::new("sequential"),
                stuck_or_record,
            )
            .subscriber(
                "concurrent",
                "k",
                KvWatch::new("concurrent").max_workers(4),
                stuck_or_record,
            )
            .hook(
                faststream_core::HookStage::AfterStartup,
                "started",
                crate::common::record_started,
            );
        let running = RunningApp::spawn(app);
        handled.0.wait_for_event("started").await?;
        for store in &stores {
            store.put("k", "stuck".into()).await?;
            store.put("k", "after".into()).await?;
        }
        // The same key goes on, in both subscribers, after the panic.
        handled.0.wait_for_event("sequential after").await?;
        handled.0.wait_for_event("concurrent after").await?;
        for store in &stores {
            store.put("k", "again".into()).await?;
        }
        handled.0.wait_for_event("sequential again").await?;
        handled.0.wait_for_event("concurrent again").await?;
        running.stop().await??;
        Ok(())
    })
    .await
}
