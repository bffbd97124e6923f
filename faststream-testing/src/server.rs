//! [`NatsServer`]: one nats-server process, from start to kill, stop and restart.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::config::Placement;
use crate::ports::free_ports;
use crate::{monitor, truncate, ServerBinary, ServerConfig};

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

    /// Writes the config, spawns the server and waits until it is ready. On failure the child is
    /// gone (killed and reaped).
    async fn spawn_and_wait(&mut self) -> Result<(), SpawnError> {
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;
    use crate::ports::RESERVED_PORT;

    fn binaries() -> Vec<ServerBinary> {
        match ServerBinary::discover() {
            Ok(binaries) => binaries,
            Err(error) => panic!("{error:#}"),
        }
    }

    /// Connects a raw TCP client and returns the parsed `INFO`.
    async fn read_info(port: u16) -> anyhow::Result<serde_json::Value> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await??;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| anyhow!("expected INFO, got {line:?}"))?;
        Ok(serde_json::from_str(info.trim())?)
    }

    /// Creates a file-backed stream with a raw NATS client and waits for the API reply.
    async fn create_stream(port: u16, name: &str) -> anyhow::Result<serde_json::Value> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let config = serde_json::json!({
            "name": name, "subjects": [format!("{name}.>")], "storage": "file",
        })
        .to_string();
        let request = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.harness 1\r\n\
             PUB $JS.API.STREAM.CREATE.{name} _INBOX.harness {}\r\n{config}\r\n",
            config.len()
        );
        reader.get_mut().write_all(request.as_bytes()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            line.clear();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(remaining, reader.read_line(&mut line)).await??;
            if read == 0 {
                bail!("connection closed");
            }
            if line.starts_with("PING") {
                reader.get_mut().write_all(b"PONG\r\n").await?;
            } else if line.starts_with("-ERR") {
                bail!("server error: {line}");
            } else if line.starts_with("MSG ") {
                let size: usize = line
                    .split_whitespace()
                    .last()
                    .ok_or_else(|| anyhow!("bad MSG line {line:?}"))?
                    .parse()?;
                let mut payload = vec![0; size + 2];
                reader.read_exact(&mut payload).await?;
                return Ok(serde_json::from_slice(&payload[..size])?);
            }
        }
    }

    #[tokio::test]
    async fn starts_serves_and_restarts_every_binary() -> anyhow::Result<()> {
        for binary in binaries() {
            let started = Instant::now();
            let mut server = NatsServer::start(&binary).await?;
            let start_time = started.elapsed();
            assert_ne!(server.port(), RESERVED_PORT);
            assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
            assert_eq!(server.binary(), &binary);

            let varz = server.varz().await?;
            assert_eq!(varz["version"], binary.version.as_str(), "{varz}");
            assert_eq!(varz["port"], server.port(), "{varz}");
            let js_store = varz["jetstream"]["config"]["store_dir"]
                .as_str()
                .ok_or_else(|| anyhow!("JetStream not enabled: {varz}"))?;
            assert!(
                Path::new(js_store).starts_with(server.store_dir()),
                "{js_store}"
            );

            let info = read_info(server.port()).await?;
            assert_eq!(info["version"], binary.version.as_str(), "{info}");
            assert_eq!(info["jetstream"], true, "{info}");

            let reply = create_stream(server.port(), "HARNESS").await?;
            assert_eq!(reply["config"]["name"], "HARNESS", "{reply}");

            let (port, monitor_port) = (server.port(), server.monitor_port());
            server.kill().await?;
            assert!(read_info(port).await.is_err(), "still serving after kill");
            assert!(server.varz().await.is_err(), "still monitoring after kill");
            server.kill().await?; // Idempotent.

            let restarted = Instant::now();
            server.restart().await?;
            let restart_time = restarted.elapsed();
            assert_eq!((server.port(), server.monitor_port()), (port, monitor_port));
            let info = read_info(port).await?;
            assert_eq!(info["version"], binary.version.as_str(), "{info}");
            let jsz = server.monitor("jsz").await?;
            assert_eq!(jsz["streams"], 1, "stream lost across restart: {jsz}");

            // Restart while running (kills first).
            server.restart().await?;
            read_info(port).await?;
            println!("{binary}: start {start_time:?}, restart after kill {restart_time:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn stops_with_sigterm_and_applies_extra_config() -> anyhow::Result<()> {
        for binary in binaries() {
            let mut server = NatsServer::start_with_config(
                &binary,
                "max_payload: 65536\njetstream { max_memory_store: 64MB }",
            )
            .await?;
            let varz = server.varz().await?;
            assert_eq!(varz["max_payload"], 65536, "{varz}");
            assert_eq!(
                varz["jetstream"]["config"]["max_memory"],
                64 * 1024 * 1024,
                "{varz}"
            );
            assert!(server.store_dir().join("jetstream").is_dir());
            let connz = server.monitor("/connz").await?;
            assert!(connz["num_connections"].is_number(), "{connz}");
            assert!(server.monitor("/no-such-endpoint").await.is_err());

            let stopped = Instant::now();
            server.stop().await?;
            assert!(stopped.elapsed() < STOP_TIMEOUT, "SIGTERM ignored");
            assert!(read_info(server.port()).await.is_err());
            let log = fs::read_to_string(server.log_path())?;
            assert!(log.contains("Server Exiting"), "{log}");
            server.stop().await?; // Idempotent.
            server.restart().await?;
            read_info(server.port()).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn reports_startup_failures_with_the_log_tail() -> anyhow::Result<()> {
        for binary in binaries() {
            let started = Instant::now();
            let error = match NatsServer::start_with_config(&binary, "no_such_option {{{").await {
                Ok(_) => bail!("{binary} started with a broken config"),
                Err(error) => format!("{error:#}"),
            };
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "took {:?}",
                started.elapsed()
            );
            assert!(error.contains("did not start"), "{error}");
            assert!(error.contains("exited"), "{error}");
            // The log tail (the server's complaint) and the numbered config are included.
            assert!(error.to_lowercase().contains("error"), "{error}");
            assert!(error.contains("| no_such_option {{{"), "{error}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn drop_kills_the_server_and_removes_the_directory() -> anyhow::Result<()> {
        for binary in binaries() {
            let server = NatsServer::start(&binary).await?;
            let (port, dir) = (server.port(), server.store_dir().to_owned());
            drop(server);
            assert!(read_info(port).await.is_err(), "{binary} still serving");
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        Ok(())
    }
}
