//! `#[publisher]`: what a handler returns, published to its subjects: stacked in either order
//! with `#[subscriber]`, several on one handler, on a Key-Value subscriber, through a stream
//! that captures the subject; a publisher without a subscriber, and one whose stream is gone.

use std::time::Duration;

use super::support::{header, wait_for_consumer, wait_for_settled, Collected};
use crate::common::{jetstream, on_each_server, Events, RunningApp};
use async_nats::jetstream::stream;
use faststream_core::error::NatsError;
use faststream_core::{App, BrokerConfig, Error, Outgoing};

mod stacked {
    use super::Events;
    use faststream_core::{after_startup, publisher, subscriber, Json, NatsMessage, Path, State};

    #[after_startup]
    async fn started(State(events): State<Events>) {
        events.push("started");
    }

    #[publisher("pub.above.out")]
    #[subscriber("pub.above.in")]
    async fn above(body: String) -> String {
        format!("above {body}")
    }

    #[subscriber("pub.below.in")]
    #[publisher("pub.below.out")]
    async fn below(body: String) -> anyhow::Result<String> {
        Ok(format!("below {body}"))
    }

    #[subscriber("pub.two.in")]
    #[publisher("pub.two.a")]
    #[publisher("pub.two.b")]
    async fn two(body: String) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "got": body }))
    }

    #[subscriber("pub.multi.a")]
    #[subscriber("pub.multi.b")]
    async fn multi(message: NatsMessage, State(events): State<Events>) {
        events.push(format!("multi {}", message.subject()));
    }

    #[subscriber("notes.{id}", kv_watch = "pubnotes")]
    #[publisher("pub.kv.out")]
    async fn note(Path(id): Path<u64>, note: String) -> String {
        format!("note {id}: {note}")
    }
}

#[tokio::test]
async fn publishers_in_any_order_several_and_on_a_kv_subscriber() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::stacked"))
            .with_state(events.clone());
        let broker = app.broker();
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let mut outputs = Collected::subscribe(&server, "pub.*.out").await?;
        let mut two = Collected::subscribe(&server, "pub.two.*").await?;

        for (n, side) in ["above", "below"].into_iter().enumerate() {
            let id = format!("corr-{n}");
            let message = Outgoing::new("x").correlation_id(&id);
            broker
                .publish_with(&format!("pub.{side}.in"), message)
                .await?;
            let out = outputs.next().await?;
            assert_eq!(out.subject.as_str(), format!("pub.{side}.out"));
            assert_eq!(out.payload.as_ref(), format!("{side} x").as_bytes());
            assert_eq!(header(&out, "correlation_id"), Some(id.as_str()));
            assert_eq!(header(&out, "content-type"), Some("text/plain"));
        }

        broker.publish("pub.two.in", "y").await?;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let out = two.next().await?;
            if out.subject.as_str() == "pub.two.in" {
                continue;
            }
            assert_eq!(out.payload.as_ref(), br#"{"got":"y"}"#);
            assert_eq!(header(&out, "content-type"), Some("application/json"));
            seen.push(out.subject.to_string());
        }
        seen.sort();
        assert_eq!(seen, ["pub.two.a", "pub.two.b"]);

        broker.publish("pub.multi.a", "").await?;
        broker.publish("pub.multi.b", "").await?;
        events.wait_for_event("multi pub.multi.a").await?;
        events.wait_for_event("multi pub.multi.b").await?;

        broker
            .key_value("pubnotes")
            .await?
            .put("notes.7", "hello".into())
            .await?;
        let out = outputs.next().await?;
        assert_eq!(out.subject.as_str(), "pub.kv.out");
        assert_eq!(out.payload.as_ref(), b"note 7: hello");
        running.stop().await??;
        Ok(())
    })
    .await
}

mod stored {
    use faststream_core::{publisher, subscriber};

    #[subscriber("pubs.ask")]
    #[publisher("pubs.stored")]
    async fn stored(body: String) -> String {
        format!("stored {body}")
    }
}

