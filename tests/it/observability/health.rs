//! `/health/ready` through catch-up, a killed server and a connection blip, and the endpoint's
//! own start-up errors.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn readiness_follows_catch_up_and_the_connection() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        let store = crate::common::bucket_with_history(&server, "ready").await?;
        for index in 0..20 {
            store.put(format!("k.{index}"), "x".into()).await?;
        }
        let gate = Arc::new(Semaphore::new(0));
        let (listener, addr) = local_listener()?;
        let addr = addr.as_str();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .http_listener(listener)
            .readiness_grace(Duration::from_millis(300))
            .with_state(Arc::clone(&gate))
            .subscriber("gated", "k.*", KvWatch::new("ready"), gated);
        let running = RunningApp::spawn(app);

        // The handler holds the first entry: the subscriber is catching up.
        let body = faststream_testing::wait_for(
            "the subscriber catching up",
            EVENT_TIMEOUT,
            move || async move {
                let response = ready(addr).await?;
                let body = response.json()?;
                let catching_up = response.status == 503
                    && body["stage"] == "running"
                    && body["subscribers"][0]["state"] == "catching_up";
                Ok((catching_up.then_some(body), response.body))
            },
        )
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

/// An outage shorter than the grace period: readiness never drops, though the endpoint sees
/// the connection down; it drops once the outage outlasts the grace period.
#[tokio::test]
async fn an_outage_shorter_than_the_grace_period_keeps_readiness() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let proxy = TcpProxy::start(server.port()).await?;
        let (listener, addr) = local_listener()?;
        let addr = addr.as_str();
        let grace = Duration::from_secs(3);
        let app = App::new(BrokerConfig::new(proxy.url()))
            .without_registered()
            .http_listener(listener)
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
        faststream_testing::wait_for(
            "five answers during the outage",
            EVENT_TIMEOUT,
            move || async move {
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
            },
        )
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

#[tokio::test]
async fn an_address_in_use_fails_start_up_naming_it() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    // Nothing is connected to: the endpoint starts before the connection.
    let app = App::new(BrokerConfig::new("nats://127.0.0.1:1"))
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
