//! The observed service as a process: readiness over HTTP once it has caught up, the outcome
//! counts and its own gauge on `/metrics` after known writes, and a clean exit on SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use faststream_testing::{free_local_addr, http_get, NatsServer, ServerBinary};
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let matches = (series == name || series.starts_with(&format!("{name}{{")))
            && labels.iter().all(|label| series.contains(label));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn serves_readiness_and_metrics() -> anyhow::Result<()> {
    let binary = ServerBinary::discover()?.pop().context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let addr = free_local_addr()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_observed"))
        .env("NATS_URL", server.url())
        .env("FASTSTREAM_HTTP_ADDR", &addr)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    let deadline = Instant::now() + TIMEOUT;
    let ready = format!("http://{addr}/health/ready");
    while http_get(&ready, &[])
        .await
        .map(|response| response.status)
        .ok()
        != Some(200)
    {
        if Instant::now() > deadline {
            bail!("never ready: {:?}", http_get(&ready, &[]).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = async_nats::connect(server.url()).await?;
    let store = async_nats::jetstream::new(client)
        .get_key_value("inventory")
        .await?;
    store.put("stock.apple", r#"{"units": 3}"#.into()).await?;
    store.put("stock.pear", "three".into()).await?;
    store.put("stock.fig", r#"{"units": -1}"#.into()).await?;

    let metrics = format!("http://{addr}/metrics");
    let handled = "faststream_kv_handled_total";
    loop {
        let text = http_get(&metrics, &[]).await?.body;
        let count = |outcome: &str| sample(&text, handled, &[&format!("outcome=\"{outcome}\"")]);
        let expected = count("ok") == Some(1.0)
            && count("rejected") == Some(1.0)
            && count("skipped") == Some(0.0)
            && count("error") == Some(1.0)
            && sample(&text, "shop_units_in_stock", &[]) == Some(3.0);
        if expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the counts never matched:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().context("no pid")?;
    // SAFETY: plain kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    anyhow::ensure!(sent == 0, "kill(SIGTERM) failed");
    let status = tokio::time::timeout(TIMEOUT, child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
