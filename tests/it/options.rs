//! Every `KvWatch` option takes effect on a real server, or is rejected before connecting.

use std::time::Duration;

use crate::common::{
    consumer_configs, on_each_server, record_entry, record_started, Events, RunningApp,
};
use anyhow::Context as _;
use faststream_core::{App, BrokerConfig, Error, HookStage, KvMessage, KvWatch, State};
use faststream_testing::NatsServer;

/// An app with one recording subscriber on `pattern` and a `started` hook.
fn recording_app(
    server: &NatsServer,
    pattern: &'static str,
    watch: KvWatch,
    events: &Events,
) -> App {
    App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .with_state(events.clone())
        .subscriber("recorder", pattern, watch, record_entry)
        .hook(HookStage::AfterStartup, "started", record_started)
}

#[tokio::test]
async fn include_history_delivers_every_revision_once_in_order() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "hist").await?;
        store.put("a", "a1".into()).await?;
        store.put("b", "b1".into()).await?;
        store.put("a", "a2".into()).await?;
        store.delete("b").await?;
        store.put("a", "a3".into()).await?;

        async fn revisions(message: KvMessage, State(events): State<Events>) {
            events.push(format!("{}:{}", message.revision(), message.key()));
        }
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber(
                "hist",
                ">",
                KvWatch::new("hist").include_history(true),
                revisions,
            );
        let running = RunningApp::spawn(app);
        events.wait_for("the history", |e| e.len() >= 5).await?;
        store.put("b", "b2".into()).await?;
        let all = events.wait_for("the new entry", |e| e.len() >= 6).await?;
        running.stop().await??;
        assert_eq!(all, ["1:a", "2:b", "3:a", "4:b", "5:a", "6:b"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ignore_deletes_never_calls_the_handler_for_del_or_purge() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "nodel").await?;
        store.put("x", "1".into()).await?;
        store.delete("x").await?; // latest of x is a DEL: not delivered
        let events = Events::default();
        let running = RunningApp::spawn(recording_app(
            &server,
            ">",
            KvWatch::new("nodel").ignore_deletes(true),
            &events,
        ));
        events.wait_for_event("started").await?;
        store.put("y", "2".into()).await?;
        store.delete("y").await?;
        store.purge("y").await?;
        store.put("z", "3".into()).await?;
        let all = events
            .wait_for("z", |e| e.iter().any(|e| e.contains(" z ")))
            .await?;
        running.stop().await??;
        assert_eq!(all, ["started", "PUT y \"2\" size=1", "PUT z \"3\" size=1"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn meta_only_and_headers_only_deliver_no_values() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        for (bucket_name, watch) in [
            ("meta", KvWatch::new("meta").meta_only(true)),
            ("headers", KvWatch::new("headers").headers_only(true)),
        ] {
            let store = crate::common::bucket_with_history(&server, bucket_name).await?;
            store.put("k", "hello".into()).await?;
            let events = Events::default();
            let running = RunningApp::spawn(recording_app(&server, "k", watch, &events));
            events.wait_for_event("PUT k \"\" size=5").await?;
            let configs = consumer_configs(&server, bucket_name).await?;
            running.stop().await??;
            assert_eq!(configs.len(), 1, "{configs:?}");
            assert!(
                configs[0].headers_only,
                "the server sends values: {configs:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn updates_only_delivers_nothing_from_before_the_start() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "updates").await?;
        store.put("k", "before".into()).await?;
        store.put("other", "before".into()).await?;
        let events = Events::default();
        let running = RunningApp::spawn(recording_app(
            &server,
            ">",
            KvWatch::new("updates").updates_only(true),
            &events,
        ));
        events.wait_for_event("started").await?;
        store.put("k", "after".into()).await?;
        // Entries arrive in revision order, so anything from before would precede this one.
        let all = events.wait_for_event("PUT k \"after\" size=5").await?;
        running.stop().await??;
        assert_eq!(all, ["started", "PUT k \"after\" size=5"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn inactive_threshold_and_timeout_reach_the_server_consumer() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        crate::common::bucket_with_history(&server, "tuned").await?;
        let events = Events::default();
        let watch = KvWatch::new("tuned")
            .inactive_threshold(Duration::from_secs(7))
            .timeout(Duration::from_secs(3));
        let running = RunningApp::spawn(recording_app(&server, "k", watch, &events));
        events.wait_for_event("started").await?;
        let configs = consumer_configs(&server, "tuned").await?;
        running.stop().await??;
        let config = configs.first().context("no consumer")?;
        assert_eq!(config.inactive_threshold, Duration::from_secs(7));
        assert_eq!(config.idle_heartbeat, Duration::from_millis(1500));
        assert!(config.flow_control);
        assert_eq!(
            config.description.as_deref(),
            Some("faststream subscriber recorder")
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn contradictory_and_out_of_range_options_are_rejected_before_connecting(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let connections_before = crate::common::total_connections(&server).await?;
        let events = Events::default();
        let app = recording_app(
            &server,
            "k",
            KvWatch::new("bad").include_history(true).updates_only(true),
            &events,
        )
        .subscriber(
            "second",
            "k",
            KvWatch::new("bad.name").timeout(Duration::from_millis(10)),
            record_entry,
        );
        let error = crate::common::startup_error(app).await?;
        let Error::Setup { problems } = &error else {
            anyhow::bail!("expected a setup error, got {error:?}");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "subscriber `recorder`: `include_history` and `updates_only` contradict"
            ),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("subscriber `second`: invalid bucket name `bad.name`"));
        assert!(
            problems[1].contains("`timeout` must be at least 200ms"),
            "{problems:?}"
        );
        let connections_after = crate::common::total_connections(&server).await?;
        assert_eq!(connections_before, connections_after, "it connected");
        Ok(())
    })
    .await
}
