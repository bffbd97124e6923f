//! Why a watch re-created its consumer, caused for real and counted (`WatchStatus::recreations`,
//! which `faststream_kv_watch_recreated_total` exports): silence (its consumer deleted on the
//! server, the connection up), a gap (entries dropped by the client while nobody read the
//! watch), a replaced stream (the bucket deleted and created again: `StartedOver`, then the new
//! state). `reconnected` is caused in `observability/health.rs`.

use super::*;
use faststream_core::kv::{RecreateReason, WatchEvent, WatchStatus};
use faststream_core::KvWatcher;

/// The watch's re-creations, by reason, in `RecreateReason::ALL`'s order.
fn recreations(status: &WatchStatus) -> [u64; 4] {
    RecreateReason::ALL.map(|reason| status.recreations(reason))
}

/// Reads events until `done` holds for those read, up to `within`; returns them.
async fn read_events(
    watcher: &mut KvWatcher,
    within: Duration,
    done: impl Fn(&[WatchEvent]) -> bool,
) -> anyhow::Result<Vec<WatchEvent>> {
    let mut events = Vec::new();
    let read = tokio::time::timeout(within, async {
        while !done(&events) {
            events.push(watcher.next_event().await.context("the watch ended")?);
        }
        anyhow::Ok(())
    })
    .await;
    match read {
        Ok(result) => result.map(|()| events),
        Err(_) => anyhow::bail!(
            "timed out after {within:?}; read {} events, the last: {:?}",
            events.len(),
            events.last()
        ),
    }
}

