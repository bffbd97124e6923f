//! A delivery a member cannot read is logged and terminated at once, not left unacknowledged:
//! with one change in flight per partition, an unsettled delivery holds the whole partition
//! for the ack wait, and again after every redelivery.
//!
//! The server only delivers `p.<partition>.<key>` subjects to a partition consumer of a group
//! made by faststream, so the test makes the group's server objects unusual on purpose: the
//! group's stream replaced by a plain stream with the group's metadata (so members accept it),
//! and partition 0's consumer also taking a subject that is not a key's.

use super::*;
use async_nats::jetstream::{consumer, stream};

#[tokio::test]
async fn a_delivery_that_cannot_be_read_is_terminated_at_once() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        // Measured: the change after the unreadable one handled 4 ms after the unreadable one
        // was published; unsettled, that would hold the partition for the ack wait (the
        // session timeout, 2 s) and again after each redelivery.
        const HANDLED_BOUND: Duration = Duration::from_secs(1);
        bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let first = start_member(&server, "m1", &calls, group_watch("odd", 1)).await?;
        first.stop().await??;

        // The group's stream and partition 0's consumer, remade to take a stray subject.
        let js = jetstream(&server).await?;
        let name = format!("KVG_{BUCKET}_odd");
        let mut original = js.get_stream(&name).await?;
        let metadata = original.info().await?.config.metadata.clone();
        let consumer_config = original
            .get_consumer::<consumer::pull::Config>("p0")
            .await
            .map_err(|error| anyhow::anyhow!(error))?
            .cached_info()
            .config
            .clone();
        js.delete_stream(&name).await?;
        let remade = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec!["p.>".to_owned(), "stray.>".to_owned()],
                metadata,
                ..Default::default()
            })
            .await?;
        remade
            .create_consumer(consumer::Config {
                filter_subject: String::new(),
                filter_subjects: vec!["p.0.>".to_owned(), "stray.>".to_owned()],
                ..consumer_config
            })
            .await?;

        let second = start_member(&server, "m2", &calls, group_watch("odd", 1)).await?;
        js.publish("stray.1", "not a change".into()).await?.await?;
        let published = Instant::now();
        js.publish("p.0.orders.1", "v".into()).await?.await?;
        let handled = calls
            .wait_for("the change after the unreadable delivery", |calls| {
                calls.iter().any(|c| c.key() == "orders.1" && c.ok())
            })
            .await?;
        let took = published.elapsed();
        println!("change after an unreadable delivery handled {took:?} after it");
        assert_eq!(handled.len(), 1, "{handled:#?}");
        assert!(
            took < HANDLED_BOUND,
            "handled {took:?} after the unreadable delivery, over {HANDLED_BOUND:?}"
        );
        // Both settled, neither delivered again.
        let mut consumer = remade
            .get_consumer::<consumer::pull::Config>("p0")
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        let info = consumer.info().await?;
        assert_eq!(info.ack_floor.stream_sequence, 2, "{info:#?}");
        assert_eq!(info.num_ack_pending, 0, "{info:#?}");
        assert_eq!(info.num_redelivered, 0, "{info:#?}");
        second.stop().await??;
        Ok(())
    })
    .await
}
