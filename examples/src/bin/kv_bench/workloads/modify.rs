//! `modify OPS`: read-modify-write throughput under contention. OPS increments of JSON counters
//! by 1, 4 and 16 tasks, on 1 key and on 16 keys: `KeyValue::modify_json` (conflicts retried with
//! its jittered backoff) against the loop one writes by hand with async-nats (`entry`, then
//! `update` at its revision, again at once on a conflict). Both sides in this process, each task
//! on the side's one connection; the counters are checked to end exactly OPS higher (no update
//! lost) before a run counts.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use faststream_core::kv::ConflictRetry;
use faststream_core::KeyValue;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::broker::connected_broker;
use crate::cli::ModifySizes;
use crate::common::url;
use crate::data::drop_bucket;
use crate::report::{compare, Summary};
use crate::workloads::{FRAMEWORK, RAW, REPEATS};

/// (tasks, keys) of each configuration.
const CONFIGURATIONS: [(usize, usize); 6] = [(1, 1), (4, 1), (16, 1), (1, 16), (4, 16), (16, 16)];

/// Enough attempts that no increment gives up under the heaviest contention here: the
/// benchmark measures the cost of conflicts, not the bound.
const ATTEMPTS: u32 = 100_000;

/// The key task `task` increments in its `round`-th increment.
fn key_of(task: usize, round: usize, keys: usize) -> String {
    format!("c.{}", (task + round) % keys)
}

/// Runs every configuration, both sides alternating, and adds the ratios to `summary`.
pub async fn run(sizes: ModifySizes, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    for (tasks, keys) in CONFIGURATIONS {
        let bucket = format!("bench_modify_{pid}_{tasks}_{keys}");
        let runs = compare(&[FRAMEWORK, RAW], REPEATS, |implementation| {
            let bucket = bucket.clone();
            async move {
                measure(&implementation, &bucket, sizes.ops, tasks, keys)
                    .await
                    .with_context(|| format!("{implementation}: {tasks} task(s) on {keys} key(s)"))
            }
        })
        .await?;
        drop_bucket(&bucket).await?;
        let ratio = runs[0].median("ops_per_s") / runs[1].median("ops_per_s");
        summary.insert(
            format!("modify_{tasks}_tasks_{keys}_keys_vs_raw"),
            json!(ratio),
        );
        summary.insert(
            format!("modify_{tasks}_tasks_{keys}_keys_conflicts_per_op"),
            json!([
                runs[0].median("conflicts_per_op"),
                runs[1].median("conflicts_per_op")
            ]),
        );
    }
    Ok(())
}

/// One run of `implementation`: a fresh bucket, `ops` increments by `tasks` tasks over `keys`
/// keys, timed from the tasks' start to the last increment.
async fn measure(
    implementation: &str,
    bucket: &str,
    ops: usize,
    tasks: usize,
    keys: usize,
) -> anyhow::Result<Value> {
    drop_bucket(bucket).await?;
    let kv = connected_broker()
        .await?
        .key_value(bucket)
        .await?
        .with_conflict_retry(ConflictRetry::new().attempts(ATTEMPTS));
    let raw = async_nats::jetstream::new(async_nats::connect(url()).await?)
        .get_key_value(bucket)
        .await?;
    let barrier = Arc::new(Barrier::new(tasks + 1));
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let rounds = ops / tasks + usize::from(task < ops % tasks);
        let barrier = Arc::clone(&barrier);
        let (kv, raw) = (kv.clone(), raw.clone());
        let framework = implementation == FRAMEWORK;
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut conflicts = 0u64;
            for round in 0..rounds {
                let key = key_of(task, round, keys);
                conflicts += if framework {
                    ours(&kv, &key).await?
                } else {
                    by_hand(&raw, &key).await?
                };
            }
            anyhow::Ok(conflicts)
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut conflicts = 0;
    for (task, handle) in handles.into_iter().enumerate() {
        conflicts += handle.await?.with_context(|| format!("task {task}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut total = 0;
    for key in 0..keys {
        total += kv.get_json::<u64>(format!("c.{key}")).await?.unwrap_or(0);
    }
    anyhow::ensure!(
        total == ops as u64,
        "{implementation}: {total} of {ops} increments stored"
    );
    Ok(json!({
        "workload": "modify",
        "implementation": implementation,
        "tasks": tasks,
        "keys": keys,
        "ops": ops,
        "seconds": seconds,
        "ops_per_s": ops as f64 / seconds,
        "conflicts_per_op": conflicts as f64 / ops as f64,
    }))
}

/// One increment through `modify_json`; returns the conflicts retried.
async fn ours(kv: &KeyValue, key: &str) -> anyhow::Result<u64> {
    let done = kv
        .modify_json(key, |count: Option<u64>| {
            Ok::<_, std::convert::Infallible>(Some(count.unwrap_or(0) + 1))
        })
        .await?;
    Ok(u64::from(done.conflicts()))
}

/// One increment as written by hand with async-nats: read the entry, write at its revision,
/// start over at once on a conflict; returns the conflicts retried.
async fn by_hand(store: &kv::Store, key: &str) -> anyhow::Result<u64> {
    let mut conflicts = 0;
    loop {
        let (count, revision) = match store.entry(key).await? {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice::<u64>(&entry.value).context("a counter")?,
                entry.revision,
            ),
            Some(entry) => (0, entry.revision),
            None => (0, 0),
        };
        let next = serde_json::to_vec(&(count + 1))?;
        match store.update(key, next.into(), revision).await {
            Ok(_) => return Ok(conflicts),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => conflicts += 1,
            Err(error) => return Err(error.into()),
        }
    }
}
