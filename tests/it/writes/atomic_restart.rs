//! A server killed (SIGKILL) while commits of a thousand keys each are being sent and stored:
//! after the restart, every commit is in the bucket whole or not at all, and every commit
//! acknowledged before the kill is there.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::atomic_bucket;
use crate::common::{jetstream, on_each_server_since, EVENT_TIMEOUT};

const BUCKET: &str = "killed";
const WIDE: usize = 1000;
/// How long after the writer starts each round's kill comes (commits take ~80 ms here, so
/// these land at different points of one).
const KILL_AFTER: [Duration; 4] = [
    Duration::from_millis(30),
    Duration::from_millis(75),
    Duration::from_millis(120),
    Duration::from_millis(190),
];

/// How long the writer waits for a commit's answer (one takes ~80 ms).
const GIVE_UP: Duration = Duration::from_secs(2);

/// What the stream holds of each commit: its messages' batch sequences, and whether one says it
/// is the commit.
#[derive(Debug, Default)]
struct Stored {
    sequences: Vec<u64>,
    commit_flags: usize,
}

/// Every message of the bucket's stream, by batch id (messages without one are counted apart).
async fn stored_batches(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<(BTreeMap<String, Stored>, u64)> {
    let mut stream = js.get_stream(format!("KV_{BUCKET}")).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut batches: BTreeMap<String, Stored> = BTreeMap::new();
    let mut alone = 0;
    if last == 0 {
        return Ok((batches, alone));
    }
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?
        .messages()
        .await?;
    loop {
        let message = tokio::time::timeout(EVENT_TIMEOUT, messages.next())
            .await
            .context("reading the stream")?
            .context("the stream ended")??;
        let sequence = message
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let headers = message.headers.clone().unwrap_or_default();
        match headers.get("Nats-Batch-Id") {
            Some(id) => {
                let stored = batches.entry(id.as_str().to_owned()).or_default();
                let in_batch = headers
                    .get("Nats-Batch-Sequence")
                    .context("no batch sequence")?
                    .as_str()
                    .parse()?;
                stored.sequences.push(in_batch);
                stored.commit_flags += usize::from(headers.get("Nats-Batch-Commit").is_some());
            }
            None => alone += 1,
        }
        if sequence >= last {
            return Ok((batches, alone));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_interrupted_by_a_server_kill_is_whole_or_absent() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |mut server| async move {
        atomic_bucket(&server, BUCKET, 64).await?;
        let mut acknowledged = Vec::new();
        let mut generation = 0u64;
        for (round, kill_after) in KILL_AFTER.iter().enumerate() {
            let kv = atomic_bucket(&server, BUCKET, 64).await?;
            let (started, mut writing) = watch::channel(false);
            let first = generation + 1;
            let writer = tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for generation in first.. {
                    let mut commit = kv.atomic();
                    for key in 0..WIDE {
                        commit = commit.put_json(format!("k.{key}"), &generation);
                    }
                    started.send_replace(true);
                    // Not waiting out the request timeout for an answer that died with the server.
                    match tokio::time::timeout(GIVE_UP, commit.commit()).await {
                        Ok(Ok(committed)) => {
                            acknowledged.push((committed.batch_id().to_owned(), generation))
                        }
                        // The server is gone: this commit's outcome is for the check to find.
                        Ok(Err(_)) | Err(_) => return (acknowledged, generation),
                    }
                }
                (acknowledged, first)
            });
            writing.wait_for(|started| *started).await?;
            tokio::time::sleep(*kill_after).await;
            server.kill().await?;
            let (acked, last) = writer.await?;
            generation = last;
            acknowledged.extend(acked);
            server.restart().await?;
            tracing::info!(round, generation, "restarted");
        }

        let js = jetstream(&server).await?;
        let (batches, alone) = stored_batches(&js).await?;
        assert_eq!(alone, 0, "messages without a batch");
        for (id, stored) in &batches {
            let whole: Vec<u64> = (1..=WIDE as u64).collect();
            assert_eq!(stored.sequences, whole, "commit {id} is not whole");
            assert_eq!(stored.commit_flags, 1, "commit {id}");
        }
        for (id, generation) in &acknowledged {
            assert!(
                batches.contains_key(id),
                "acknowledged commit {generation} ({id}) lost"
            );
        }
        // The latest value of every key is of one commit.
        let kv = atomic_bucket(&server, BUCKET, 64).await?;
        let latest = kv.get_json::<u64>("k.0").await?.context("k.0")?;
        for key in 0..WIDE {
            assert_eq!(
                kv.get_json::<u64>(format!("k.{key}")).await?,
                Some(latest),
                "k.{key}"
            );
        }
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        let restored = log.matches("Restoring partial batch write").count();
        println!(
            "nats-server {}: {} kills; {} commits stored whole ({} acknowledged before a kill), \
             none partly; the server restored {restored} partial batch write(s) on restart",
            server.binary().version,
            KILL_AFTER.len(),
            batches.len(),
            acknowledged.len()
        );
        Ok(())
    })
    .await
}
