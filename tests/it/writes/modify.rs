//! Read-modify-write: concurrent `modify_json` calls on one key each apply to the value the
//! others left (none lost); writing nothing, the function's errors, deleted keys, and retries
//! that run out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use faststream_core::kv::ConflictRetry;
use faststream_core::{Error, KeyValue};
use tokio::sync::Barrier;

use crate::common::{connected_broker, on_each_server};

type Infallible = std::convert::Infallible;

/// Adds one to the JSON counter `key`; returns the value written and the conflicts retried.
async fn increment(kv: &KeyValue, key: &str) -> anyhow::Result<(u64, u32)> {
    let done = kv
        .modify_json(key, |count: Option<u64>| {
            Ok::<_, Infallible>(Some(count.unwrap_or(0) + 1))
        })
        .await?;
    anyhow::ensure!(done.written, "nothing written");
    Ok((done.value.context("value")?, done.conflicts()))
}

/// `count` handles on `server`, two tasks sharing each connection.
async fn handles(
    server: &faststream_testing::NatsServer,
    bucket: &str,
    count: usize,
) -> anyhow::Result<Vec<KeyValue>> {
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count.div_ceil(2) {
        // Patient: these tests prove that no increment is lost, not that the default bound
        // suffices when 8 writers share a loaded 2-core machine.
        let kv = connected_broker(server)
            .await?
            .key_value(bucket)
            .await?
            .with_conflict_retry(ConflictRetry::new().attempts(1_000));
        handles.push(kv.clone());
        handles.push(kv);
    }
    handles.truncate(count);
    Ok(handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_increments_end_exactly_ten_higher() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let kv = connected_broker(&server)
            .await?
            .key_value("rmw_ten")
            .await?;
        kv.put_json("visits", &5u64).await?;
        let barrier = Arc::new(Barrier::new(10));
        let mut tasks = Vec::new();
        for kv in handles(&server, "rmw_ten", 10).await? {
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                increment(&kv, "visits").await
            }));
        }
        let mut written = Vec::new();
        let mut conflicts = 0;
        for task in tasks {
            let (value, retried) = task.await??;
            written.push(value);
            conflicts += retried;
        }
        written.sort_unstable();
        // Each call applied to the value the one before it left.
        assert_eq!(written, (6..=15).collect::<Vec<u64>>());
        assert_eq!(kv.get_json::<u64>("visits").await?, Some(15));
        println!(
            "nats-server {}: 10 concurrent increments, {conflicts} conflicts retried",
            server.binary().version
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_fifty_increments_over_three_keys_lose_nothing() -> anyhow::Result<()> {
    const TASKS: usize = 8;
    const ROUNDS: usize = 50;
    const KEYS: usize = 3;
    on_each_server(|server| async move {
        let barrier = Arc::new(Barrier::new(TASKS));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (task, kv) in handles(&server, "rmw_many", TASKS)
            .await?
            .into_iter()
            .enumerate()
        {
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut conflicts = 0;
                for round in 0..ROUNDS {
                    let key = format!("counter.{}", (task + round) % KEYS);
                    conflicts += increment(&kv, &key).await?.1;
                }
                anyhow::Ok(conflicts)
            }));
        }
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await??;
        }
        let elapsed = started.elapsed();
        let kv = connected_broker(&server)
            .await?
            .key_value("rmw_many")
            .await?;
        let mut total = 0;
        for key in 0..KEYS {
            let expected = (0..TASKS)
                .flat_map(|task| (0..ROUNDS).map(move |round| (task + round) % KEYS))
                .filter(|k| *k == key)
                .count() as u64;
            let count = kv.get_json::<u64>(format!("counter.{key}")).await?;
            assert_eq!(count, Some(expected), "counter.{key}");
            total += expected;
        }
        assert_eq!(total, (TASKS * ROUNDS) as u64);
        println!(
            "nats-server {}: {TASKS} tasks x {ROUNDS} increments over {KEYS} keys in {elapsed:?}, \
             {conflicts} conflicts retried ({:.2} per increment)",
            server.binary().version,
            f64::from(conflicts) / total as f64
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn writing_nothing_errors_and_deleted_keys() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let kv = connected_broker(&server)
            .await?
            .key_value("rmw_cases")
            .await?;
        // An absent key is created, written at "no entry".
        let created = kv
            .modify("k", |current: Option<&Bytes>| {
                assert!(current.is_none());
                Ok::<_, Infallible>(Some(Bytes::from("1")))
            })
            .await?;
        assert!(created.written);
        assert_eq!(
            (created.attempts, created.value.as_deref()),
            (1, Some(&b"1"[..]))
        );
        assert_eq!(
            kv.entry("k").await?.context("k")?.revision,
            created.revision
        );

        // Returning `None` writes nothing and reports what was read.
        let kept = kv
            .modify("k", |_: Option<&Bytes>| Ok::<_, Infallible>(None))
            .await?;
        assert!(!kept.written);
        assert_eq!(
            (kept.revision, kept.value.as_deref()),
            (created.revision, Some(&b"1"[..]))
        );
        assert_eq!(
            kv.entry("k").await?.context("k")?.revision,
            created.revision
        );

        // The function's error comes back as the source, written nothing.
        #[derive(Debug)]
        struct Refused(&'static str);
        impl std::fmt::Display for Refused {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "refused: {}", self.0)
            }
        }
        impl std::error::Error for Refused {}
        let error = kv
            .modify("k", |_: Option<&Bytes>| Err(Refused("no")))
            .await
            .expect_err("refused");
        match &error {
            Error::KeyValue {
                bucket,
                operation: "modify",
                key,
                source,
            } => {
                assert_eq!((bucket.as_str(), key.as_str()), ("rmw_cases", "k"));
                assert_eq!(source.downcast_ref::<Refused>().map(|r| r.0), Some("no"));
            }
            other => anyhow::bail!("expected KeyValue, got {other:?}"),
        }
        assert_eq!(
            kv.entry("k").await?.context("k")?.revision,
            created.revision
        );

        // A deleted key has no value; the write goes over its marker.
        kv.delete("k").await?;
        let marker = kv.entry("k").await?.context("k")?.revision;
        let revived = kv
            .modify_json("k", |count: Option<u64>| {
                assert_eq!(count, None);
                Ok::<_, Infallible>(Some(100u64))
            })
            .await?;
        assert!(revived.revision > marker);
        assert_eq!(kv.get_json::<u64>("k").await?, Some(100));
        let kept = kv
            .modify_json("k", |_: Option<u64>| Ok::<_, Infallible>(None))
            .await?;
        assert_eq!((kept.written, kept.value), (false, Some(100)));

        // A stored value that does not decode: named, no retry, nothing written.
        kv.put("text", "not a number".into()).await?;
        let calls = AtomicU32::new(0);
        let error = kv
            .modify_json("text", |count: Option<u64>| {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(count.map(|c| c + 1))
            })
            .await
            .expect_err("does not decode");
        assert!(
            matches!(&error, Error::Decode { key, .. } if key == "text"),
            "{error:?}"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        assert_eq!(kv.get("text").await?.as_deref(), Some(&b"not a number"[..]));
        Ok(())
    })
    .await
}