/// `key@revision` of each entry among `events`.
fn entries(events: &[WatchEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            WatchEvent::Entry(entry) => Some(format!("{}@{}", entry.key(), entry.revision())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_consumer_deleted_on_the_server_is_recreated_for_silence() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("hushed").await?;
        store.put("a", "1".into()).await?;
        let timeout = Duration::from_secs(1);
        let mut watcher = broker
            .kv_watch(">", KvWatch::new("hushed").timeout(timeout))
            .await?;
        let status = watcher.status();
        read_events(&mut watcher, EVENT_TIMEOUT, |events| {
            matches!(events.last(), Some(WatchEvent::CaughtUp(_)))
        })
        .await?;

        // The consumer goes; the connection stays up, and nothing more comes: no entry, no
        // heartbeat.
        let consumers = consumer_configs(&server, "hushed").await?;
        let [consumer] = consumers.as_slice() else {
            anyhow::bail!("one consumer expected: {consumers:?}");
        };
        let name = consumer.name.clone().context("a named consumer")?;
        let silenced = Instant::now();
        jetstream(&server)
            .await?
            .delete_consumer_from_stream(&name, "KV_hushed")
            .await?;
        let reader = tokio::spawn(async move {
            let events = read_events(&mut watcher, EVENT_TIMEOUT, |events| {
                entries(events).contains(&"b@2".to_owned())
            })
            .await;
            (events, watcher)
        });
        faststream_testing::wait_for("the re-creation", EVENT_TIMEOUT, || async {
            let counted = recreations(&status);
            anyhow::Ok(((counted[0] == 1).then_some(()), format!("{counted:?}")))
        })
        .await?;
        let noticed = silenced.elapsed();
        store.put("b", "2".into()).await?;
        let (events, _watcher) = reader.await?;
        let events = events?;
        eprintln!(
            "nats-server {}: consumer deleted, re-created for silence after {noticed:?}",
            server.binary().version
        );
        // Silence is noticed `timeout` after the server was last heard from, which is at most
        // `timeout / 2` (the heartbeat interval) before the deletion; measured 1.01 s on both
        // servers, and the upper bound leaves a second for a loaded machine.
        assert!(
            noticed >= timeout / 2 && noticed < timeout * 2,
            "noticed after {noticed:?}"
        );
        assert_eq!(entries(&events), ["b@2"]);
        // Silence, and only silence: no reconnection, no gap, the same stream.
        assert_eq!(recreations(&status), [1, 0, 0, 0]);
        // The new consumer only.
        wait_for_consumers(&server, "hushed", 1, EVENT_TIMEOUT).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn entries_dropped_by_a_client_nobody_reads_are_a_gap() -> anyhow::Result<()> {
    // async-nats's own buffer: the default one holds more than the server sends unanswered.
    unread_entries(Some(65_536)).await
}

#[tokio::test]
async fn the_default_subscription_buffer_holds_what_the_server_sends_unanswered(
) -> anyhow::Result<()> {
    unread_entries(None).await
}

/// A watch left unread while 80,000 small entries arrive, with subscriptions holding
/// `capacity` messages (`None`: the default): every entry once, in order, afterwards; a gap
/// counted only where the buffer was too small.
async fn unread_entries(capacity: Option<usize>) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let mut config = faststream_core::BrokerConfig::new(server.url());
        if let Some(capacity) = capacity {
            config = config.subscription_capacity(capacity);
        }
        let broker = faststream_core::NatsBroker::connect(config).await?;
        broker.key_value("dropped").await?;
        let mut watcher = broker.kv_watch(">", KvWatch::new("dropped")).await?;
        let status = watcher.status();
        let js = jetstream(&server).await?;

        // Read 24 MB first: each flow-control answer doubles what the server sends unanswered,
        // from 2 MB up to 32 MB.
        const LARGE: u64 = 6_000;
        let value = bytes::Bytes::from(vec![b'v'; 4096]);
        crate::common::publish_all(
            &js,
            (0..LARGE).map(|n| (format!("$KV.dropped.big.{n}"), value.clone())),
        )
        .await?;
        read_events(&mut watcher, EVENT_TIMEOUT * 2, |events| {
            entries(events).len() as u64 == LARGE
        })
        .await?;

        // Then not read: 80,000 small entries (about 12 MB, under what the server now sends
        // unanswered) overflow the client's 65,536-message buffer for the subscription, and
        // async-nats drops the rest (a slow consumer).
        const SMALL: u64 = 80_000;
        let last = crate::common::publish_all(
            &js,
            (0..SMALL).map(|n| {
                (
                    format!("$KV.dropped.k.{n}"),
                    bytes::Bytes::from_static(b"x"),
                )
            }),
        )
        .await?;
        let events = read_events(&mut watcher, Duration::from_secs(120), |events| {
            matches!(events.last(), Some(WatchEvent::Entry(entry)) if entry.revision() == last)
        })
        .await?;
        let counted = recreations(&status);
        eprintln!(
            "nats-server {}: {SMALL} entries unread, re-creations by reason {counted:?}",
            server.binary().version
        );
        // Every entry, once, in order: the watch resumed after the last one it had.
        let revisions: Vec<u64> = events
            .iter()
            .filter_map(|event| match event {
                WatchEvent::Entry(entry) => Some(entry.revision()),
                _ => None,
            })
            .collect();
        assert_eq!(revisions, (LARGE + 1..=last).collect::<Vec<_>>());
        if capacity.is_some() {
            assert!(counted[2] >= 1, "no gap counted: {counted:?}");
        } else {
            assert_eq!(counted[2], 0, "entries dropped: {counted:?}");
        }
        assert_eq!(
            [counted[0], counted[1], counted[3]],
            [0, 0, 0],
            "{counted:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_replaced_stream_starts_the_watch_over_on_the_new_state() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        create_bucket(&server, "replaced", 5).await?;
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("replaced").await?;
        store.put("old.a", "1".into()).await?;
        store.put("old.b", "2".into()).await?;
        let mut watcher = broker
            .kv_watch(">", KvWatch::new("replaced").timeout(Duration::from_secs(1)))
            .await?;
        let status = watcher.status();
        let before = read_events(&mut watcher, EVENT_TIMEOUT, |events| {
            matches!(events.last(), Some(WatchEvent::CaughtUp(_)))
        })
        .await?;
        assert_eq!(entries(&before), ["old.a@1", "old.b@2"]);

        let js = jetstream(&server).await?;
        js.delete_key_value("replaced").await?;
        // Read while the bucket is gone and comes back, so the watch sees it go.
        let reader = tokio::spawn(async move {
            let events = read_events(&mut watcher, EVENT_TIMEOUT * 2, |events| {
                let started_over = events
                    .iter()
                    .position(|event| matches!(event, WatchEvent::StartedOver));
                started_over.is_some_and(|at| {
                    let after = &events[at..];
                    entries(after).len() == 2
                        && after.iter().any(|e| matches!(e, WatchEvent::CaughtUp(_)))
                })
            })
            .await;
            (events, watcher)
        });
        faststream_testing::wait_for("the watch to lose its consumer", EVENT_TIMEOUT, || async {
            let phase = status.phase();
            let recreating = phase == faststream_core::kv::WatchPhase::Recreating;
            anyhow::Ok((recreating.then_some(()), format!("{phase:?}")))
        })
        .await?;
        create_bucket(&server, "replaced", 5).await?;
        put_fresh(&server, "replaced", "new.c", "3").await?;
        put_fresh(&server, "replaced", "new.d", "4").await?;
        let (events, _watcher) = reader.await?;
        let events = events?;

        let started_over = events
            .iter()
            .position(|event| matches!(event, WatchEvent::StartedOver))
            .context("no StartedOver")?;
        // Nothing from the old stream after it was deleted, then the start over, then the new
        // stream's state from revision 1 and its catch-up.
        assert_eq!(entries(&events[..started_over]), Vec::<String>::new());
        assert_eq!(entries(&events[started_over..]), ["new.c@1", "new.d@2"]);
        let caught_up = events
            .iter()
            .filter(|event| matches!(event, WatchEvent::CaughtUp(_)))
            .count();
        assert_eq!(caught_up, 1, "{events:?}");
        let counted = recreations(&status);
        eprintln!(
            "nats-server {}: bucket replaced, events {events:?}, re-creations by reason {counted:?}",
            server.binary().version
        );
        // The deleted stream took the consumer with it, silently: noticed as silence, then one
        // start over on the new stream.
        assert_eq!(counted[3], 1, "stream_replaced: {counted:?}");
        assert_eq!(counted[0], 1, "silence: {counted:?}");
        assert_eq!([counted[1], counted[2]], [0, 0], "{counted:?}");
        Ok(())
    })
    .await
}
