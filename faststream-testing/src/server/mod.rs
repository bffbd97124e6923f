//! [`NatsServer`]: one nats-server process, from start to kill, stop and restart.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use tempfile::TempDir;
use tokio::process::Child;

use crate::ports::free_ports;
use crate::{monitor, ServerBinary, ServerConfig};

/// How long the server gets to accept a client connection and send `INFO`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long [`NatsServer::stop`] waits after `SIGTERM` before sending `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh port pairs [`NatsServer::start`] tries when a port turns out to be taken.
const START_ATTEMPTS: u32 = 5;
/// How many times [`NatsServer::restart`] tries to bind the same ports again.
const RESTART_ATTEMPTS: u32 = 20;
/// Pause between [`NatsServer::restart`] attempts.
const RESTART_BACKOFF: Duration = Duration::from_millis(250);
/// How many log lines a startup error includes.
const LOG_TAIL_LINES: usize = 20;

/// A real nats-server with JetStream on an ephemeral `127.0.0.1` port and a temporary store
/// directory; killed (`SIGKILL`) on drop, after which the directory is removed.
///
/// The generated config file sets `server_name`, `listen`, `http` (the monitoring port, also
/// ephemeral), a top-level `store_dir` and `jetstream: enabled`; [`NatsServer::start_with`]
/// takes a [`ServerConfig`] to change or add to it.
///
/// ```no_run
/// use faststream_testing::{NatsServer, ServerBinary};
///
/// #[tokio::test]
/// async fn survives_a_crash() -> anyhow::Result<()> {
///     for binary in ServerBinary::discover()? {
///         let mut server = NatsServer::start(&binary).await?;
///         // ... connect to server.url(), create a bucket ...
///         server.kill().await?;
///         server.restart().await?;
///         // ... the bucket is still there ...
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    binary: ServerBinary,
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    server_name: String,
    /// Whether the extra config may override `server_name`, so readiness cannot check it.
    check_server_name: bool,
    config: ServerConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    store_dir: PathBuf,
    // Held only to be removed on drop, last: after the child is killed (fields drop in
    // declaration order).
    _temp_dir: TempDir,
}

/// Why one attempt to run the server failed.
enum SpawnError {
    /// A listen port was taken; another attempt (other ports, or later) may work.
    AddressInUse(anyhow::Error),
    /// Anything else; retrying will not help.
    Fatal(anyhow::Error),
}

impl SpawnError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            SpawnError::AddressInUse(error) | SpawnError::Fatal(error) => error,
        }
    }
}

