//! Request/reply: what a handler returns is the reply (body, `content-type`, the request's
//! `correlation_id`); a failed call is answered with the NATS service API's error headers;
//! `no_reply`, no responders, `max_payload`, and a request through a JetStream stream.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::support::{header, wait_for_consumer};
use crate::common::{on_each_server, servers, Events, RunningApp};
use faststream_core::error::NatsError;
use faststream_core::{App, BrokerConfig, NatsBroker, Outgoing, Subscription};
use faststream_testing::{NatsServer, ServerConfig};
use futures_util::StreamExt as _;

/// How long a request waits for a reply the test expects.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: u64,
}

mod replies {
    use super::{Events, Order};
    use faststream_core::{after_startup, subscriber, Json, Path, State};

    #[after_startup]
    async fn started(State(events): State<Events>) {
        events.push("started");
    }

    #[subscriber("rr.orders.{id}")]
    async fn order(Path(id): Path<u64>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "id": id, "status": "open" }))
    }

    #[subscriber("rr.text")]
    async fn text(body: String) -> String {
        format!("hello {body}")
    }

    #[subscriber("rr.empty")]
    async fn empty(State(events): State<Events>) {
        events.push("empty called");
    }

    #[subscriber("rr.fails")]
    async fn fails() -> anyhow::Result<String> {
        anyhow::bail!("out of stock")
    }

    #[subscriber("rr.panics")]
    async fn panics() -> String {
        panic!("the handler blew up")
    }

    #[subscriber("rr.json")]
    async fn json(Json(order): Json<Order>) -> String {
        order.id.to_string()
    }

    #[subscriber("rr.silent", no_reply = true)]
    async fn silent(body: String, State(events): State<Events>) -> String {
        events.push(format!("silent got {body}"));
        "never sent".to_owned()
    }
}

/// Sends `payload` to `subject` with correlation id `id`; the reply's correlation id must be it.
async fn ask(
    broker: &NatsBroker,
    subject: &str,
    payload: &'static str,
    id: &str,
) -> Result<faststream_core::NatsMessage, NatsError> {
    let message = Outgoing::new(payload).correlation_id(id);
    let reply = broker.request_with(subject, message, REPLY_TIMEOUT).await?;
    assert_eq!(reply.correlation_id(), Some(id), "the reply to {subject}");
    Ok(reply)
}

#[tokio::test]
async fn replies_carry_the_body_content_type_and_correlation_id() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::replies"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let broker = crate::common::connected_broker(&server).await?;

        let reply = ask(&broker, "rr.orders.7", "", "abc").await?;
        let body: serde_json::Value = serde_json::from_slice(reply.payload())?;
        assert_eq!(body, serde_json::json!({ "id": 7, "status": "open" }));
        assert_eq!(reply.content_type(), Some("application/json"));

        let reply = ask(&broker, "rr.text", "ann", "abd").await?;
        assert_eq!(reply.payload().as_ref(), b"hello ann");
        assert_eq!(reply.content_type(), Some("text/plain"));

        let reply = ask(&broker, "rr.empty", "ignored", "abe").await?;
        assert!(reply.payload().is_empty(), "{:?}", reply.payload());
        assert_eq!(reply.content_type(), None);
        assert!(events.snapshot().iter().any(|e| e == "empty called"));

        let error = ask(&broker, "rr.fails", "", "abf")
            .await
            .expect_err("an error reply");
        assert!(
            matches!(&error, NatsError::ErrorReply { code: 500, description, .. }
                if description.contains("out of stock")),
            "{error:?}"
        );
        let error = ask(&broker, "rr.panics", "", "abg")
            .await
            .expect_err("an error reply");
        assert!(
            matches!(&error, NatsError::ErrorReply { code: 500, description, .. }
                if description.contains("the handler blew up")),
            "{error:?}"
        );
        let error = ask(&broker, "rr.json", "{not json", "abh")
            .await
            .expect_err("a 400");
        assert!(
            matches!(&error, NatsError::ErrorReply { code: 400, description, .. }
                if description.contains("Json<") && description.contains("not valid JSON")),
            "{error:?}"
        );
        // A valid request to the same handler is still answered.
        let reply = ask(&broker, "rr.json", r#"{"id": 12}"#, "abi").await?;
        assert_eq!(reply.payload().as_ref(), b"12");
        running.stop().await??;
        Ok(())
    })
    .await
}

/// The error reply keeps the request's correlation id too.
#[tokio::test]
async fn an_error_reply_keeps_the_correlation_id() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::replies"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let client = async_nats::connect(server.url()).await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("correlation_id", "err-1");
        let reply = client
            .request_with_headers("rr.fails", headers, "".into())
            .await?;
        assert_eq!(header(&reply, "correlation_id"), Some("err-1"));
        assert_eq!(header(&reply, "Nats-Service-Error-Code"), Some("500"));
        assert!(reply.payload.is_empty());
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn no_reply_leaves_the_requester_waiting_while_the_handler_runs() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::replies"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let broker = crate::common::connected_broker(&server).await?;
        let timeout = Duration::from_millis(500);
        let error = broker
            .request_with("rr.silent", Outgoing::new("hi"), timeout)
            .await
            .expect_err("no reply");
        assert!(
            matches!(&error, NatsError::TimedOut { subject, timeout: t }
                if subject == "rr.silent" && *t == timeout),
            "{error:?}"
        );
        events.wait_for_event("silent got hi").await?;
        running.stop().await??;
        Ok(())
    })
    .await
}

async fn slow(body: String) -> String {
    tokio::time::sleep(Duration::from_secs(30)).await;
    body
}

