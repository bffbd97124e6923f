//! JetStream stream subscribers: streams declared idempotently at start-up, a durable consumer
//! shared by two apps, a delivery's metadata, `max_workers` with `ordered_by`, and a call
//! longer than the ack wait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::support::{consumer_info, wait_for_consumer, wait_for_settled};
use crate::common::{jetstream, on_each_server, Events, Recorder, RunningApp};
use async_nats::jetstream::stream;
use faststream_core::error::NatsError;
use faststream_core::{App, BrokerConfig, Error, JStream, NatsMessage, State, Subscription};

async fn record_body(body: String, State(events): State<Events>) {
    events.push(body);
}

fn reader(server_url: String, subject: &'static str, subscription: Subscription) -> App {
    App::new(BrokerConfig::new(server_url))
        .without_registered()
        .subject_subscriber("record_body", subject, subscription, record_body)
}

#[tokio::test]
async fn an_existing_stream_gets_the_subject_it_lacks_and_keeps_its_settings() -> anyhow::Result<()>
{
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        js.create_stream(stream::Config {
            name: "DECL".to_owned(),
            subjects: vec!["decl.a".to_owned()],
            max_messages: 1000,
            ..Default::default()
        })
        .await?;
        let subscription = Subscription::new().stream("DECL").durable("d");
        for round in 0..2 {
            // The second app finds the stream as the first left it: nothing to add.
            let events = Events::default();
            let app =
                reader(server.url(), "decl.b", subscription.clone()).with_state(events.clone());
            let running = RunningApp::spawn(app);
            wait_for_consumer(&js, "DECL", "d").await?;
            let config = js.get_stream("DECL").await?.cached_info().config.clone();
            assert_eq!(config.subjects, ["decl.a", "decl.b"], "round {round}");
            assert_eq!(config.max_messages, 1000, "round {round}");
            let broker = crate::common::connected_broker(&server).await?;
            broker.publish("decl.b", format!("round {round}")).await?;
            events.wait_for_event(&format!("round {round}")).await?;
            running.stop().await??;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_stream_is_created_with_its_subscribers_subjects() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = reader(
            server.url(),
            "fresh.{id}.done",
            Subscription::new()
                .stream(JStream::new("FRESH").max_msgs(50))
                .durable("d"),
        )
        .with_state(events.clone());
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "FRESH", "d").await?;
        let config = js.get_stream("FRESH").await?.cached_info().config.clone();
        assert_eq!(config.subjects, ["fresh.*.done"]);
        assert_eq!(config.max_messages, 50);
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn declare_false_on_a_missing_stream_fails_start_up_naming_it() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = reader(
            server.url(),
            "nope.x",
            Subscription::new().stream(JStream::new("NOPE").declare(false)),
        )
        .with_state(Events::default());
        let error = crate::common::startup_error(app).await?;
        match &error {
            Error::Messaging {
                subscriber,
                source: NatsError::StreamNotFound { stream },
            } => {
                assert_eq!(subscriber, "subscriber `record_body`");
                assert_eq!(stream, "NOPE");
            }
            other => anyhow::bail!("expected a missing stream, got {other:?}"),
        }
        let text = faststream_core::error::chain(&error);
        assert!(
            text.contains("record_body") && text.contains("NOPE"),
            "{text}"
        );
        // Nothing was created.
        let js = jetstream(&server).await?;
        assert!(js.get_stream("NOPE").await.is_err());
        Ok(())
    })
    .await
}

/// `(instance, payload)` of each delivery handled.
type Handled = Recorder<(&'static str, String)>;

#[tokio::test]
async fn two_apps_share_a_durable_consumer_each_message_once() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const MESSAGES: usize = 200;
        let handled = Handled::default();
        let app = |instance: &'static str| {
            let handled = handled.clone();
            let handler = move |body: String| {
                let handled = handled.clone();
                async move { handled.push((instance, body)) }
            };
            let subscription = Subscription::new().stream("SHARED").durable("workers");
            App::new(BrokerConfig::new(server.url()))
                .without_registered()
                .subject_subscriber("work", "shared.jobs", subscription, handler)
        };
        let first = RunningApp::spawn(app("first"));
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "SHARED", "workers").await?;
        let second = RunningApp::spawn(app("second"));
        // Two pull requests waiting: both apps are reading.
        faststream_testing::wait_for("both apps pulling", Duration::from_secs(10), || async {
            let info = consumer_info(&js, "SHARED", "workers").await?;
            anyhow::Ok(info.num_waiting >= 2)
        })
        .await?;
        let acks = (0..MESSAGES).map(|n| (String::from("shared.jobs"), n.to_string().into()));
        crate::common::publish_all(&js, acks).await?;
        handled.wait_for_count(MESSAGES).await?;
        wait_for_settled(&js, "SHARED", "workers", MESSAGES as u64).await?;
        first.stop().await??;
        second.stop().await??;
        let handled = handled.snapshot();
        assert_eq!(handled.len(), MESSAGES, "a delivery was handled twice");
        let mut payloads: Vec<usize> = handled
            .iter()
            .map(|(_, p)| p.parse())
            .collect::<Result<_, _>>()?;
        payloads.sort_unstable();
        assert_eq!(payloads, (0..MESSAGES).collect::<Vec<_>>());
        let info = consumer_info(&js, "SHARED", "workers").await?;
        assert_eq!(
            info.delivered.consumer_sequence, MESSAGES as u64,
            "redeliveries"
        );
        Ok(())
    })
    .await
}

