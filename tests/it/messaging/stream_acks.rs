//! How a stream subscriber settles its deliveries under each `AckPolicy`, and its dead letters:
//! kept in `<stream>_dead`, listed and replayed through the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::support::{wait_for_consumer, wait_for_settled};
use crate::common::{jetstream, on_each_server, Events, RunningApp};
use faststream_core::error::NatsError;
use faststream_core::nats::StreamDeadLetter;
use faststream_core::{
    AckPolicy, App, BrokerConfig, Json, NatsBroker, NatsMessage, Outgoing, State, Subscription,
};

/// Whether [`flaky`] fails.
#[derive(Clone)]
struct Broken(Arc<AtomicBool>);

/// Records `body delivered=N settled=B` and fails while [`Broken`] is set.
async fn flaky(
    message: NatsMessage,
    State(events): State<Events>,
    State(broken): State<Broken>,
) -> anyhow::Result<()> {
    let delivered = message.jetstream_info().map_or(0, |info| info.delivered);
    let body = String::from_utf8_lossy(message.payload());
    events.push(format!(
        "{body} delivered={delivered} settled={}",
        message.is_settled()
    ));
    anyhow::ensure!(!broken.0.load(Ordering::SeqCst), "cannot handle {body}");
    Ok(())
}

/// An app with [`flaky`] reading `stream` (subject `<stream lowercase>.in`) as `subscription`
/// further says, failing until told otherwise.
struct Flaky {
    running: RunningApp,
    events: Events,
    broken: Broken,
    broker: NatsBroker,
    js: async_nats::jetstream::Context,
}

impl Flaky {
    async fn start(
        server: &faststream_testing::NatsServer,
        stream: &'static str,
        subscription: Subscription,
    ) -> anyhow::Result<Self> {
        let events = Events::default();
        let broken = Broken(Arc::new(AtomicBool::new(true)));
        let subject = format!("{}.in", stream.to_lowercase());
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_state(broken.clone())
            .subject_subscriber(
                "flaky",
                subject,
                subscription.stream(stream).durable("c"),
                flaky,
            );
        let running = RunningApp::spawn(app);
        let js = jetstream(server).await?;
        wait_for_consumer(&js, stream, "c").await?;
        let broker = crate::common::connected_broker(server).await?;
        Ok(Self {
            running,
            events,
            broken,
            broker,
            js,
        })
    }

    async fn dead_letters(
        &self,
        stream: &str,
        count: usize,
    ) -> anyhow::Result<Vec<StreamDeadLetter>> {
        faststream_testing::wait_for(
            &format!("{count} dead letter(s) of {stream}"),
            crate::common::EVENT_TIMEOUT,
            || async {
                let letters = self.broker.stream_dead_letters(stream).await?;
                anyhow::Ok((letters.len() == count).then_some(letters))
            },
        )
        .await
    }
}

#[tokio::test]
async fn reject_on_error_terminates_a_failed_delivery_and_keeps_it() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        // RejectOnError is the default.
        let app = Flaky::start(&server, "REJ", Subscription::new()).await?;
        let message = Outgoing::new("order 1").header("x-tenant", "acme");
        app.broker.publish_with("rej.in", message).await?;
        let letters = app.dead_letters("REJ", 1).await?;
        let letter = &letters[0];
        assert_eq!(letter.subject, "rej.in");
        assert_eq!(letter.stream_sequence, 1);
        assert_eq!(letter.consumer, "c");
        assert_eq!(letter.attempts, 1);
        assert!(
            letter.error.contains("cannot handle order 1"),
            "{}",
            letter.error
        );
        assert_eq!(letter.payload.as_ref(), b"order 1");
        assert_eq!(
            letter.headers.get("x-tenant").map(|v| v.as_str()),
            Some("acme")
        );
        let info = wait_for_settled(&app.js, "REJ", "c", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 1, "delivered again");
        assert_eq!(app.events.snapshot(), ["order 1 delivered=1 settled=false"]);
        app.running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn nack_on_error_retries_with_backoff_then_keeps_a_dead_letter_to_replay(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let backoff = Duration::from_millis(100);
        let subscription = Subscription::new()
            .ack_policy(AckPolicy::NackOnError)
            .backoff([backoff])
            .max_attempts(3);
        let app = Flaky::start(&server, "NACK", subscription).await?;
        let published = Instant::now();
        app.broker.publish("nack.in", "job").await?;
        let letters = app.dead_letters("NACK", 1).await?;
        let took = published.elapsed();
        assert_eq!(letters[0].attempts, 3);
        assert!(
            letters[0].error.contains("cannot handle job"),
            "{}",
            letters[0].error
        );
        assert_eq!(
            app.events.snapshot(),
            [
                "job delivered=1 settled=false",
                "job delivered=2 settled=false",
                "job delivered=3 settled=false",
            ]
        );
        // Two waits of 100 ms: measured 221-224 ms to the dead letter; bound at 1 s.
        assert!(
            took >= 2 * backoff && took < Duration::from_secs(1),
            "{took:?}"
        );
        let info = wait_for_settled(&app.js, "NACK", "c", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 3);

        // Fixed, the dead letter is replayed: stored again, handled once, and gone.
        app.broken.0.store(false, Ordering::SeqCst);
        app.broker
            .replay_stream_dead_letter("NACK", letters[0].sequence)
            .await?;
        app.events.wait_for_count(4).await?;
        app.dead_letters("NACK", 0).await?;
        wait_for_settled(&app.js, "NACK", "c", 2).await?;
        assert_eq!(app.events.snapshot()[3], "job delivered=1 settled=false");
        app.running.stop().await??;
        Ok(())
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Job {
    #[allow(dead_code)]
    id: u64,
}

async fn takes_json(Json(_job): Json<Job>) -> anyhow::Result<()> {
    anyhow::bail!("never called with bad JSON")
}

/// Whatever the policy, a delivery no argument can read is kept at once: no retry can help.
#[tokio::test]
async fn bad_json_is_kept_as_a_dead_letter_at_once() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let subscription = Subscription::new()
            .stream("BAD")
            .durable("c")
            .ack_policy(AckPolicy::NackOnError)
            .backoff([Duration::from_millis(100)])
            .max_attempts(5);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subject_subscriber("takes_json", "bad.in", subscription, takes_json);
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "BAD", "c").await?;
        let broker = crate::common::connected_broker(&server).await?;
        broker.publish("bad.in", "{not json").await?;
        let letters =
            faststream_testing::wait_for("a dead letter", crate::common::EVENT_TIMEOUT, || async {
                let letters = broker.stream_dead_letters("BAD").await?;
                anyhow::Ok((!letters.is_empty()).then_some(letters))
            })
            .await?;
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].attempts, 1);
        assert!(
            letters[0].error.contains("not valid JSON"),
            "{}",
            letters[0].error
        );
        let info = wait_for_settled(&js, "BAD", "c", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 1, "delivered again");
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ack_acknowledges_a_failed_call() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = Flaky::start(
            &server,
            "ACK",
            Subscription::new().ack_policy(AckPolicy::Ack),
        )
        .await?;
        app.broker.publish("ack.in", "a").await?;
        app.broker.publish("ack.in", "b").await?;
        let info = wait_for_settled(&app.js, "ACK", "c", 2).await?;
        assert_eq!(info.delivered.consumer_sequence, 2, "delivered again");
        assert_eq!(
            app.events.snapshot(),
            ["a delivered=1 settled=false", "b delivered=1 settled=false"]
        );
        assert!(app.broker.stream_dead_letters("ACK").await?.is_empty());
        app.running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ack_first_acknowledges_before_the_call() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let subscription = Subscription::new().ack_policy(AckPolicy::AckFirst);
        let app = Flaky::start(&server, "FIRST", subscription).await?;
        app.broker.publish("first.in", "a").await?;
        app.events.wait_for_count(1).await?;
        let info = wait_for_settled(&app.js, "FIRST", "c", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 1, "delivered again");
        // Settled when the handler saw it, and not kept though the call failed.
        assert_eq!(app.events.snapshot(), ["a delivered=1 settled=true"]);
        assert!(app.broker.stream_dead_letters("FIRST").await?.is_empty());
        app.running.stop().await??;
        Ok(())
    })
    .await
}

