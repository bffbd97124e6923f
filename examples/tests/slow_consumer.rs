//! The slow-consumer service: bounded memory while writers outpace its handler (200,000
//! entries), and a second SIGINT exits at once while a handler is stuck.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_testing::{NatsServer, ServerBinary};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Service {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
}

impl Service {
    async fn start(server: &NatsServer, handler_ms: u64) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slow_consumer"))
            .env("NATS_URL", server.url())
            .env("SLOW_HANDLER_MS", handler_ms.to_string())
            .env("RUST_LOG", "info,faststream_core=debug,slow_consumer=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut service = Self {
            child,
            lines: BufReader::new(stderr).lines(),
        };
        service.wait_for_line("application started").await?;
        Ok(service)
    }

    async fn wait_for_line(&mut self, text: &str) -> anyhow::Result<()> {
        let lines = &mut self.lines;
        tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(text) {
                    return anyhow::Ok(());
                }
            }
            anyhow::bail!("the service ended before logging `{text}`")
        })
        .await
        .with_context(|| format!("waiting for `{text}`"))?
    }

    /// Drains the log in the background so the service never blocks on a full pipe, counting
    /// the entries the handler took (it logs one line per entry at debug level).
    fn drain_log(self) -> (Child, Arc<AtomicUsize>) {
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&handled);
        let mut lines = self.lines;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("handling slowly") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        (self.child, handled)
    }

    fn signal(child: &Child, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = child.id().context("no pid")?;
        // SAFETY: plain kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        anyhow::ensure!(sent == 0, "kill({signal}) failed");
        Ok(())
    }
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

fn newest_server() -> anyhow::Result<ServerBinary> {
    ServerBinary::discover()?
        .into_iter()
        .next_back()
        .context("no nats-server")
}

#[tokio::test]
async fn memory_stays_bounded_when_writers_outpace_the_handler() -> anyhow::Result<()> {
    const ENTRIES: usize = 200_000;
    const VALUE_BYTES: usize = 1024;
    let server = NatsServer::start(&newest_server()?).await?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KV_slow".into(),
        subjects: vec!["$KV.slow.>".into()],
        max_messages_per_subject: 64,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;

    let service = Service::start(&server, 1).await?;
    let (child, handled) = service.drain_log();
    let pid = child.id().context("no pid")?;
    let baseline = peak_rss_kib(pid)?;

    // 200,000 entries of 1 KiB (195 MiB) over 4,000 keys, far faster than 1 ms each.
    let value = bytes::Bytes::from(vec![b'x'; VALUE_BYTES]);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(1000);
    for i in 0..ENTRIES {
        let ack = js
            .publish(format!("$KV.slow.k.{}", i % 4000), value.clone())
            .await?;
        acks.push(ack);
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    let written = started.elapsed();
    // Bounded because the server holds back what the handler has not taken, not because
    // nothing arrives: entries were handled while writing, and handling goes on after it.
    let handled_while_writing = handled.load(Ordering::Relaxed);
    let more = 200;
    tokio::time::timeout(TIMEOUT, async {
        while handled.load(Ordering::Relaxed) < handled_while_writing + more {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .with_context(|| {
        format!("the handler took {handled_while_writing} entries, then no {more} more")
    })?;
    let peak = peak_rss_kib(pid)?;
    eprintln!(
        "slow consumer: {ENTRIES} entries of {VALUE_BYTES} B written in {written:.1?}, \
         {handled_while_writing} handled meanwhile; service peak RSS {} MiB (after start-up: {} MiB)",
        peak / 1024,
        baseline / 1024
    );
    drop(child);
    assert!(
        handled_while_writing > 0,
        "no entry was handled while writing"
    );
    assert!(
        peak < 64 * 1024,
        "peak RSS {} MiB while {} MiB were written: something buffers without bound",
        peak / 1024,
        ENTRIES * VALUE_BYTES / (1024 * 1024)
    );
    Ok(())
}

#[tokio::test]
async fn second_sigint_exits_at_once() -> anyhow::Result<()> {
    let server = NatsServer::start(&newest_server()?).await?;
    let mut service = Service::start(&server, 60_000).await?;
    let client = async_nats::connect(server.url()).await?;
    let store = async_nats::jetstream::new(client)
        .get_key_value("slow")
        .await?;
    store.put("stuck", "x".into()).await?;
    service.wait_for_line("handling slowly").await?;

    Service::signal(&service.child, libc::SIGINT)?;
    service
        .wait_for_line("SIGINT received; shutting down")
        .await?;
    let (mut child, _) = service.drain_log();
    // The first SIGINT waits for the stuck handler (up to the 10 s shutdown timeout)...
    anyhow::ensure!(child.try_wait()?.is_none(), "exited on the first SIGINT");
    // ...the second one does not.
    let second = Instant::now();
    Service::signal(&child, libc::SIGINT)?;
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .context("still running after the second SIGINT")??;
    assert_eq!(status.code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(5));
    Ok(())
}