#[tokio::test]
async fn a_handler_past_its_timeout_is_answered_with_500() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let limit = Duration::from_millis(300);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .handler_timeout(limit)
            .subject_subscriber("slow", "rr.slow", Subscription::new(), slow);
        let running = RunningApp::spawn(app);
        let broker = crate::common::connected_broker(&server).await?;
        // Until the app has subscribed, the request finds no responders.
        let error = faststream_testing::wait_for("an answer from rr.slow", REPLY_TIMEOUT, || {
            let broker = broker.clone();
            async move {
                match broker
                    .request_with("rr.slow", Outgoing::new("x"), REPLY_TIMEOUT)
                    .await
                {
                    Err(NatsError::NoResponders { .. }) => None,
                    other => Some(other),
                }
            }
        })
        .await?;
        let started = Instant::now();
        let error = match error {
            Err(NatsError::ErrorReply { .. }) => broker
                .request_with("rr.slow", Outgoing::new("x"), REPLY_TIMEOUT)
                .await
                .expect_err("a 500"),
            other => anyhow::bail!("expected an error reply, got {other:?}"),
        };
        let took = started.elapsed();
        assert!(
            matches!(&error, NatsError::ErrorReply { code: 500, description, .. }
                if description.contains("timed out after 300ms")),
            "{error:?}"
        );
        // The answer comes at the limit: measured 302-307 ms; bound at 1 s for a loaded machine.
        assert!(took >= limit && took < Duration::from_secs(1), "{took:?}");
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn no_responders_fails_at_once() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let started = Instant::now();
        let error = broker
            .request_with("nobody.home", Outgoing::new(""), Duration::from_secs(10))
            .await
            .expect_err("no responders");
        let took = started.elapsed();
        assert!(
            matches!(&error, NatsError::NoResponders { subject } if subject == "nobody.home"),
            "{error:?}"
        );
        // Measured 0.5-5 ms, against a 10 s timeout; bound at 100 ms.
        assert!(took < Duration::from_millis(100), "{took:?}");
        Ok(())
    })
    .await
}

/// A message over the server's `max_payload` (here set to 4 KiB) fails before it is sent.
#[tokio::test]
async fn a_payload_over_max_payload_is_refused_naming_both_sizes() -> anyhow::Result<()> {
    for binary in servers() {
        let config = ServerConfig::new().extra("max_payload: 4096");
        let server = NatsServer::start_with(&binary, &config).await?;
        let broker = crate::common::connected_broker(&server).await?;
        let payload = vec![b'x'; 5000];
        let before = client_bytes(&server).await?;
        let error = broker
            .request_with("big.ask", Outgoing::new(payload.clone()), REPLY_TIMEOUT)
            .await
            .expect_err("too large");
        match &error {
            NatsError::PayloadTooLarge { subject, size, max } => {
                assert_eq!(subject, "big.ask");
                assert_eq!(*max, 4096);
                // The payload plus FastStream's headers and their framing: measured 5052.
                assert!(*size > 5000 && *size < 5100, "{size}");
                let text = error.to_string();
                assert!(
                    text.contains(&size.to_string()) && text.contains("4096"),
                    "{text}"
                );
            }
            other => anyhow::bail!("on {binary}: expected PayloadTooLarge, got {other:?}"),
        }
        let error = broker
            .publish("big.tell", payload)
            .await
            .expect_err("too large");
        assert!(
            matches!(&error, NatsError::PayloadTooLarge { max: 4096, .. }),
            "{error:?}"
        );
        // Neither payload reached the server, only the publish's stream lookup (33 bytes).
        let sent = client_bytes(&server).await? - before;
        assert!(sent < 1000, "{sent} bytes reached the server");
    }
    Ok(())
}

/// Bytes the server received from clients, summed over the open connections.
async fn client_bytes(server: &NatsServer) -> anyhow::Result<u64> {
    let connz = server.monitor("/connz").await?;
    let connections = connz["connections"]
        .as_array()
        .context("connz without connections")?;
    Ok(connections
        .iter()
        .filter_map(|c| c["in_bytes"].as_u64())
        .sum())
}

async fn answer_from_stream(body: String) -> String {
    format!("stream says {body}")
}

/// A JetStream delivery is answered to its `reply_to` header, as FastStream does.
#[tokio::test]
async fn a_stream_delivery_is_answered_to_its_reply_to_header() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subject_subscriber(
                "answer_from_stream",
                "rrjs.ask",
                Subscription::new().stream("RRJS").durable("answers"),
                answer_from_stream,
            );
        let running = RunningApp::spawn(app);
        let broker = crate::common::connected_broker(&server).await?;
        let js = crate::common::jetstream(&server).await?;
        wait_for_consumer(&js, "RRJS", "answers").await?;
        let client = async_nats::connect(server.url()).await?;
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client.flush().await?;
        let message = Outgoing::new("ping")
            .header("reply_to", &inbox)
            .correlation_id("js-1");
        broker.publish_with("rrjs.ask", message).await?;
        let reply = tokio::time::timeout(REPLY_TIMEOUT, replies.next())
            .await?
            .expect("a reply");
        assert_eq!(reply.payload.as_ref(), b"stream says ping");
        assert_eq!(header(&reply, "correlation_id"), Some("js-1"));
        assert_eq!(header(&reply, "content-type"), Some("text/plain"));
        // The message was stored (and acknowledged) rather than answered on core NATS alone.
        let stored = js.get_stream("RRJS").await?.info().await?.state.messages;
        assert_eq!(stored, 1);
        running.stop().await??;
        Ok(())
    })
    .await
}
