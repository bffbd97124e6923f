//! A latest-per-key catch-up read through batched direct gets (`batched_catch_up`, nats-server
//! 2.11+, one message per key):
//! every key's latest entry, then every change, no gap and no duplicate, while writers write;
//! the same through a consumer on older servers; history and other options keep the consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use faststream_core::{KvMessage, Operation};

/// Keys in the bucket; the first 100 are deleted and the next 100 purged before the watch.
const KEYS: u64 = 3_000;

/// The consumers on a bucket's stream now.
async fn consumer_count(
    js: &async_nats::jetstream::Context,
    bucket: &str,
) -> anyhow::Result<usize> {
    let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
    Ok(stream.info().await?.state.consumer_count)
}

/// Waits until the bucket's stream has no consumer (a dropped watch deletes its own).
async fn wait_for_no_consumers(
    js: &async_nats::jetstream::Context,
    bucket: &str,
) -> anyhow::Result<()> {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while consumer_count(js, bucket).await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("a dropped watch's consumer was not deleted")?
}

/// Reads entries until the watch has delivered `revision`; returns them.
async fn read_through(
    watcher: &mut faststream_core::KvWatcher,
    revision: u64,
    entries: &mut Vec<KvMessage>,
) -> anyhow::Result<()> {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while entries
            .last()
            .is_none_or(|entry| entry.revision() < revision)
        {
            match watcher.next_event().await {
                Some(WatchEvent::Entry(entry)) => entries.push(entry),
                Some(other) => anyhow::bail!("unexpected event {other:?}"),
                None => anyhow::bail!("the watch ended"),
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("revision {revision} not delivered"))?
}

#[tokio::test]
async fn a_paged_catch_up_delivers_the_latest_entries_then_every_change() -> anyhow::Result<()> {
    on_each_server_before_and_since(2, 11, |server| async move {
        let paged = server.binary().version_at_least(2, 11);
        let version = server.binary().version.clone();
        let js = jetstream(&server).await?;
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("paged").await?;
        fill(&js, "paged", KEYS, 2).await?;
        for key in 0..100 {
            store.delete(&format!("k.{key}")).await?;
            store.purge(&format!("k.{}", 100 + key)).await?;
        }
        // Writers rewrite the other keys all along the catch-up.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|writer| {
                let js = js.clone();
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    for n in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = 200 + (n * 2 + writer) % (KEYS - 200);
                        // Sent, then stored: the second await is the server's acknowledgement.
                        let sent = js
                            .publish(
                                format!("$KV.paged.k.{key}"),
                                format!("w{writer}.{n}").into(),
                            )
                            .await;
                        let stored = match sent {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        };
                        if !stored {
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(300)).await;
                    }
                })
            })
            .collect();

        let mut watcher = broker
            .kv_watch("k.>", KvWatch::new("paged").batched_catch_up(true))
            .await?;
        let mut entries = Vec::new();
        let catch_up = tokio::time::timeout(EVENT_TIMEOUT * 2, async {
            loop {
                match watcher.next_event().await {
                    Some(WatchEvent::Entry(entry)) => {
                        if entries.is_empty() {
                            // A paged catch-up makes its consumer only once the pages are read.
                            let consumers = consumer_count(&js, "paged").await?;
                            assert_eq!(consumers, usize::from(!paged), "consumers during catch-up");
                        }
                        entries.push(entry);
                    }
                    Some(WatchEvent::CaughtUp(catch_up)) => return Ok(catch_up),
                    Some(other) => anyhow::bail!("unexpected event {other:?}"),
                    None => anyhow::bail!("the watch ended"),
                }
            }
        })
        .await
        .context("no catch-up")??;
        let caught_up_at = entries.len();
        assert_eq!(catch_up.entries, caught_up_at as u64);
        assert!(watcher.status().is_caught_up());
        // Every key, deleted and purged ones as such, once each unless rewritten meanwhile.
        let mut seen: HashMap<&str, Vec<&KvMessage>> = HashMap::new();
        for entry in &entries {
            seen.entry(entry.key()).or_default().push(entry);
        }
        assert_eq!(seen.len(), KEYS as usize, "keys delivered by the catch-up");
        for key in 0..200 {
            let name = format!("k.{key}");
            let expected = if key < 100 {
                Operation::Delete
            } else {
                Operation::Purge
            };
            let operations: Vec<_> = seen[name.as_str()].iter().map(|e| e.operation()).collect();
            assert_eq!(operations, [expected], "{name}");
        }
        for entry in &entries[..caught_up_at] {
            if entry.operation() == Operation::Put {
                assert!(entry.headers().is_none(), "{} has headers", entry.key());
                assert!(entry.created() > std::time::SystemTime::UNIX_EPOCH);
            }
        }

        // Then every change: stop the writers and read up to the bucket's last revision.
        // Stopped, not aborted, each write's acknowledgement awaited: every write is stored
        // before `last`, which a write sent on the writers' connection and not yet
        // acknowledged might not be.
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await?;
        }
        let last = store.put("k.0", "last".into()).await?;
        read_through(&mut watcher, last, &mut entries).await?;
        for pair in entries.windows(2) {
            assert!(
                pair[0].revision() < pair[1].revision(),
                "revisions out of order: {} then {}",
                pair[0].revision(),
                pair[1].revision()
            );
        }
        // No gap after the catch-up: every revision (every write is to a watched key).
        for pair in entries[caught_up_at - 1..].windows(2) {
            assert_eq!(
                pair[1].revision(),
                pair[0].revision() + 1,
                "gap after the catch-up"
            );
        }
        // The state read equals the bucket's.
        let mut state: HashMap<String, &KvMessage> = HashMap::new();
        for entry in &entries {
            state.insert(entry.key().to_owned(), entry);
        }
        for key in 0..KEYS {
            let name = format!("k.{key}");
            let stored = store.entry(&name).await?.context("a key missing")?;
            let read = state[&name];
            assert_eq!(
                (read.revision(), read.operation(), read.value()),
                (stored.revision, stored.operation.into(), &stored.value),
                "{name} on nats-server {version}, caught up at revision {}",
                entries[caught_up_at - 1].revision()
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn history_other_options_and_the_default_keep_the_consumer() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let js = jetstream(&server).await?;
        let broker = connected_broker(&server).await?;
        broker
            .key_value_with(BucketConfig::new("deep").history(5))
            .await?;
        broker.key_value("flat").await?;
        fill(&js, "deep", 500, 3).await?;
        fill(&js, "flat", 500, 1).await?;
        let watches = [
            ("deep", KvWatch::new("deep").batched_catch_up(true)),
            (
                "flat",
                KvWatch::new("flat")
                    .batched_catch_up(true)
                    .headers_only(true),
            ),
            (
                "flat",
                KvWatch::new("flat")
                    .batched_catch_up(true)
                    .include_history(true),
            ),
            // Not asked for: the consumer, as always.
            ("flat", KvWatch::new("flat")),
        ];
        for (bucket, options) in watches {
            let mut watcher = broker.kv_watch("k.>", options.clone()).await?;
            let first = watcher.get_one(EVENT_TIMEOUT).await.context("an entry")?;
            assert_eq!(first.key(), "k.0");
            assert_eq!(consumer_count(&js, bucket).await?, 1, "{options:?}");
            let (entries, _) = read_until_caught_up(&mut watcher).await?;
            assert_eq!(entries + 1, 500, "{options:?}");
            drop(watcher);
            wait_for_no_consumers(&js, bucket).await?;
        }
        // History 1 and the latest values: the pages, and no consumer until they are read.
        let mut paged = broker
            .kv_watch("k.>", KvWatch::new("flat").batched_catch_up(true))
            .await?;
        paged.get_one(EVENT_TIMEOUT).await.context("an entry")?;
        assert_eq!(consumer_count(&js, "flat").await?, 0);
        let (entries, _) = read_until_caught_up(&mut paged).await?;
        assert_eq!(entries + 1, 500);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_caught_up_in_pages_holds_the_buckets_state() -> anyhow::Result<()> {
    on_each_server_before_and_since(2, 11, |server| async move {
        let js = jetstream(&server).await?;
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("paged_view").await?;
        fill(&js, "paged_view", KEYS, 1).await?;
        for key in 0..100 {
            store.delete(&format!("k.{key}")).await?;
        }
        let options = faststream_core::kv::KvViewOptions::new("paged_view").batched_catch_up(true);
        let mut view = broker.kv_view_raw(options, ">").await?;
        assert_eq!(view.len(), KEYS as usize - 100);
        assert!(view.get("k.0").is_none());
        assert_eq!(view.get("k.100").as_deref(), Some(&bytes::Bytes::from("0")));
        // Changes after the catch-up reach it.
        store.put("k.0", "back".into()).await?;
        wait_for_view(&mut view, "k.0 written again", |view| {
            view.contains_key("k.0")
        })
        .await?;
        Ok(())
    })
    .await
}
