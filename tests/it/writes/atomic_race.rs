//! Atomic commits racing conflicting writers: transfers between two accounts, each a commit
//! updating both at the revisions read, while other writers keep rewriting the accounts (a new
//! revision, the same value) so that many commits find a key changed. The sum of the two never
//! changes: in every state a view publishes, and at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use faststream_core::{Error, KeyValue, KvView};

use super::atomic_bucket;
use crate::common::{connected_broker, on_each_server_since};

const BUCKET: &str = "race";
const TOTAL: i64 = 100;
const TRANSFERRERS: usize = 3;
/// Commits each transferrer makes.
const TRANSFERS: usize = 30;
const REWRITERS: usize = 2;
/// Between two rewrites of a rewriter: often enough that many commits meet one (a transfer's
/// reads and commit take about 5 ms here: nats-server stages each batch of a file-stored R1
/// stream in a file store of its own), rarely enough that they get through.
const REWRITE_PACE: std::time::Duration = std::time::Duration::from_millis(10);

/// Moves `amount` from `acct.a` to `acct.b` in one commit, at the revisions read; retries on a
/// changed key. Returns how many times a key had changed.
async fn transfer(kv: &KeyValue, amount: i64) -> anyhow::Result<u64> {
    let retry = faststream_core::kv::ConflictRetry::new();
    let mut changed = 0;
    loop {
        let a = kv.entry_json::<i64>("acct.a").await?.context("acct.a")?;
        let b = kv.entry_json::<i64>("acct.b").await?.context("acct.b")?;
        let committed = kv
            .atomic()
            .update_json("acct.a", &(a.value - amount), a.revision)
            .update_json("acct.b", &(b.value + amount), b.revision)
            .commit()
            .await;
        match committed {
            Ok(committed) => {
                anyhow::ensure!(committed.len() == 2, "{committed:?}");
                return Ok(changed);
            }
            Err(error) if error.is_key_changed() => {
                let Error::KeyChanged {
                    key,
                    operation: "commit",
                    ..
                } = &error
                else {
                    anyhow::bail!("is_key_changed but {error:?}");
                };
                anyhow::ensure!(key == "acct.a" || key == "acct.b", "{error}");
                changed += 1;
                // Transferrers collide with each other too: spread them out.
                tokio::time::sleep(retry.pause_after(changed.min(6) as u32)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_racing_conflicting_writers_are_never_half_applied() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, BUCKET, 10).await?;
        kv.put_json("acct.a", &TOTAL).await?;
        kv.put_json("acct.b", &0i64).await?;
        let view: KvView<i64> = connected_broker(&server)
            .await?
            .kv_view(BUCKET, "acct.*")
            .await?;
        let done = Arc::new(AtomicBool::new(false));

        // The reader: every state the view publishes keeps the sum.
        let states = Arc::new(AtomicU64::new(0));
        let reader = {
            let (mut view, done, states) = (view.clone(), Arc::clone(&done), Arc::clone(&states));
            tokio::spawn(async move {
                while !done.load(Ordering::Acquire) {
                    let snapshot = view.snapshot();
                    let a = snapshot.get("acct.a").map(|v| **v).context("acct.a")?;
                    let b = snapshot.get("acct.b").map(|v| **v).context("acct.b")?;
                    anyhow::ensure!(
                        a + b == TOTAL,
                        "half a commit at revision {}: a={a} b={b}",
                        snapshot.revision()
                    );
                    states.fetch_add(1, Ordering::Relaxed);
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(100), view.changed())
                            .await;
                }
                anyhow::Ok(())
            })
        };
        // The conflicting writers: a new revision of an account, its value unchanged.
        let rewrites = Arc::new(AtomicU64::new(0));
        let mut rewriters = Vec::new();
        for index in 0..REWRITERS {
            let kv = connected_broker(&server)
                .await?
                .key_value(BUCKET)
                .await?
                .with_conflict_retry(faststream_core::kv::ConflictRetry::new().attempts(1_000));
            let (done, rewrites) = (Arc::clone(&done), Arc::clone(&rewrites));
            rewriters.push(tokio::spawn(async move {
                let key = if index % 2 == 0 { "acct.a" } else { "acct.b" };
                while !done.load(Ordering::Acquire) {
                    kv.modify_json(key, |value: Option<i64>| {
                        Ok::<_, std::convert::Infallible>(value)
                    })
                    .await?;
                    rewrites.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(REWRITE_PACE).await;
                }
                anyhow::Ok(())
            }));
        }
        let started = Instant::now();
        let mut transferrers = Vec::new();
        for index in 0..TRANSFERRERS {
            let kv = connected_broker(&server).await?.key_value(BUCKET).await?;
            transferrers.push(tokio::spawn(async move {
                let mut changed = 0;
                for round in 0..TRANSFERS {
                    let amount = ((index * TRANSFERS + round) % 21) as i64 - 10;
                    changed += transfer(&kv, amount).await?;
                }
                anyhow::Ok(changed)
            }));
        }
        let mut changed = 0;
        for task in transferrers {
            changed += task.await??;
        }
        let elapsed = started.elapsed();
        done.store(true, Ordering::Release);
        for task in rewriters {
            task.await??;
        }
        reader.await??;

        let a = kv.get_json::<i64>("acct.a").await?.context("acct.a")?;
        let b = kv.get_json::<i64>("acct.b").await?.context("acct.b")?;
        assert_eq!(a + b, TOTAL, "a={a} b={b}");
        let net: i64 = (0..TRANSFERRERS * TRANSFERS)
            .map(|i| (i % 21) as i64 - 10)
            .sum();
        assert_eq!(
            (a, b),
            (TOTAL - net, net),
            "a transfer lost or applied twice"
        );
        // The race happened: commits found keys changed.
        assert!(changed > 0, "no commit met a conflicting writer");
        let states = states.load(Ordering::Relaxed);
        assert!(states > 10, "the reader checked only {states} states");
        println!(
            "nats-server {}: {} commits in {elapsed:?} racing {} rewrites, {changed} refused for \
             a changed key and retried; {states} view states checked",
            server.binary().version,
            TRANSFERRERS * TRANSFERS,
            rewrites.load(Ordering::Relaxed)
        );
        Ok(())
    })
    .await
}