/// Settles each delivery as its subject's last token says: `ack`, `nak` (the first time),
/// `term`, or `none` (the first time: left to the ack wait).
async fn settles_by_hand(message: NatsMessage, State(events): State<Events>) -> anyhow::Result<()> {
    let delivered = message.jetstream_info().map_or(0, |info| info.delivered);
    let what = message
        .subject()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    events.push(format!("{what} {delivered}"));
    match (what.as_str(), delivered) {
        ("nak", 1) => message.nak(None).await?,
        ("term", _) => message.term().await?,
        ("none", 1) => {}
        _ => message.ack().await?,
    }
    Ok(())
}

#[tokio::test]
async fn manual_leaves_settling_to_the_handler() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let ack_wait = Duration::from_secs(1);
        let subscription = Subscription::new()
            .stream("MAN")
            .durable("c")
            .ack_policy(AckPolicy::Manual)
            .ack_wait(ack_wait);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subject_subscriber("settles_by_hand", "man.*", subscription, settles_by_hand);
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "MAN", "c").await?;
        for what in ["ack", "nak", "term", "none"] {
            js.publish(format!("man.{what}"), "".into()).await?.await?;
        }
        let published = Instant::now();
        events.wait_for_event("none 2").await?;
        let none_again = published.elapsed();
        let info = wait_for_settled(&js, "MAN", "c", 4).await?;
        let mut seen = events.snapshot();
        seen.sort();
        assert_eq!(
            seen,
            ["ack 1", "nak 1", "nak 2", "none 1", "none 2", "term 1"]
        );
        assert_eq!(info.delivered.consumer_sequence, 6);
        // Left unsettled, delivered again after the 1 s ack wait: measured 1.001-1.003 s from
        // the publish; bound at 2 s.
        assert!(
            none_again >= ack_wait && none_again < Duration::from_secs(2),
            "{none_again:?}"
        );
        // A terminated delivery is the handler's business: not kept.
        let broker = crate::common::connected_broker(&server).await?;
        assert!(broker.stream_dead_letters("MAN").await?.is_empty());
        running.stop().await??;
        Ok(())
    })
    .await
}

/// `ack`, `nak` and `term` of a core message fail, naming the subject.
#[tokio::test]
async fn settling_a_core_message_is_an_error() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let handler = |message: NatsMessage, State(events): State<Events>| async move {
            let outcome = match message.ack().await {
                Err(NatsError::NotJetStream { subject }) => format!("not jetstream: {subject}"),
                other => format!("{other:?}"),
            };
            events.push(outcome);
        };
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subject_subscriber("core", "core.in", Subscription::new(), handler);
        let running = RunningApp::spawn(app);
        super::support::wait_for_subscriptions(&server, "core.in", 1).await?;
        let client = async_nats::connect(server.url()).await?;
        client.publish("core.in", "x".into()).await?;
        client.flush().await?;
        assert_eq!(events.wait_for_count(1).await?, ["not jetstream: core.in"]);
        running.stop().await??;
        Ok(())
    })
    .await
}
