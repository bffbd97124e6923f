//! A watch stops when the last handle on it is dropped: its consumer is deleted on the server
//! at once, not left to its inactive threshold.

use super::*;

/// Deleted within this long of the last handle going: measured 2-4 ms on both servers; the
/// margin is for a loaded machine, and the inactive threshold, which would remove it anyway,
/// is 30 s.
const DELETED_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_watch_stops_when_the_last_handle_on_it_is_dropped() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("handles").await?;
        store.put("a", "1".into()).await?;

        let watcher = broker.kv_watch(">", KvWatch::new("handles")).await?;
        wait_for_consumers(&server, "handles", 1, EVENT_TIMEOUT).await?;
        let dropped = Instant::now();
        drop(watcher);
        wait_for_consumers(&server, "handles", 0, DELETED_WITHIN).await?;
        let watcher_gone = dropped.elapsed();

        // A view's clones share one watch.
        let view = broker.kv_view_raw("handles", ">").await?;
        let mut clone = view.clone();
        wait_for_consumers(&server, "handles", 1, EVENT_TIMEOUT).await?;
        drop(view);
        // The clone left still follows the bucket, through the same consumer.
        let revision = store.put("b", "2".into()).await?;
        tokio::time::timeout(EVENT_TIMEOUT, async {
            while clone.revision() < revision {
                clone.changed().await?;
            }
            anyhow::Ok(())
        })
        .await
        .context("the clone left did not follow")??;
        assert_eq!(clone.keys(), ["a", "b"]);
        assert_eq!(consumer_configs(&server, "handles").await?.len(), 1);
        let dropped = Instant::now();
        drop(clone);
        wait_for_consumers(&server, "handles", 0, DELETED_WITHIN).await?;
        let view_gone = dropped.elapsed();
        eprintln!(
            "nats-server {}: consumer deleted {watcher_gone:?} after the watcher was dropped, \
             {view_gone:?} after the view's last clone",
            server.binary().version
        );
        Ok(())
    })
    .await
}