/// Keys of each large commit: more than a view applies in one go otherwise (512), so that
/// without holding a commit its entries would be published in parts.
const WIDE: usize = 1000;
const GENERATIONS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_never_shows_part_of_a_commit_of_a_thousand_keys() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "wide", 1).await?;
        let view: KvView<u64> = connected_broker(&server)
            .await?
            .kv_view("wide", "k.*")
            .await?;
        let done = Arc::new(AtomicBool::new(false));
        // Every published state: no key, or all of them at one generation.
        let reader = {
            let (mut view, done) = (view.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut states = 0u64;
                while !done.load(Ordering::Acquire) {
                    let snapshot = view.snapshot();
                    let generations: std::collections::BTreeSet<u64> =
                        snapshot.iter().map(|(_, value)| **value).collect();
                    anyhow::ensure!(
                        snapshot.is_empty() || (snapshot.len() == WIDE && generations.len() == 1),
                        "part of a commit at revision {}: {} keys, generations {generations:?}",
                        snapshot.revision(),
                        snapshot.len()
                    );
                    states += 1;
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(100), view.changed())
                            .await;
                }
                anyhow::Ok(states)
            })
        };
        let started = Instant::now();
        for generation in 1..=GENERATIONS {
            let mut commit = kv.atomic();
            for key in 0..WIDE {
                commit = commit.put_json(format!("k.{key}"), &generation);
            }
            let last = commit.commit().await?.last_revision();
            // The view has it all (it shows the commit's last revision), then the next one.
            faststream_testing::wait_for(
                "the view to show the commit",
                crate::common::EVENT_TIMEOUT,
                || {
                    let view = view.clone();
                    async move { anyhow::Ok(view.revision() == last) }
                },
            )
            .await?;
        }
        let elapsed = started.elapsed();
        done.store(true, Ordering::Release);
        let states = reader.await??;
        let last = view.snapshot();
        assert_eq!(last.len(), WIDE);
        assert!(last.iter().all(|(_, value)| **value == GENERATIONS));
        println!(
            "nats-server {}: {GENERATIONS} commits of {WIDE} keys in {elapsed:?}, {states} view \
             states checked",
            server.binary().version
        );
        Ok(())
    })
    .await
}
