//! A handler's `KvView` of the bucket it watches is not behind the entry being handled: as a
//! new user would write it, a handler on bucket `shop` takes views of `shop` and must find the
//! key that triggered it (at least at the triggering revision), and the keys written before it
//! under another pattern, on every call.

use super::*;
use faststream_core::kv::KvViewOptions;
use faststream_core::{BrokerConfig, KvMessage};

/// What the handlers read: `{"n": <the write's number>}`.
#[derive(Debug, Deserialize)]
struct Order {
    n: u64,
}

/// The same values under another key pattern (`cfg.*`): a view that never sees `orders.*`.
#[derive(Debug, Deserialize)]
struct Setting {
    n: u64,
}

/// Calls that saw what they should, and the rest, described.
#[derive(Clone, Default)]
struct Calls(crate::common::Recorder<Result<String, String>>);

/// Checks, on each call for `orders.<i>` written as `{"n": n}`: the order view holds the key at
/// `n` or later, and the setting view holds `cfg.<i>`, written just before the order.
async fn check_views(
    message: KvMessage,
    orders: KvView<Order>,
    settings: KvView<Setting>,
    State(calls): State<Calls>,
) {
    let key = message.key().to_owned();
    let written: Option<u64> = serde_json::from_slice::<serde_json::Value>(message.value())
        .ok()
        .and_then(|value| value["n"].as_u64());
    let index = key.strip_prefix("orders.").unwrap_or_default();
    let own = orders.get(&key).map(|order| order.n);
    let setting = settings
        .get(&format!("cfg.{index}"))
        .map(|setting| setting.n);
    let fine = written.is_some() && own >= written && setting.is_some();
    let seen = format!(
        "{key}@{} wrote {written:?}: order view {own:?} (revision {}), setting view {setting:?} \
         (revision {})",
        message.revision(),
        orders.revision(),
        settings.revision()
    );
    calls.0.push(if fine { Ok(key) } else { Err(seen) });
}

#[tokio::test]
async fn a_handler_finds_its_entry_in_a_view_of_its_own_bucket() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        broker
            .key_value_with(BucketConfig::new("shop").history(5))
            .await?;
        let calls = Calls::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(calls.clone())
            .with_kv_view::<Order>("shop", "orders.*")
            .with_kv_view::<Setting>("shop", "cfg.*")
            .subscriber(
                "one_at_a_time",
                "orders.*",
                KvWatch::new("shop"),
                check_views,
            )
            .subscriber(
                "eight_at_once",
                "orders.*",
                KvWatch::new("shop").max_workers(8),
                check_views,
            );
        let running = RunningApp::spawn(app);
        // The app is running once its watches exist: the bucket has their consumers.
        let views_and_subscribers = 4;
        faststream_testing::wait_for("the app's consumers", EVENT_TIMEOUT, || async {
            let consumers = crate::common::consumer_configs(&server, "shop")
                .await?
                .len();
            anyhow::Ok((
                (consumers == views_and_subscribers).then_some(()),
                consumers,
            ))
        })
        .await?;

        // Written as fast as the server takes them, pipelined: a setting, then an order, each
        // order rewritten once, so a call may also come for an older revision of its key.
        let js = jetstream(&server).await?;
        let before = crate::common::client_messages(&server).await?;
        const ORDERS: u64 = 400;
        let mut acks = Vec::new();
        for n in 0..ORDERS * 2 {
            let index = n % ORDERS;
            let value = format!(r#"{{"n":{n}}}"#);
            acks.push(
                js.publish(format!("$KV.shop.cfg.{index}"), value.clone().into())
                    .await?,
            );
            acks.push(
                js.publish(format!("$KV.shop.orders.{index}"), value.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        let all = calls
            .0
            .wait_for_within("every call", Duration::from_secs(60), |calls| {
                calls.len() as u64 >= ORDERS * 2 * 2
            })
            .await?;
        // What the app sent while handling them (lookups, flow-control answers): every message
        // from a client, less the writer's.
        let sent = crate::common::client_messages(&server).await? - before - ORDERS * 2 * 2;
        eprintln!(
            "nats-server {}: {} calls, the app sent {sent} messages meanwhile",
            server.binary().version,
            all.len()
        );
        running.stop().await??;
        let behind: Vec<&String> = all.iter().filter_map(|call| call.as_ref().err()).collect();
        assert!(
            behind.is_empty(),
            "{} of {} calls saw a view behind their entry, e.g. {:?}",
            behind.len(),
            all.len(),
            &behind[..behind.len().min(5)]
        );
        Ok(())
    })
    .await
}

/// Records whether the order view holds the entry's key at its value or later.
async fn check_order(message: KvMessage, orders: KvView<Order>, State(calls): State<Calls>) {
    let written = written(&message);
    let own = orders.get(message.key()).map(|order| order.n);
    calls.0.push(if written.is_some() && own >= written {
        Ok(message.key().to_owned())
    } else {
        Err(format!(
            "{}: wrote {written:?}, view {own:?}",
            message.key()
        ))
    });
}

/// Records whether the setting view holds `cfg.<i>` for `audit.<i>`, at its value or later.
async fn check_audit(message: KvMessage, settings: KvView<Setting>, State(calls): State<Calls>) {
    let written = written(&message);
    let index = message.key().strip_prefix("audit.").unwrap_or_default();
    let setting = settings
        .get(&format!("cfg.{index}"))
        .map(|setting| setting.n);
    calls.0.push(if written.is_some() && setting >= written {
        Ok(message.key().to_owned())
    } else {
        Err(format!(
            "{}: wrote {written:?}, view {setting:?}",
            message.key()
        ))
    });
}

/// The `n` of a `{"n": n}` value.
fn written(message: &KvMessage) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(message.value())
        .ok()
        .and_then(|value| value["n"].as_u64())
}

