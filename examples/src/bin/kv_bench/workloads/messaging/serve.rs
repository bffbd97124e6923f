//! The protocol of the messaging consumers, both sides. A consumer (this binary's hidden
//! `msg-consumer` command, or the FastStream script) subscribes, prints `{"ready":true}` and
//! then its result line; the parent publishes or sends requests between the two lines, and
//! closes the consumer's stdin when it is done sending (a responder stops then). The consumer
//! counts what it handles in [`Arrivals`]: the first arrival, the Nth, and a stall that means
//! messages were lost.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::{App, HookStage, NatsBroker, State};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{oneshot, Notify};

use crate::broker::app;
use crate::common::TIMEOUT;
use crate::report::emit;

/// How long a consumer waits without a new message, once one came, before it reports the rest
/// as lost: far longer than any gap between two messages of a run.
const STALL: Duration = Duration::from_secs(3);

/// What a consumer has handled: counted by the handler (or the raw loop), waited for by the
/// consumer's main task.
pub struct Arrivals {
    seen: AtomicUsize,
    target: usize,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: Notify,
}

/// How a consumer's wait for its messages ended.
pub struct Handled {
    /// Messages handled (less than the target if some were lost).
    pub seen: usize,
    /// From the first message received to the last one handled.
    pub took: Duration,
}

impl Arrivals {
    /// Nothing handled yet, `target` expected.
    pub fn new(target: usize) -> Self {
        Self {
            seen: AtomicUsize::new(0),
            target,
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// A message arrived (before it is handled): the first one starts the clock.
    pub fn arrived(&self) {
        self.first.get_or_init(Instant::now);
    }

    /// When the first message arrived, if one did.
    pub fn first(&self) -> Option<Instant> {
        self.first.get().copied()
    }

    /// A message was handled: the target-th stops the clock.
    pub fn handled_one(&self) {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.last.get_or_init(Instant::now);
            self.done.notify_one();
        }
    }

    /// Waits until the target is reached, or until nothing came for [`STALL`] after the first
    /// message or after the parent was done sending (the rest were lost); fails if nothing
    /// came within [`TIMEOUT`].
    pub async fn wait(&self) -> anyhow::Result<Handled> {
        let parent_done = tokio::spawn(stdin_closed());
        let started = Instant::now();
        let mut seen = 0;
        let mut moved = Instant::now();
        let mut stall_clock = false;
        loop {
            if tokio::time::timeout(Duration::from_millis(200), self.done.notified())
                .await
                .is_ok()
            {
                break;
            }
            let now = self.seen.load(Ordering::Relaxed);
            if now != seen || (!stall_clock && parent_done.is_finished()) {
                stall_clock = true;
                (seen, moved) = (now, Instant::now());
            } else if stall_clock && moved.elapsed() >= STALL {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < TIMEOUT,
                "no message arrived within {TIMEOUT:?}"
            );
        }
        let seen = self.seen.load(Ordering::Relaxed);
        let first = self.first.get().copied().unwrap_or(started);
        let last = self.last.get().copied().unwrap_or(moved);
        Ok(Handled {
            seen,
            took: last.saturating_duration_since(first),
        })
    }
}

/// Tells the parent the consumer is subscribed (`{"ready":true}` on stdout).
pub fn announce_ready() {
    emit(&json!({ "ready": true }));
}

/// Resolves when the parent closes this process's stdin.
pub async fn stdin_closed() {
    // A blocking read on a thread of its own (tokio's stdin is not among the features built).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
}

/// Returns once the server has processed everything `client` sent before (its subscriptions):
/// a request nobody answers, which the server refuses (no responders) in order. A flush alone
/// only writes to the socket: a publisher on another connection could still be first.
pub async fn server_has_subscriptions(client: &async_nats::Client) -> anyhow::Result<()> {
    use async_nats::client::RequestErrorKind;
    match client.request("_bench.ready", bytes::Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The `after_startup` hook of every messaging app: the subscriptions are made; once the
/// server has them, the consumer is ready.
async fn ready_hook(broker: NatsBroker, State(ready): State<ReadySlot>) -> anyhow::Result<()> {
    server_has_subscriptions(&broker.client()?).await?;
    if let Some(sender) = ready.0.lock().ok().and_then(|mut slot| slot.take()) {
        let _ = sender.send(());
    }
    Ok(())
}

/// Where [`ready_hook`] reports, once.
#[derive(Clone)]
struct ReadySlot(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

/// An app of the subscribers registered in `module`, running in a task of this process.
pub struct ServedApp {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<faststream_core::Result<()>>,
}

impl ServedApp {
    /// Starts the subscribers of `module` with `state`, and returns once the server has
    /// their subscriptions.
    pub async fn start<T: Clone + Send + Sync + 'static>(
        module: &str,
        state: T,
    ) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let slot = ReadySlot(Arc::new(std::sync::Mutex::new(Some(ready_tx))));
        let app: App = app()
            .without_default_logging()
            .only_module(module)
            .with_state(state)
            .with_state(slot)
            .hook(HookStage::AfterStartup, "bench_ready", ready_hook);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        tokio::time::timeout(TIMEOUT, ready_rx)
            .await
            .context("the app did not start")?
            .context("the app stopped before it was ready")?;
        Ok(Self { stop, task })
    }

    /// Stops the app gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Which consumer a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This binary's `msg-consumer MODE IMPL N BATCH`.
    Rust(&'static str),
    /// The FastStream script `examples/bench/faststream_nats_bench.py MODE N BATCH`.
    Python,
}

/// The FastStream anchor script of the messaging workloads.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/bench/faststream_nats_bench.py"
);

/// Whether `python3` can run FastStream's NATS broker; if not, says so once on stderr.
pub async fn python_available() -> bool {
    let found = tokio::process::Command::new("python3")
        .args(["-c", "import faststream.nats"])
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("(skipped FastStream: `pip install faststream[nats]==0.7.8`)");
    }
    found
}

/// A consumer started by the parent: its stdin (closed to stop it) and its lines.
pub struct Served {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Served {
    /// Starts `side` in `mode` with sizes `n` and `batch`; returns once it is ready.
    pub async fn start(side: Side, mode: &str, n: usize, batch: usize) -> anyhow::Result<Self> {
        let (n, batch) = (n.to_string(), batch.to_string());
        let mut command = match side {
            Side::Rust(implementation) => {
                let mut command = tokio::process::Command::new(std::env::current_exe()?);
                command.args(["msg-consumer", mode, implementation, &n, &batch]);
                command
            }
            Side::Python => {
                let mut command = tokio::process::Command::new("python3");
                command.args([SCRIPT, mode, &n, &batch]);
                command
            }
        };
        let what = format!("{side:?} {mode} {n} {batch}");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut served = Self {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
            what,
        };
        let ready = served.line().await?;
        anyhow::ensure!(
            ready["ready"] == json!(true),
            "{} printed {ready} before it was ready",
            served.what
        );
        Ok(served)
    }

    async fn line(&mut self) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .with_context(|| format!("{} printed nothing within {TIMEOUT:?}", self.what))??
            .with_context(|| format!("{} ended without its line", self.what))?;
        serde_json::from_str(&line).with_context(|| format!("{} printed {line:?}", self.what))
    }

    /// Closes its stdin, reads its result line and waits for it to exit.
    pub async fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.stdin.take());
        let result = self.line().await?;
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await??;
        anyhow::ensure!(status.success(), "{} failed: {status}", self.what);
        Ok(result)
    }
}
