//! Starting the process: the config file, the spawn, and the readiness probe.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{NatsServer, SpawnError, LOG_TAIL_LINES, READY_POLL_INTERVAL, READY_TIMEOUT};
use crate::config::Placement;
use crate::truncate;

impl NatsServer {
    /// Writes the config, spawns the server and waits until it is ready. On failure the child is
    /// gone (killed and reaped).
    pub(super) async fn spawn_and_wait(&mut self) -> Result<(), SpawnError> {
        self.write_config().map_err(SpawnError::Fatal)?;
        let (child, log_offset) = self.spawn().map_err(SpawnError::Fatal)?;
        let mut child = child;
        match self.wait_ready(&mut child).await {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(reason) => {
                let exited = match child.try_wait() {
                    Ok(Some(_)) => true,
                    _ => {
                        // Still running (or unknown): make sure it is gone before reporting.
                        let _ = child.kill().await;
                        false
                    }
                };
                let log = read_from(&self.log_path, log_offset);
                if log.contains("address already in use") {
                    return Err(SpawnError::AddressInUse(startup_error(
                        &reason,
                        &self.log_path,
                        &log,
                        None,
                    )));
                }
                // An early exit is most likely a config error: show the config, whose file
                // goes away with the temporary directory.
                let config = exited
                    .then(|| fs::read_to_string(&self.config_path).ok())
                    .flatten();
                Err(SpawnError::Fatal(startup_error(
                    &reason,
                    &self.log_path,
                    &log,
                    config.as_deref(),
                )))
            }
        }
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let config = self.config.render(Placement {
            server_name: &self.server_name,
            port: self.port,
            monitor_port: self.monitor_port,
            store_dir: &self.store_dir,
        })?;
        fs::write(&self.config_path, config)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    /// Spawns the server with its output appended to the log file; returns the child and the log
    /// offset at which this run's output starts.
    fn spawn(&self) -> anyhow::Result<(Child, u64)> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let offset = log
            .seek(SeekFrom::End(0))
            .with_context(|| format!("seeking {}", self.log_path.display()))?;
        writeln!(
            log,
            "--- faststream-testing: starting {} on port {} (monitoring {}) ---",
            self.binary, self.port, self.monitor_port
        )
        .with_context(|| format!("writing {}", self.log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("duplicating {}", self.log_path.display()))?;
        let child = Command::new(&self.binary.path)
            .arg("-c")
            .arg(&self.config_path)
            // The caller's working directory, as for `--version` in `ServerBinary::probe`: a
            // wrapper on PATH that picks its binary by directory (a pyenv shim) runs the same one.
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.path.display()))?;
        Ok((child, offset))
    }

    /// Polls until the client port sends our server's `INFO`; `Err` describes why not.
    async fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // Probe and sleep while watching the child: if it exits (a taken port, a config
            // error), report that at once rather than after a probe times out.
            let probe = tokio::select! {
                status = child.wait() => return Err(exit_reason(status)),
                probe = self.probe_info() => match probe {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {READY_TIMEOUT:?} (last probe: {probe:#})"
                ));
            }
            tokio::select! {
                status = child.wait() => return Err(exit_reason(status)),
                () = tokio::time::sleep(READY_POLL_INTERVAL) => {}
            }
        }
    }

    /// Connects to the client port and reads the `INFO` line; checks it comes from this server.
    async fn probe_info(&self) -> anyhow::Result<()> {
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .map_err(|_| anyhow!("connect timed out"))?
        .context("connect")?;
        let mut reader = BufReader::new(stream).take(64 * 1024);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
            .await
            .map_err(|_| anyhow!("no INFO within 2s"))?
            .context("reading INFO")?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| anyhow!("expected INFO, got {:?}", truncate(&line, 100)))?;
        if self.check_server_name {
            let info: serde_json::Value =
                serde_json::from_str(info.trim()).context("parsing INFO")?;
            if info["server_name"] != self.server_name.as_str() {
                bail!(
                    "port {} is served by another server ({})",
                    self.port,
                    info["server_name"]
                );
            }
        }
        Ok(())
    }
}

/// Why [`NatsServer::wait_ready`] gave up on a child that exited.
fn exit_reason(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => format!("it exited ({status})"),
        Err(error) => format!("waiting for nats-server: {error}"),
    }
}

/// A name no other server on this machine has: readiness checks it in `INFO` so a foreign
/// server that grabbed our port is not mistaken for ours.
pub(crate) fn unique_server_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("faststream-test-{}-{n}-{nanos}", std::process::id())
}

/// The log file's contents from `offset` on (lossy; empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn startup_error(reason: &str, log_path: &Path, log: &str, config: Option<&str>) -> anyhow::Error {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    let mut message = format!(
        "nats-server did not start: {reason}; last lines of {}:\n{tail}",
        log_path.display()
    );
    if let Some(config) = config {
        message.push_str("\nconfig file:");
        for (number, line) in config.lines().enumerate() {
            message.push_str(&format!("\n{:>4} | {line}", number + 1));
        }
    }
    anyhow!(message)
}