async fn record_info(message: NatsMessage, State(infos): State<Recorder<String>>) {
    let info = message.jetstream_info().expect("a stream delivery");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = i64::try_from(now).unwrap_or(i64::MAX) - info.published.unix_timestamp();
    infos.push(format!(
        "{} {} {} s{} c{} d{} p{} fresh={}",
        info.stream,
        info.consumer,
        message.subject(),
        info.stream_sequence,
        info.consumer_sequence,
        info.delivered,
        info.pending,
        (0..60).contains(&age)
    ));
}

#[tokio::test]
async fn a_delivery_tells_where_it_came_from() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        js.create_stream(stream::Config {
            name: "INFO".to_owned(),
            subjects: vec!["info.*".to_owned()],
            ..Default::default()
        })
        .await?;
        for key in ["a", "b", "c"] {
            js.publish(format!("info.{key}"), key.into()).await?.await?;
        }
        let infos = Recorder::<String>::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(infos.clone())
            .subject_subscriber(
                "record_info",
                "info.{key}",
                Subscription::new().stream("INFO").durable("reader"),
                record_info,
            );
        let running = RunningApp::spawn(app);
        let all = infos.wait_for_count(3).await?;
        assert_eq!(
            all,
            [
                "INFO reader info.a s1 c1 d1 p2 fresh=true",
                "INFO reader info.b s2 c2 d1 p1 fresh=true",
                "INFO reader info.c s3 c3 d1 p0 fresh=true",
            ]
        );
        running.stop().await??;
        Ok(())
    })
    .await
}

mod ordered {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::Concurrency;
    use faststream_core::{subscriber, Path, State};

    #[subscriber(
        "ord.{id}",
        stream = "ORD",
        durable = "ordered",
        max_workers = 8,
        ordered_by = "id"
    )]
    async fn ordered(Path(id): Path<String>, seq: String, State(c): State<Concurrency>) {
        let running = c.running.fetch_add(1, Ordering::SeqCst) + 1;
        c.most.fetch_max(running, Ordering::SeqCst);
        c.events.push(format!("{id} start {seq}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.events.push(format!("{id} end {seq}"));
        c.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The calls running at once, the most seen, and each call's start and end.
#[derive(Clone, Default)]
struct Concurrency {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    events: Events,
}

#[tokio::test]
async fn ordered_by_keeps_each_keys_order_while_keys_overlap() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];
        const PER_KEY: usize = 10;
        let js = jetstream(&server).await?;
        js.create_stream(stream::Config {
            name: "ORD".to_owned(),
            subjects: vec!["ord.*".to_owned()],
            ..Default::default()
        })
        .await?;
        let messages = (0..PER_KEY)
            .flat_map(|seq| KEYS.map(|key| (format!("ord.{key}"), seq.to_string().into())));
        crate::common::publish_all(&js, messages).await?;
        let concurrency = Concurrency::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::ordered"))
            .with_state(concurrency.clone());
        let running = RunningApp::spawn(app);
        let all = concurrency
            .events
            .wait_for_count(2 * KEYS.len() * PER_KEY)
            .await?;
        running.stop().await??;
        let mut per_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for event in &all {
            let (key, rest) = event.split_once(' ').expect("key and event");
            per_key.entry(key).or_default().push(rest.to_owned());
        }
        for key in KEYS {
            let expected: Vec<String> = (0..PER_KEY)
                .flat_map(|seq| [format!("start {seq}"), format!("end {seq}")])
                .collect();
            assert_eq!(per_key[key], expected, "key {key}");
        }
        // All four keys ran at once (measured: 4 on every run); one key never ran twice at
        // once, as the per-key sequences above show.
        assert_eq!(concurrency.most.load(Ordering::SeqCst), KEYS.len());
        Ok(())
    })
    .await
}

/// Sleeps 3 s, three times the ack wait of its subscription.
async fn long_call(message: NatsMessage, State(events): State<Events>) {
    let delivered = message.jetstream_info().map_or(0, |info| info.delivered);
    events.push(format!("start {delivered}"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    events.push(format!("end {delivered}"));
}

#[tokio::test]
async fn a_call_longer_than_the_ack_wait_is_not_delivered_again() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        // Two workers: a redelivery during the call would start at once beside it.
        let subscription = Subscription::new()
            .stream("LONG")
            .durable("long")
            .ack_wait(Duration::from_secs(1))
            .max_workers(2);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subject_subscriber("long_call", "long.job", subscription, long_call);
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "LONG", "long").await?;
        js.publish("long.job", "slow".into()).await?.await?;
        events.wait_for_event("end 1").await?;
        let info = wait_for_settled(&js, "LONG", "long", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 1, "delivered again");
        assert_eq!(events.snapshot(), ["start 1", "end 1"]);
        running.stop().await??;
        Ok(())
    })
    .await
}
