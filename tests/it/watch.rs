//! The watch loop: first the latest value of each matching key (deletes included), then every
//! change in revision order; bad payloads, failing and panicking handlers never stop it.

use crate::common::{bucket_with_history, jetstream, on_each_server, Events, RunningApp};
use bytes::Bytes;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, State};

async fn record_entry(message: KvMessage, State(events): State<Events>) {
    events.push(format!(
        "{} {} {:?} @{}",
        message.operation(),
        message.key(),
        String::from_utf8_lossy(message.value()),
        message.revision()
    ));
}

#[tokio::test]
async fn latest_value_per_key_first_then_every_change() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let setup = crate::common::connected_broker(&server).await?;
        let store = setup
            .key_value_with(faststream_core::kv::BucketConfig::new("snap").history(10))
            .await?;
        store.put("users.1", "old".into()).await?;
        store.put("users.1", "new".into()).await?;
        store.put("users.2", "gone".into()).await?;
        store.delete("users.2").await?;
        store.put("other", "not watched".into()).await?;
        drop(js);

        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("users", "users.*", KvWatch::new("snap"), record_entry);
        let running = RunningApp::spawn(app);
        events.wait_for("the snapshot", |e| e.len() >= 2).await?;
        let later = store.put("users.3", "fresh".into()).await?;
        store.purge("users.1").await?;
        let all = events.wait_for("the changes", |e| e.len() >= 4).await?;
        running.stop().await??;
        assert_eq!(
            all,
            [
                "PUT users.1 \"new\" @2",
                "DEL users.2 \"\" @4",
                &format!("PUT users.3 \"fresh\" @{later}"),
                &format!("PURGE users.1 \"\" @{}", later + 1),
            ]
        );
        Ok(())
    })
    .await
}

mod fragile {
    use super::Events;
    use faststream_core::{after_startup, subscriber, State};

    #[after_startup]
    async fn started(State(events): State<Events>) {
        events.push("started");
    }

    /// Fails on some values; the loop must go on.
    #[subscriber("job", kv_watch = "fragile")]
    async fn picky(msg: String, State(events): State<Events>) -> anyhow::Result<()> {
        match msg.as_str() {
            "fail" => anyhow::bail!("refusing {msg}"),
            "panic" => panic!("handler panicked on purpose"),
            _ => {
                events.push(format!("picky:{msg}"));
                Ok(())
            }
        }
    }

    /// Sees every entry as bytes, whatever the other subscriber does.
    #[subscriber("job", kv_watch = "fragile")]
    async fn counter(value: bytes::Bytes, State(events): State<Events>) {
        events.push(format!("counter:{}", value.len()));
    }
}

#[tokio::test]
async fn bad_payloads_and_failing_handlers_do_not_stop_the_loop() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = bucket_with_history(&server, "fragile").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::fragile"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        for value in [
            Bytes::from_static(b"first"),
            Bytes::from_static(&[0xff, 0xfe, 0x00]), // not UTF-8: `String` is rejected
            Bytes::from_static(b"fail"),
            Bytes::from_static(b"panic"),
            Bytes::from_static(b"last"),
        ] {
            store.put("job", value).await?;
        }
        let events = events
            .wait_for("the last value", |e| {
                e.iter().any(|e| e == "picky:last")
                    && e.iter().filter(|e| e.starts_with("counter:")).count() >= 5
            })
            .await?;
        running.stop().await??;
        let picky: Vec<_> = events.iter().filter(|e| e.starts_with("picky:")).collect();
        assert_eq!(picky, ["picky:first", "picky:last"]);
        let counter: Vec<_> = events
            .iter()
            .filter(|e| e.starts_with("counter:"))
            .collect();
        assert_eq!(
            counter,
            [
                "counter:5",
                "counter:3",
                "counter:4",
                "counter:5",
                "counter:4"
            ]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_closed_connection_ends_next_with_none() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = bucket_with_history(&server, "closed").await?;
        store.put("k", "v".into()).await?;
        let mut watcher = broker.kv_watch("k", KvWatch::new("closed")).await?;
        let first = watcher
            .get_one(crate::common::EVENT_TIMEOUT)
            .await
            .ok_or_else(|| anyhow::anyhow!("nothing watched"))?;
        assert_eq!(first.key(), "k");
        // Closed for good: drained by its owner.
        broker.client()?.drain().await?;
        let ended = tokio::time::timeout(crate::common::EVENT_TIMEOUT, watcher.next()).await;
        match ended {
            Ok(None) => Ok(()),
            Ok(Some(entry)) => anyhow::bail!("an entry after the close: {entry:?}"),
            Err(_) => anyhow::bail!(
                "next() still running {:?} after the close",
                crate::common::EVENT_TIMEOUT
            ),
        }
    })
    .await
}