impl NatsServer {
    /// Starts `binary` with JetStream on an ephemeral client port and an ephemeral monitoring
    /// port, and waits until it accepts clients.
    ///
    /// Returns an error (with the tail of the server log) when it exits or is not ready within
    /// 20 s.
    ///
    /// ```no_run
    /// use faststream_testing::{NatsServer, ServerBinary};
    ///
    /// # async fn example() -> anyhow::Result<()> {
    /// let binary = ServerBinary::discover()?.pop().expect("at least one server");
    /// let server = NatsServer::start(&binary).await?;
    /// println!("{} serves {}", binary, server.url());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(binary: &ServerBinary) -> anyhow::Result<NatsServer> {
        NatsServer::start_with(binary, &ServerConfig::new()).await
    }

    /// Like [`NatsServer::start`], with `extra_config` appended to the generated config file
    /// (e.g. an `authorization { ... }` or `tls { ... }` block); see [`ServerConfig::extra`] for
    /// what it may override.
    ///
    /// ```no_run
    /// use faststream_testing::{NatsServer, ServerBinary};
    ///
    /// # async fn example(binary: &ServerBinary) -> anyhow::Result<()> {
    /// let server = NatsServer::start_with_config(
    ///     binary,
    ///     r#"authorization { user: "app", password: "secret" }"#,
    /// )
    /// .await?;
    /// # let _ = server;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with_config(
        binary: &ServerBinary,
        extra_config: &str,
    ) -> anyhow::Result<NatsServer> {
        NatsServer::start_with(binary, &ServerConfig::new().extra(extra_config)).await
    }

    /// Like [`NatsServer::start`], with the config file written from `config`: a server name,
    /// JetStream on or off, a `cluster` block, extra text.
    pub async fn start_with(
        binary: &ServerBinary,
        config: &ServerConfig,
    ) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("faststream-nats-")
            .tempdir()
            .context("creating a temporary directory for nats-server")?;
        let store_dir = dir.path().join("store");
        fs::create_dir(&store_dir)
            .with_context(|| format!("creating store directory {}", store_dir.display()))?;
        let mut server = NatsServer {
            binary: binary.clone(),
            child: None,
            port: 0,
            monitor_port: 0,
            server_name: config
                .chosen_server_name()
                .map_or_else(unique_server_name, str::to_owned),
            check_server_name: !config.extra_sets_server_name(),
            config: config.clone(),
            config_path: dir.path().join("nats-server.conf"),
            log_path: dir.path().join("nats-server.log"),
            store_dir,
            _temp_dir: dir,
        };

        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let ports = free_ports(2)?;
            let (port, monitor_port) = (ports[0], ports[1]);
            server.port = port;
            server.monitor_port = monitor_port;
            match server.spawn_and_wait().await {
                Ok(()) => break,
                Err(SpawnError::AddressInUse(error)) if attempt < START_ATTEMPTS => {
                    tracing::debug!(
                        "nats-server port {port} or {monitor_port} was taken, retrying with \
                         other ports: {error:#}"
                    );
                    attempt += 1;
                }
                Err(error) => {
                    return Err(error
                        .into_inner()
                        .context(format!("starting {}", server.binary)))
                }
            }
        }
        tracing::debug!(
            "started {} on {} in {:?}",
            server.binary,
            server.url(),
            started.elapsed()
        );
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring (HTTP) port, as used by [`NatsServer::monitor`].
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &ServerBinary {
        &self.binary
    }

    /// The server's `server_name`: the one given in its [`ServerConfig`], else a name unique on
    /// this machine. Stream and consumer info name their cluster leader by it.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The JetStream store directory (the server keeps its data in a `jetstream` directory
    /// inside it). Kept across [`NatsServer::restart`].
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The file that receives the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Kills the server with `SIGKILL` (a crash) and waits for it to exit. Does nothing if it is
    /// not running.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().context("checking nats-server")?.is_none() {
            child
                .kill()
                .await
                .with_context(|| format!("killing {}", self.binary))?;
        }
        Ok(())
    }

    /// Stops the server with `SIGTERM` (a clean shutdown) and waits for it to exit; sends
    /// `SIGKILL` if it is still running after 10 s. Does nothing if it is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().context("checking nats-server")?.is_some() {
            return Ok(());
        }
        // The child is not reaped yet (try_wait said so), so its pid cannot have been reused.
        let pid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .ok_or_else(|| anyhow!("nats-server has no usable pid"))?;
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(error).with_context(|| format!("sending SIGTERM to nats-server {pid}"));
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for nats-server {pid} to stop"))?;
            }
            Err(_) => {
                tracing::warn!(
                    "nats-server {pid} still running {STOP_TIMEOUT:?} after SIGTERM; killing it"
                );
                child
                    .kill()
                    .await
                    .with_context(|| format!("killing nats-server {pid}"))?;
            }
        }
        Ok(())
    }

    /// Kills the server if it is running, then starts it again on the same client port,
    /// monitoring port and store directory, and waits until it accepts clients.
    ///
    /// A port freshly released by the killed server is usually reusable at once; if binding
    /// fails anyway, this retries for about 5 s.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        let mut attempt = 1;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(SpawnError::AddressInUse(error)) if attempt < RESTART_ATTEMPTS => {
                    tracing::debug!(
                        "restarting nats-server: port {} or {} not free yet: {error:#}",
                        self.port,
                        self.monitor_port
                    );
                    attempt += 1;
                    tokio::time::sleep(RESTART_BACKOFF).await;
                }
                Err(error) => {
                    return Err(error
                        .into_inner()
                        .context(format!("restarting {} on port {}", self.binary, self.port)))
                }
            }
        }
    }

    /// `GET /varz` on the monitoring port: the server's configuration and statistics.
    pub async fn varz(&self) -> anyhow::Result<serde_json::Value> {
        self.monitor("/varz").await
    }

    /// `GET` any monitoring endpoint, e.g. `"/jsz?consumers=true"` or `"/connz"`, and parse the
    /// JSON response.
    ///
    /// ```no_run
    /// # async fn example(server: &faststream_testing::NatsServer) -> anyhow::Result<()> {
    /// let jsz = server.monitor("/jsz?streams=true").await?;
    /// println!("{} streams", jsz["streams"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn monitor(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        monitor::get_json(self.monitor_port, path_and_query).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.start_kill().is_err() {
            return; // Already exited.
        }
        // Give the kill a moment to land so the TempDir is not removed under a live server.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
    }
}

mod launch;
#[cfg(test)]
mod tests;

pub(crate) use launch::unique_server_name;
