//! Metrics and health endpoints against a real nats-server, read over real HTTP: counts after
//! known workloads, the pending gauge, readiness through catch-up, a killed server and a
//! connection blip, the group metrics, and start-up errors of the endpoint itself.
//!
//! Every wait is for what the endpoint reports, bounded by `EVENT_TIMEOUT`; no sleep is a proof.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use common::{on_each_server, on_each_server_since, startup_error, RunningApp, EVENT_TIMEOUT};
use faststream_core::kv::GroupSettings;
use faststream_core::{App, Error, Json, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::{free_local_addr, http_get, HttpResponse, NatsServer, TcpProxy};
use tokio::sync::Semaphore;

/// One sample of a scrape: `name{labels} value`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let matches = labels.iter().all(|(label, wanted)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{label}=\"{wanted}\""))
            });
            matches.then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    let response = http_get(&format!("http://{addr}/metrics"), &[]).await?;
    if response.status != 200 {
        bail!("/metrics answered {}: {}", response.status, response.body);
    }
    Ok(response.body)
}

async fn ready(addr: &str) -> anyhow::Result<HttpResponse> {
    http_get(&format!("http://{addr}/health/ready"), &[]).await
}

/// Polls `probe` until it returns `Some`, up to `EVENT_TIMEOUT`; the error says what was awaited
/// and what was seen last. A probe that fails (the endpoint not listening yet) is polled again.
async fn until<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<(Option<T>, String)>>,
{
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let seen = match probe().await {
            Ok((Some(found), _)) => return Ok(found),
            Ok((None, seen)) => seen,
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sample expected on `/metrics`: name, some of its labels, value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Waits until every `(name, labels, value)` is on `/metrics`.
async fn until_metrics(addr: &str, expected: &[Expected<'_>]) -> anyhow::Result<String> {
    until("the expected metrics", move || async move {
        let text = scrape(addr).await?;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(name, labels, value)| sample(&text, name, labels) != Some(*value))
            .map(|(name, labels, value)| {
                format!(
                    "{name}{labels:?} = {value} (is {:?})",
                    sample(&text, name, labels)
                )
            })
            .collect();
        Ok(if missing.is_empty() {
            (Some(text), String::new())
        } else {
            (None, missing.join("; "))
        })
    })
    .await
}

async fn until_ready(addr: &str, status: u16) -> anyhow::Result<serde_json::Value> {
    until(
        &format!("/health/ready to answer {status}"),
        move || async move {
            let response = ready(addr).await?;
            let found = (response.status == status)
                .then(|| response.json())
                .transpose()?;
            Ok((found, format!("{} {}", response.status, response.body)))
        },
    )
    .await
}

async fn outcomes(message: KvMessage) -> anyhow::Result<()> {
    let kind = message
        .key()
        .split('.')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "err" => anyhow::bail!("refused {}", message.key()),
        "panic" => panic!("boom on {}", message.key()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    amount: u64,
}

async fn typed(Json(order): Json<Order>) {
    std::hint::black_box(order);
}

#[tokio::test]
async fn metrics_count_every_outcome() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let addr = free_local_addr()?;
        let addr = addr.as_str();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .http(addr)
            .handler_timeout(Duration::from_millis(200))
            .subscriber("mixed", "k.*.*", KvWatch::new("obs"), outcomes)
            .subscriber("typed", "j.*", KvWatch::new("obs"), typed);
        let running = RunningApp::spawn(app);
        until_ready(addr, 200).await?;

        let store = common::jetstream(&server)
            .await?
            .get_key_value("obs")
            .await?;
        for (kind, count) in [("ok", 5), ("err", 3), ("panic", 2), ("slow", 1)] {
            for index in 0..count {
                store.put(format!("k.{kind}.{index}"), "x".into()).await?;
            }
        }
        for index in 0..4 {
            store
                .put(format!("j.{index}"), r#"{"amount": 1}"#.into())
                .await?;
        }
        store.put("j.bad1", "not json".into()).await?;
        store.put("j.bad2", r#"{"amount": "one"}"#.into()).await?;

        let handled = "faststream_kv_handled_total";
        let mixed = |outcome| {
            [
                ("bucket", "obs"),
                ("subscriber", "mixed"),
                ("outcome", outcome),
            ]
        };
        let typed = |outcome| {
            [
                ("bucket", "obs"),
                ("subscriber", "typed"),
                ("outcome", outcome),
            ]
        };
        let (ok, error, panic, timeout, skipped) = (
            mixed("ok"),
            mixed("error"),
            mixed("panic"),
            mixed("timeout"),
            mixed("skipped"),
        );
        let (typed_ok, typed_skipped) = (typed("ok"), typed("skipped"));
        let text = until_metrics(
            addr,
            &[
                (handled, &ok, 5.0),
                (handled, &error, 3.0),
                (handled, &panic, 2.0),
                (handled, &timeout, 1.0),
                (handled, &skipped, 0.0),
                (handled, &typed_ok, 4.0),
                (handled, &typed_skipped, 2.0),
                // Calls that ran: not the timed-out one, not the two never called.
                (
                    "faststream_kv_handler_seconds_count",
                    &[("subscriber", "mixed")],
                    10.0,
                ),
                (
                    "faststream_kv_handler_seconds_count",
                    &[("subscriber", "typed")],
                    4.0,
                ),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "mixed")],
                    0.0,
                ),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "typed")],
                    0.0,
                ),
                ("faststream_nats_connected", &[], 1.0),
                ("faststream_nats_reconnects_total", &[], 0.0),
            ],
        )
        .await?;
        // Every call of `mixed` is far below a minute; the timed-out one is not observed.
        let under_a_minute = sample(
            &text,
            "faststream_kv_handler_seconds_bucket",
            &[("subscriber", "mixed"), ("le", "60")],
        );
        assert_eq!(under_a_minute, Some(10.0), "{text}");
        for reason in ["silence", "reconnected", "gap", "stream_replaced"] {
            let labels = [("subscriber", "mixed"), ("reason", reason)];
            let recreated = sample(&text, "faststream_kv_watch_recreated_total", &labels);
            assert_eq!(recreated, Some(0.0), "{reason}: {text}");
        }
        assert!(
            text.contains("# TYPE faststream_kv_handler_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# HELP faststream_kv_watch_pending "),
            "{text}"
        );

        let openmetrics = http_get(
            &format!("http://{addr}/metrics"),
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await?;
        assert!(
            openmetrics
                .content_type
                .as_deref()
                .is_some_and(|ty| ty.starts_with("application/openmetrics-text")),
            "{:?}",
            openmetrics.content_type
        );
        assert!(
            openmetrics.body.trim_end().ends_with("# EOF"),
            "{}",
            openmetrics.body
        );

        let live = http_get(&format!("http://{addr}/health/live"), &[]).await?;
        assert_eq!(live.status, 200);
        let unknown = http_get(&format!("http://{addr}/nope"), &[]).await?;
        assert_eq!(unknown.status, 404);

        running.stop().await??;
        // The endpoint stops with the app.
        let after = http_get(&format!("http://{addr}/health/live"), &[]).await;
        assert!(
            after.is_err(),
            "still answering after the app stopped: {after:?}"
        );
        Ok(())
    })
    .await
}

