//! The bucket's stream changing under a watch: deleted and created again, its sequence going
//! back.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn a_bucket_deleted_and_created_again_is_watched_from_its_start() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        create_bucket(&server, "again", 5).await?;
        let events = Named::default();
        // A short timeout: a deleted stream takes the consumer with it, silently, and the
        // watch notices the silence after `timeout`.
        let watch = || KvWatch::new("again").timeout(Duration::from_secs(1));
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("latest", "k.*", watch(), record_as("latest"))
            .subscriber("history", "k.*", watch().include_history(true), record_as("history"))
            .subscriber("updates", "k.*", watch().updates_only(true), record_as("updates"))
            .hook(HookStage::AfterStartup, "started", |State(events): State<Named>| async move {
                events.0.push("started");
            });
        put_fresh(&server, "again", "k.a", "old1").await?;
        put_fresh(&server, "again", "k.b", "old2").await?;
        let running = RunningApp::spawn(app);
        events.0.wait_for_event("started").await?;
        put_fresh(&server, "again", "k.c", "old3").await?;
        events
            .0
            .wait_for("the old entries", |e| {
                ["latest", "history", "updates"]
                    .iter()
                    .all(|name| of(e, name).contains(&"k.c@3=old3".to_owned()))
            })
            .await?;

        let js = jetstream(&server).await?;
        js.delete_key_value("again").await?;
        // Absence can only be watched over a while: the watches must not re-create the bucket
        // while each has noticed (timeout 1 s) and looked it up several times.
        let window = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < window {
            anyhow::ensure!(
                js.get_stream("KV_again").await.is_err(),
                "the bucket was re-created behind the operator's back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        create_bucket(&server, "again", 5).await?;
        let created = Instant::now();
        put_fresh(&server, "again", "k.a", "new1").await?;
        put_fresh(&server, "again", "k.b", "new2").await?;
        let all = events
            .0
            .wait_for("the new bucket's entries", |e| {
                ["latest", "history", "updates"]
                    .iter()
                    .all(|name| of(e, name).contains(&"k.b@2=new2".to_owned()))
            })
            .await?;
        let resumed = created.elapsed();
        wait_for_consumers(&server, "again", 3, Duration::from_secs(5)).await?;
        eprintln!(
            "re-created bucket on nats-server {}: new entries within {resumed:?}; consumers after: 3",
            server.binary().version
        );
        running.stop().await??;
        assert_eq!(
            of(&all, "latest"),
            ["k.a@1=old1", "k.b@2=old2", "k.c@3=old3", "k.a@1=new1", "k.b@2=new2"]
        );
        assert_eq!(of(&all, "history"), of(&all, "latest"));
        assert_eq!(of(&all, "updates"), ["k.c@3=old3", "k.a@1=new1", "k.b@2=new2"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stream_sequence_going_back_restarts_the_watch() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        // Memory storage: a restart keeps the bucket but not its entries; revisions start over.
        let broker = crate::common::connected_broker(&server).await?;
        broker
            .key_value_with(
                BucketConfig::new("volatile")
                    .history(5)
                    .storage(faststream_core::kv::StorageType::Memory),
            )
            .await?;
        drop(broker);
        for value in ["1", "2", "3"] {
            put_fresh(&server, "volatile", "k", value).await?;
        }
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber(
                "v",
                "k",
                KvWatch::new("volatile").include_history(true),
                record,
            );
        let running = RunningApp::spawn(app);
        events.wait_for_event("k@3=3").await?;
        let back = crash_and_restart(&mut server).await?;
        // 2.9 forgets a memory stream on restart; declaring it again is what a service would do.
        if jetstream(&server)
            .await?
            .get_stream("KV_volatile")
            .await
            .is_err()
        {
            let broker = crate::common::connected_broker(&server).await?;
            broker
                .key_value_with(
                    BucketConfig::new("volatile")
                        .history(5)
                        .storage(faststream_core::kv::StorageType::Memory),
                )
                .await?;
        }
        let revision = put_fresh(&server, "volatile", "k", "after").await?;
        anyhow::ensure!(
            revision == 1,
            "the memory stream kept its sequence: {revision}"
        );
        events.wait_for_event("k@1=after").await?;
        eprintln!(
            "sequence gone back on nats-server {}: first entry {:?} after the server was back",
            server.binary().version,
            back.elapsed()
        );
        wait_for_consumers(&server, "volatile", 1, Duration::from_secs(5)).await?;
        running.stop().await??;
        assert_eq!(events.snapshot(), ["k@1=1", "k@2=2", "k@3=3", "k@1=after"]);
        Ok(())
    })
    .await
}