/// A writer on a thread of its own (its own runtime and connection), which the test's function
/// asks, synchronously, to change the key between `modify`'s read and its write.
struct Interloper {
    requests: std::sync::mpsc::Sender<std::sync::mpsc::Sender<anyhow::Result<u64>>>,
}

impl Interloper {
    fn start(url: String, bucket: &'static str, key: &'static str) -> Self {
        let (requests, received) =
            std::sync::mpsc::channel::<std::sync::mpsc::Sender<anyhow::Result<u64>>>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = async_nats::connect(url).await?;
                let store = async_nats::jetstream::new(client)
                    .get_key_value(bucket)
                    .await?;
                while let Ok(reply) = received.recv() {
                    let written = store.put(key, "theirs".into()).await.map_err(Into::into);
                    let _ = reply.send(written);
                }
                anyhow::Ok(())
            })
        });
        Self { requests }
    }

    /// Changes the key, waiting until it is written.
    fn interfere(&self) -> anyhow::Result<u64> {
        let (reply, written) = std::sync::mpsc::channel();
        self.requests.send(reply)?;
        written.recv_timeout(Duration::from_secs(10))?
    }
}

#[tokio::test]
async fn retries_that_run_out_name_bucket_key_and_attempts() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let kv = connected_broker(&server)
            .await?
            .key_value("rmw_out")
            .await?;
        kv.put("contended", "0".into()).await?;
        let interloper = Interloper::start(server.url(), "rmw_out", "contended");
        let calls = AtomicU32::new(0);
        let error = kv
            .clone()
            .with_conflict_retry(ConflictRetry::new().attempts(3))
            .modify("contended", |_: Option<&Bytes>| {
                calls.fetch_add(1, Ordering::Relaxed);
                interloper.interfere()?; // changed between this read and the write
                Ok::<_, anyhow::Error>(Some(Bytes::from("ours")))
            })
            .await
            .expect_err("always changed");
        assert!(
            matches!(&error, Error::TooManyConflicts { bucket, key, attempts: 3 }
                if bucket == "rmw_out" && key == "contended"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "could not modify `contended` in bucket `rmw_out`: it changed between read and \
             write 3 time(s) in a row"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(kv.get("contended").await?.as_deref(), Some(&b"theirs"[..]));

        // With the default, one interference is retried and the write lands.
        let once = AtomicU32::new(0);
        let done = kv
            .modify("contended", |_: Option<&Bytes>| {
                if once.fetch_add(1, Ordering::Relaxed) == 0 {
                    interloper.interfere()?;
                }
                Ok::<_, anyhow::Error>(Some(Bytes::from("ours")))
            })
            .await?;
        assert_eq!((done.attempts, done.conflicts()), (2, 1));
        assert_eq!(kv.get("contended").await?.as_deref(), Some(&b"ours"[..]));
        Ok(())
    })
    .await
}