#[tokio::test]
async fn a_view_ahead_costs_no_request_and_a_view_of_other_keys_one_per_call() -> anyhow::Result<()>
{
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        broker.key_value("desk").await?;
        let calls = Calls::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(calls.clone())
            .with_kv_view::<Order>("desk", "orders.*")
            .with_kv_view::<Setting>("desk", "cfg.*")
            .subscriber("orders", "orders.*", KvWatch::new("desk"), check_order)
            .subscriber("audits", "audit.*", KvWatch::new("desk"), check_audit);
        let running = RunningApp::spawn(app);
        faststream_testing::wait_for("the app's consumers", EVENT_TIMEOUT, || async {
            let consumers = crate::common::consumer_configs(&server, "desk")
                .await?
                .len();
            anyhow::Ok(((consumers == 4).then_some(()), consumers))
        })
        .await?;
        let js = jetstream(&server).await?;
        const ROUNDS: u64 = 50;

        // Each entry handled before the next is written: the writer is never ahead.
        let before = crate::common::client_messages(&server).await?;
        let started = std::time::Instant::now();
        for n in 0..ROUNDS {
            js.publish(
                format!("$KV.desk.orders.{n}"),
                format!(r#"{{"n":{n}}}"#).into(),
            )
            .await?
            .await?;
            calls.0.wait_for_count(n as usize + 1).await?;
        }
        let own_keys = crate::common::client_messages(&server).await? - before - ROUNDS;
        let own_keys_took = started.elapsed();

        let before = crate::common::client_messages(&server).await?;
        let started = std::time::Instant::now();
        for n in 0..ROUNDS {
            for key in [format!("cfg.{n}"), format!("audit.{n}")] {
                js.publish(format!("$KV.desk.{key}"), format!(r#"{{"n":{n}}}"#).into())
                    .await?
                    .await?;
            }
            calls.0.wait_for_count((ROUNDS + n) as usize + 1).await?;
        }
        let other_keys = crate::common::client_messages(&server).await? - before - 2 * ROUNDS;
        let other_keys_took = started.elapsed();
        eprintln!(
            "nats-server {}: {ROUNDS} calls with a view of their own keys: the app sent \
             {own_keys} messages ({own_keys_took:?}); with a view of other keys: {other_keys} \
             ({other_keys_took:?})",
            server.binary().version
        );
        running.stop().await??;
        let all = calls.0.snapshot();
        let behind: Vec<&String> = all.iter().filter_map(|call| call.as_ref().err()).collect();
        assert!(behind.is_empty(), "views behind their entry: {behind:?}");
        // Measured: 0 and 50 on both servers. A view of the handler's own keys is passed by its
        // own watch (a flow-control answer may add a message); a view of other keys asks once
        // per call, since nothing it receives says how far the stream has gone.
        assert!(
            own_keys <= 2,
            "{own_keys} messages for a view of the own keys"
        );
        assert!(
            (ROUNDS..=ROUNDS + 2).contains(&other_keys),
            "{other_keys} messages for {ROUNDS} calls with a view of other keys"
        );
        Ok(())
    })
    .await
}

/// A view's value that takes its keeper `STALL` to decode when written as `stall`.
struct Stalling;

const STALL: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_view_that_cannot_catch_up_fails_the_call_after_its_timeout() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("stuck").await?;
        let outcomes: crate::common::Recorder<Result<(), String>> = Default::default();
        let view_timeout = Duration::from_secs(1);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(outcomes.clone())
            .with_kv_view_decoded(
                KvViewOptions::new("stuck").timeout(view_timeout),
                "v.*",
                |value: &bytes::Bytes| {
                    // The keeper's own thread: blocking it holds the view back, nothing else.
                    if value.as_ref() == b"stall" {
                        std::thread::sleep(STALL);
                    }
                    Ok::<_, std::convert::Infallible>(Stalling)
                },
            )
            .subscriber(
                "waits",
                "k.*",
                KvWatch::new("stuck"),
                |view: Result<KvView<Stalling>, faststream_core::error::Rejection>,
                 State(outcomes): State<crate::common::Recorder<Result<(), String>>>| async move {
                    outcomes.push(
                        view.map(drop)
                            .map_err(|rejection| faststream_core::error::chain(&rejection)),
                    );
                },
            );
        let running = RunningApp::spawn(app);
        faststream_testing::wait_for("the app's consumers", EVENT_TIMEOUT, || async {
            let consumers = crate::common::consumer_configs(&server, "stuck")
                .await?
                .len();
            anyhow::Ok(((consumers == 2).then_some(()), consumers))
        })
        .await?;
        store.put("v.1", "stall".into()).await?;
        let written = std::time::Instant::now();
        let revision = store.put("k.1", "x".into()).await?;
        let outcome = outcomes.wait_for_count(1).await?;
        let waited = written.elapsed();
        eprintln!(
            "nats-server {}: a view stuck for {STALL:?} failed the call after {waited:?}",
            server.binary().version
        );
        let reason = outcome[0]
            .clone()
            .err()
            .context("the call should have failed")?;
        assert!(
            reason.contains(&format!("did not pass revision {revision} within 1")),
            "{reason}"
        );
        assert!(reason.contains("`v.*` in bucket `stuck`"), "{reason}");
        // Measured 1.0x s: the view's timeout, not the stall.
        assert!(
            waited >= view_timeout && waited < STALL - Duration::from_millis(500),
            "failed after {waited:?}"
        );
        // Once the keeper is through, calls get the view again.
        let next = std::sync::atomic::AtomicU64::new(2);
        faststream_testing::wait_for("a call given the view", EVENT_TIMEOUT, || async {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            store.put(format!("k.{n}"), "x".into()).await?;
            let outcomes = outcomes.wait_for_count(n as usize).await?;
            anyhow::Ok((
                outcomes.last().and_then(|last| last.clone().ok()),
                format!("{outcomes:?}"),
            ))
        })
        .await?;
        running.stop().await??;
        Ok(())
    })
    .await
}