async fn gated(message: KvMessage, State(gate): State<Arc<Semaphore>>) {
    // Never closed: the permit is there once the test adds it.
    let _permit = gate.acquire().await;
    std::hint::black_box(message);
}

#[tokio::test]
async fn readiness_follows_catch_up_and_the_connection() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        let store = common::bucket_with_history(&server, "ready").await?;
        for index in 0..20 {
            store.put(format!("k.{index}"), "x".into()).await?;
        }
        let gate = Arc::new(Semaphore::new(0));
        let addr = free_local_addr()?;
        let addr = addr.as_str();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .http(addr)
            .readiness_grace(Duration::from_millis(300))
            .with_state(Arc::clone(&gate))
            .subscriber("gated", "k.*", KvWatch::new("ready"), gated);
        let running = RunningApp::spawn(app);

        // The handler holds the first entry: the subscriber is catching up.
        let body = until("the subscriber catching up", move || async move {
            let response = ready(addr).await?;
            let body = response.json()?;
            let catching_up = response.status == 503
                && body["stage"] == "running"
                && body["subscribers"][0]["state"] == "catching_up";
            Ok((catching_up.then_some(body), response.body))
        })
        .await?;
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["subscribers"][0]["subscriber"], "gated");
        let reasons = body["reasons"].to_string();
        assert!(
            reasons.contains("subscriber `gated` is catching up"),
            "{reasons}"
        );
        let text = scrape(addr).await?;
        let pending = sample(
            &text,
            "faststream_kv_watch_pending",
            &[("subscriber", "gated")],
        );
        assert!(
            pending.is_some_and(|pending| pending > 0.0),
            "pending {pending:?}: {text}"
        );

        gate.add_permits(1_000);
        let body = until_ready(addr, 200).await?;
        assert_eq!(body["status"], "ready");
        assert_eq!(body["subscribers"][0]["state"], "live");
        until_metrics(
            addr,
            &[
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "gated")],
                    0.0,
                ),
                (
                    "faststream_kv_handled_total",
                    &[("subscriber", "gated"), ("outcome", "ok")],
                    20.0,
                ),
            ],
        )
        .await?;

        // Down for longer than the grace period: not ready, and the reason says so.
        server.kill().await?;
        let body = until_ready(addr, 503).await?;
        assert_eq!(body["nats"]["connected"], false);
        assert!(
            body["reasons"]
                .to_string()
                .contains("not connected to NATS"),
            "{body}"
        );
        let live = http_get(&format!("http://{addr}/health/live"), &[]).await?;
        assert_eq!(live.status, 200, "liveness must not follow the connection");
        until_metrics(addr, &[("faststream_nats_connected", &[], 0.0)]).await?;

        server.restart().await?;
        until_ready(addr, 200).await?;
        let text = until_metrics(
            addr,
            &[
                ("faststream_nats_connected", &[], 1.0),
                ("faststream_nats_reconnects_total", &[], 1.0),
            ],
        )
        .await?;
        let recreated = sample(
            &text,
            "faststream_kv_watch_recreated_total",
            &[("subscriber", "gated"), ("reason", "reconnected")],
        );
        assert!(recreated.is_some_and(|count| count >= 1.0), "{text}");

        running.stop().await??;
        Ok(())
    })
    .await
}

