//! Read-modify-write across processes: two `kv_incrementer` processes and tasks of the test's
//! own process increment the same counters at once; no increment is lost.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::Command;
use tokio::sync::Barrier;

use crate::common::{connected_broker, on_each_server};

const BUCKET: &str = "rmw_processes";
const PREFIX: &str = "hits";
const KEYS: usize = 3;
/// Increments per process and per task.
const INCREMENTS: usize = 150;
const PROCESSES: usize = 2;
const TASKS: usize = 4;
/// How long a process may take (a few hundred milliseconds measured).
const WAIT: Duration = Duration::from_secs(60);

/// The counters after `increments` increments in turn over the `KEYS` keys (from key 0), per key.
fn expected_per_key(increments: usize) -> [u64; KEYS] {
    let mut counts = [0; KEYS];
    for round in 0..increments {
        counts[round % KEYS] += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_and_tasks_incrementing_the_same_keys_lose_nothing() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let kv = connected_broker(&server)
            .await?
            .key_value(BUCKET)
            .await?
            .with_conflict_retry(faststream_core::kv::ConflictRetry::new().attempts(1_000));
        let started = Instant::now();
        let mut children = Vec::new();
        for index in 0..PROCESSES {
            let name = format!("incrementer-{index}");
            let child = Command::new(env!("CARGO_BIN_EXE_kv_incrementer"))
                .args([
                    "--url",
                    &server.url(),
                    "--bucket",
                    BUCKET,
                    "--prefix",
                    PREFIX,
                ])
                .args([
                    "--keys",
                    &KEYS.to_string(),
                    "--increments",
                    &INCREMENTS.to_string(),
                ])
                .args(["--name", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            children.push((name, child));
        }
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let kv = kv.clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut conflicts = 0;
                for round in 0..INCREMENTS {
                    let done = kv
                        .modify_json(
                            format!("{PREFIX}.{}", round % KEYS),
                            |count: Option<u64>| {
                                Ok::<_, std::convert::Infallible>(Some(count.unwrap_or(0) + 1))
                            },
                        )
                        .await?;
                    conflicts += done.conflicts();
                }
                anyhow::Ok(conflicts)
            }));
        }
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await??;
        }
        for (name, child) in children {
            let output = tokio::time::timeout(WAIT, child.wait_with_output())
                .await
                .with_context(|| format!("{name} still running after {WAIT:?}"))??;
            anyhow::ensure!(
                output.status.success(),
                "{name} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
                .with_context(|| format!("{name}'s summary"))?;
            anyhow::ensure!(summary["increments"] == INCREMENTS, "{name}: {summary}");
            conflicts += summary["conflicts"].as_u64().context("conflicts")? as u32;
        }
        let elapsed = started.elapsed();
        let per_writer = expected_per_key(INCREMENTS);
        let writers = (PROCESSES + TASKS) as u64;
        for (key, expected) in per_writer.iter().enumerate() {
            let count = kv.get_json::<u64>(format!("{PREFIX}.{key}")).await?;
            assert_eq!(count, Some(expected * writers), "{PREFIX}.{key}");
        }
        println!(
            "nats-server {}: {PROCESSES} processes and {TASKS} tasks, {} increments over {KEYS} \
             keys in {elapsed:?}, {conflicts} conflicts retried",
            server.binary().version,
            writers as usize * INCREMENTS
        );
        Ok(())
    })
    .await
}