/// The reply is sent after the publishers: when it arrives, the stream holds the message; and
/// one the stream refuses (here: full, discarding new messages) fails the call.
#[tokio::test]
async fn a_publish_to_a_stream_waits_for_the_stream_to_store_it() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const ROOM: u64 = 3;
        let js = jetstream(&server).await?;
        js.create_stream(stream::Config {
            name: "STORED".to_owned(),
            subjects: vec!["pubs.stored".to_owned()],
            max_messages: ROOM as i64,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::stored"));
        let running = RunningApp::spawn(app);
        super::support::wait_for_subscriptions(&server, "pubs.ask", 1).await?;
        let broker = crate::common::connected_broker(&server).await?;
        let timeout = Duration::from_secs(10);
        for n in 1..=ROOM {
            let id = format!("s-{n}");
            let message = Outgoing::new(n.to_string()).correlation_id(&id);
            broker.request_with("pubs.ask", message, timeout).await?;
            // Read at once, no waiting: the stream stored it before the handler answered.
            let stored = js.get_stream("STORED").await?.get_raw_message(n).await?;
            assert_eq!(stored.payload.as_ref(), format!("stored {n}").as_bytes());
            let correlation = stored.headers.get("correlation_id").map(|v| v.as_str());
            assert_eq!(correlation, Some(id.as_str()));
        }
        // Published on core NATS, this one would be dropped by the full stream unseen.
        let refused = broker
            .request_with("pubs.ask", Outgoing::new("4"), timeout)
            .await;
        match &refused {
            Err(NatsError::ErrorReply {
                code: 500,
                description,
                ..
            }) => assert!(
                description.contains("publishing to `pubs.stored` failed"),
                "{description}"
            ),
            other => anyhow::bail!("expected an error reply, got {other:?}"),
        }
        let info = js.get_stream("STORED").await?.info().await?.state.clone();
        assert_eq!(info.messages, ROOM);
        running.stop().await??;
        Ok(())
    })
    .await
}

mod orphan {
    use faststream_core::publisher;

    #[publisher("orphan.out")]
    #[allow(dead_code)]
    async fn orphan() -> String {
        "never".to_owned()
    }
}

#[tokio::test]
async fn a_publisher_without_a_subscriber_fails_start_up_naming_it() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::orphan"));
        let error = crate::common::startup_error(app).await?;
        let Error::Setup { problems } = &error else {
            anyhow::bail!("expected a setup error, got {error:?}");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`#[publisher(\"orphan.out\")]`")
                && problems[0].contains("publishers::orphan::orphan")
                && problems[0].contains("has no `#[subscriber]`"),
            "{problems:?}"
        );
        Ok(())
    })
    .await
}

mod unavailable {
    use super::Events;
    use faststream_core::{publisher, subscriber, State};

    #[subscriber("pubu.in", stream = "PUBU", durable = "c")]
    #[publisher("pubu.out", stream = "MISSING")]
    async fn forward(body: String, State(events): State<Events>) -> String {
        events.push(format!("forward {body}"));
        body
    }

    #[subscriber("pubu.ask")]
    #[publisher("pubu.out", stream = "MISSING")]
    async fn ask(body: String) -> String {
        body
    }
}

/// A publish no stream stores fails the call: a stream delivery is kept as a dead letter
/// (nothing lost), a request is answered with an error.
#[tokio::test]
async fn a_publish_to_a_missing_stream_fails_the_call() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::unavailable"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        wait_for_consumer(&js, "PUBU", "c").await?;
        super::support::wait_for_subscriptions(&server, "pubu.ask", 1).await?;
        let broker = crate::common::connected_broker(&server).await?;
        broker.publish("pubu.in", "order 1").await?;
        // Four attempts, 100 ms, 500 ms and 2 s apart, then the call fails: 2.6 s.
        let asked = broker
            .request_with("pubu.ask", Outgoing::new("q"), Duration::from_secs(10))
            .await;
        match &asked {
            Err(NatsError::ErrorReply {
                code: 500,
                description,
                ..
            }) => {
                assert!(description.contains("pubu.out"), "{description}");
            }
            other => anyhow::bail!("expected an error reply, got {other:?}"),
        }
        let letters = faststream_testing::wait_for(
            "the delivery kept as a dead letter",
            crate::common::EVENT_TIMEOUT,
            || async {
                let letters = broker.stream_dead_letters("PUBU").await?;
                anyhow::Ok((!letters.is_empty()).then_some(letters))
            },
        )
        .await?;
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].payload.as_ref(), b"order 1");
        assert!(
            letters[0].error.contains("publishing to `pubu.out` failed"),
            "{}",
            letters[0].error
        );
        let info = wait_for_settled(&js, "PUBU", "c", 1).await?;
        assert_eq!(info.delivered.consumer_sequence, 1);
        assert_eq!(events.snapshot(), ["forward order 1"]);
        running.stop().await??;
        Ok(())
    })
    .await
}