async fn ignore(message: KvMessage) {
    std::hint::black_box(message);
}

/// An outage shorter than the grace period: readiness never drops, though the endpoint sees
/// the connection down; it drops once the outage outlasts the grace period.
#[tokio::test]
async fn an_outage_shorter_than_the_grace_period_keeps_readiness() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let proxy = TcpProxy::start(server.port()).await?;
        let addr = free_local_addr()?;
        let addr = addr.as_str();
        let grace = Duration::from_secs(3);
        let app = App::new(NatsBroker::new(proxy.url()))
            .without_registered()
            .http(addr)
            .readiness_grace(grace)
            .subscriber("steady", ">", KvWatch::new("blip"), ignore);
        let running = RunningApp::spawn(app);
        until_ready(addr, 200).await?;

        proxy.set_refusing(true);
        proxy.cut();
        let outage = Instant::now();
        // Five answers seen with the connection down, all of them ready.
        let answers = std::sync::Mutex::new(Vec::new());
        let answered = &answers;
        until("five answers during the outage", move || async move {
            let response = ready(addr).await?;
            let down = response.json()?["nats"]["connected"] == false;
            let mut answers = answered.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if down {
                answers.push((response.status, response.body));
            }
            Ok((
                (answers.len() >= 5).then_some(()),
                format!("{} down", answers.len()),
            ))
        })
        .await?;
        let within_grace = outage.elapsed() < grace;
        let answers = answers.into_inner().unwrap_or_default();
        let dropped: Vec<_> = answers
            .iter()
            .filter(|(status, _)| *status != 200)
            .collect();
        assert!(
            dropped.is_empty(),
            "readiness dropped during a short outage: {dropped:?}"
        );
        assert!(
            within_grace,
            "the outage checks took longer than the grace period"
        );

        // Past the grace period, it drops and names the connection.
        let body = until_ready(addr, 503).await?;
        assert!(
            outage.elapsed() >= grace,
            "dropped {:?} into the outage",
            outage.elapsed()
        );
        assert!(
            body["reasons"]
                .to_string()
                .contains("not connected to NATS for"),
            "{body}"
        );

        proxy.set_refusing(false);
        until_ready(addr, 200).await?;
        until_metrics(addr, &[("faststream_nats_reconnects_total", &[], 1.0)]).await?;
        running.stop().await??;
        Ok(())
    })
    .await
}

