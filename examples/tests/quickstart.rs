//! The quickstart binary end to end: it handles the value its hook writes, and SIGTERM makes
//! it shut down cleanly with exit code 0, also with the server down — on every available
//! nats-server version.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use faststream_testing::{NatsServer, ServerBinary};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn quickstart_handles_its_value_and_exits_0_on_sigterm() -> anyhow::Result<()> {
    for binary in ServerBinary::discover()? {
        let mut server = NatsServer::start(&binary).await?;
        run_quickstart(&mut server, false)
            .await
            .with_context(|| format!("on nats-server {}", binary.version))?;
    }
    Ok(())
}

#[tokio::test]
async fn quickstart_exits_0_on_sigterm_with_the_server_down() -> anyhow::Result<()> {
    for binary in ServerBinary::discover()? {
        let mut server = NatsServer::start(&binary).await?;
        run_quickstart(&mut server, true)
            .await
            .with_context(|| format!("on nats-server {}", binary.version))?;
    }
    Ok(())
}

/// How long the service may take to exit after SIGTERM. Measured 23-54 ms with the server up
/// (the connection drained) and 6-13 ms with it down; 1 s leaves a loaded 2-core machine room
/// and is a tenth of the default 10 s `shutdown_timeout`, so a shutdown that waits out the
/// drain fails.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(1);

async fn run_quickstart(server: &mut NatsServer, server_down: bool) -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("NATS_URL", server.url())
        .env("RUST_LOG", "info,faststream_core=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();

    // Both subscribers process the value written by the after_startup hook.
    let mut processed = [false, false];
    let waited = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            for (done, name) in processed
                .iter_mut()
                .zip(["quickstart::handler", "quickstart::detailed"])
            {
                *done |= line.contains("bucket | key | 1 - Processed") && line.contains(name);
            }
            log.push(line);
            if processed == [true, true] {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    anyhow::ensure!(
        matches!(waited, Ok(Ok(true))),
        "the handlers did not process the value; log:\n{}",
        log.join("\n")
    );
    anyhow::ensure!(
        !log.iter().any(|line| line.contains("ERROR")),
        "errors logged:\n{}",
        log.join("\n")
    );

    if server_down {
        server.kill().await?;
    }
    let pid = child.id().context("no pid")?;
    let terminated = std::time::Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    anyhow::ensure!(sent == 0, "kill(SIGTERM) failed");
    let rest = tokio::time::timeout(TIMEOUT, async {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    })
    .await
    .context("the service did not close its log after SIGTERM")?;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .context("the service did not exit after SIGTERM")??;
    let took = terminated.elapsed();
    println!(
        "{}: exit after SIGTERM took {took:?} (server down: {server_down})",
        server.binary()
    );
    anyhow::ensure!(took < SHUTDOWN_BOUND, "exit after SIGTERM took {took:?}");
    if server_down {
        anyhow::ensure!(
            rest.iter().any(|line| line.contains("abandoned")),
            "no log line says what was abandoned:\n{}",
            rest.join("\n")
        );
    }
    anyhow::ensure!(
        status.code() == Some(0),
        "exit status {status}; log after SIGTERM:\n{}",
        rest.join("\n")
    );
    anyhow::ensure!(
        rest.iter().any(|line| line.contains("application stopped")),
        "no clean stop logged:\n{}",
        rest.join("\n")
    );
    Ok(())
}
