//! Connecting: a missing server is one clear, bounded error naming the URL.

use std::time::{Duration, Instant};

use faststream_core::error::chain;
use faststream_core::{App, BrokerConfig, Error, NatsBroker};

#[tokio::test]
async fn no_server_is_a_bounded_error_naming_the_url() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let url = format!("nats://user:secret@127.0.0.1:{port}");
    let started = Instant::now();
    let error = App::new(BrokerConfig::new(url).connect_timeout(Duration::from_secs(1)))
        .without_registered()
        .run_until(std::future::pending())
        .await
        .expect_err("there is no server");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Connect { attempts, .. } if attempts >= 2),
        "{error:?}"
    );
    let text = chain(&error);
    assert!(
        text.starts_with(&format!(
            "could not connect to NATS at nats://***@127.0.0.1:{port} ("
        )),
        "{text}"
    );
    assert!(!text.contains("secret"), "the password leaked: {text}");
    println!("no server: the connect error after {elapsed:?} (connect_timeout 1 s)");
    // Measured 0.71 s: the retries stop when the next would start past the 1 s connect
    // timeout; 500 ms past that timeout for a loaded machine.
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

/// From a server appearing to the app started on it: the connect retries back off to at most
/// 2 s between attempts, so the next attempt uses it. Measured 0.79 s; up to 2 s plus 1 s for a
/// loaded machine.
const APPEARED_BOUND: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_server_that_appears_within_the_limit_is_used() -> anyhow::Result<()> {
    use faststream_core::HookStage;
    use faststream_testing::{NatsServer, ServerBinary};

    faststream_testing::init_test_logging();
    let binary = ServerBinary::discover()?
        .into_iter()
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("no nats-server"))?;
    let mut server = NatsServer::start(&binary).await?;
    server.kill().await?; // its port and store stay reserved for the restart
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let app = App::new(BrokerConfig::new(server.url()).connect_timeout(Duration::from_secs(20)))
        .without_registered()
        .hook(HookStage::AfterStartup, "started", move || {
            let started_tx = started_tx.clone();
            async move {
                if let Some(tx) = started_tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send(());
                }
            }
        });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    // Let the app fail a few attempts first.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!running.is_finished(), "gave up too early");
    server.restart().await?;
    let restarted = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), started_rx).await??;
    let took = restarted.elapsed();
    println!("a server that appears: the app started {took:?} after it did");
    assert!(
        took < APPEARED_BOUND,
        "started {took:?} after the server appeared"
    );
    let _ = stop_tx.send(());
    running.await??;
    Ok(())
}

#[tokio::test]
async fn shutdown_during_connect_retries_stops_at_once() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let broker = BrokerConfig::new(format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(60));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(App::new(broker).without_registered().run_until(async {
        let _ = stopped.await;
    }));
    // Let it get into its retries, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), running).await??;
    let took = asked.elapsed();
    assert!(result.is_ok(), "{result:?}");
    println!("shutdown during connect retries took {took:?}");
    // Measured under 1 ms: the retry loop stops at once; far below one retry delay.
    assert!(took < Duration::from_millis(250), "took {took:?}");
    Ok(())
}

/// Open client connections on `server` (the harness's readiness probe has closed by then).
async fn open_connections(server: &faststream_testing::NatsServer) -> anyhow::Result<u64> {
    let connz = server.monitor("/connz").await?;
    connz["num_connections"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("connz without num_connections: {connz}"))
}

#[tokio::test]
async fn every_url_of_a_list_is_used_and_a_dead_node_is_replaced() -> anyhow::Result<()> {
    use faststream_testing::{NatsServer, ServerBinary};

    faststream_testing::init_test_logging();
    for binary in ServerBinary::discover()? {
        let mut nodes = [
            NatsServer::start(&binary).await?,
            NatsServer::start(&binary).await?,
        ];
        // As `NATS_URL` documents it: comma-separated, spaces allowed.
        let urls = format!("{}, {}", nodes[0].url(), nodes[1].url());
        let broker =
            NatsBroker::connect(BrokerConfig::new(urls).connect_timeout(Duration::from_secs(5)))
                .await?;
        broker.client()?.flush().await?;
        let mut on = None;
        for (index, node) in nodes.iter().enumerate() {
            if open_connections(node).await? > 0 {
                on = Some(index);
            }
        }
        let on = on.ok_or_else(|| anyhow::anyhow!("{binary}: connected to neither node"))?;
        let other = 1 - on;

        nodes[on].kill().await?;
        let killed = Instant::now();
        faststream_testing::wait_for(
            &format!("{binary}: a reconnection to the other node"),
            Duration::from_secs(15),
            || async { anyhow::Ok(open_connections(&nodes[other]).await? > 0) },
        )
        .await?;
        let moved = killed.elapsed();
        // Measured 3-28 ms: async-nats reconnects to the next URL at once; 1 s for a loaded
        // machine, far below its reconnect back-off.
        assert!(
            moved < Duration::from_secs(1),
            "{binary}: moved after {moved:?}"
        );
        // The connection works on the other node: JetStream requests are answered.
        let store = broker.key_value("moved").await?;
        store.put("k", "v".into()).await?;
        tracing::info!(%binary, ?moved, "reconnected to the other node");
        println!("{binary}: reconnected to the other node {moved:?} after the kill");
    }
    Ok(())
}