async fn fails_on_bad(message: KvMessage) -> anyhow::Result<()> {
    if message.key().ends_with(".bad") {
        anyhow::bail!("cannot bill {}", message.key());
    }
    Ok(())
}

fn member(server: &NatsServer, addr: &str) -> App {
    let settings = GroupSettings::new("billing")
        .partitions(1)
        .max_attempts(3)
        .backoff([Duration::from_millis(50)])
        .session_timeout(Duration::from_secs(2));
    App::new(NatsBroker::new(server.url()))
        .without_registered()
        .http(addr)
        .subscriber(
            "bill",
            "orders.*",
            KvWatch::new("shop").group(settings),
            fails_on_bad,
        )
}

#[tokio::test]
async fn group_members_report_redeliveries_given_up_and_partitions() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server: NatsServer| async move {
        let addr = free_local_addr()?;
        let addr = addr.as_str();
        let running = RunningApp::spawn(member(&server, addr));
        let body = until_ready(addr, 200).await?;
        assert_eq!(body["subscribers"][0]["group"], "billing");

        let store = common::jetstream(&server)
            .await?
            .get_key_value("shop")
            .await?;
        for index in 0..5 {
            store.put(format!("orders.{index}"), "x".into()).await?;
        }
        store.put("orders.bad", "x".into()).await?;
        let group = [("subscriber", "bill"), ("group", "billing")];
        until_metrics(
            addr,
            &[
                (
                    "faststream_kv_handled_total",
                    &[("subscriber", "bill"), ("outcome", "ok")],
                    5.0,
                ),
                (
                    "faststream_kv_handled_total",
                    &[("subscriber", "bill"), ("outcome", "error")],
                    3.0,
                ),
                // Attempts 2 and 3 of the bad change.
                ("faststream_kv_group_redelivered_total", &group, 2.0),
                ("faststream_kv_group_given_up_total", &group, 1.0),
                // The only member holds the only partition.
                ("faststream_kv_group_partitions_owned", &group, 1.0),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "bill")],
                    0.0,
                ),
            ],
        )
        .await?;

        // A second member: one of the two holds the partition, the other stands by, and a
        // member on standby is ready.
        let second_addr = free_local_addr()?;
        let second_addr = second_addr.as_str();
        let second = RunningApp::spawn(member(&server, second_addr));
        let held = until(
            "one member holding the partition, one on standby",
            move || async move {
                let first = ready(addr).await?;
                let second = ready(second_addr).await?;
                let partitions = |response: &HttpResponse| -> anyhow::Result<Option<u64>> {
                    Ok(response.json()?["subscribers"][0]["partitions"].as_u64())
                };
                let held = (partitions(&first)?, partitions(&second)?);
                let settled = first.status == 200
                    && second.status == 200
                    && matches!(held, (Some(1), Some(0)) | (Some(0), Some(1)));
                Ok((
                    settled.then_some(held),
                    format!("{held:?}: {} / {}", first.body, second.body),
                ))
            },
        )
        .await?;
        assert_ne!(held.0, held.1, "{held:?}");
        second.stop().await??;
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_address_in_use_fails_start_up_naming_it() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    // Nothing is connected to: the endpoint starts before the connection.
    let app = App::new(NatsBroker::new("nats://127.0.0.1:1"))
        .without_registered()
        .http(&addr);
    let error = startup_error(app).await?;
    let Error::HttpBind {
        addr: named,
        source,
    } = &error
    else {
        bail!("expected Error::HttpBind, got {error:?}");
    };
    assert_eq!(named, &addr);
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains(&addr), "{error}");
    Ok(())
}

#[tokio::test]
async fn the_address_comes_from_the_environment_when_the_code_sets_none() -> anyhow::Result<()> {
    let binary = common::servers()
        .into_iter()
        .next()
        .context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let addr = free_local_addr()?;
    let addr = addr.as_str();
    // The only test here without `App::http`: no other app reads the variable.
    std::env::set_var(faststream_core::HTTP_ADDR_VAR, addr);
    let running = RunningApp::spawn(App::new(NatsBroker::new(server.url())).without_registered());
    let ready = until_ready(addr, 200).await;
    std::env::remove_var(faststream_core::HTTP_ADDR_VAR);
    let body = ready?;
    assert_eq!(body["subscribers"], serde_json::json!([]));
    running.stop().await??;
    Ok(())
}
