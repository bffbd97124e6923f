//! The code API against a real server: request/reply, error replies, a stream consumer.

use std::time::Duration;

use crate::common::{on_each_server, Events, RunningApp};
use faststream_core::error::NatsError;
use faststream_core::{App, BrokerConfig, Json, NatsMessage, Path, State, Subscription};

async fn get_order(Path(id): Path<u64>) -> anyhow::Result<Json<serde_json::Value>> {
    anyhow::ensure!(id != 0, "no order 0");
    Ok(Json(serde_json::json!({ "id": id })))
}

async fn on_job(message: NatsMessage, State(events): State<Events>) {
    let info = message.jetstream_info().map(|info| info.stream_sequence);
    events.push(format!(
        "{} {} {:?}",
        message.subject(),
        String::from_utf8_lossy(message.payload()),
        info
    ));
}

#[tokio::test]
async fn request_reply_and_a_stream() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subject_subscriber("get_order", "orders.{id}.get", Subscription::new(), get_order)
            .subject_subscriber(
                "on_job",
                "jobs.>",
                Subscription::new().stream("JOBS").durable("worker"),
                on_job,
            );
        let app = RunningApp::spawn(app);
        let broker = crate::common::connected_broker(&server).await?;
        let reply = faststream_testing::wait_for("the order service", Duration::from_secs(10), || {
            let broker = broker.clone();
            async move { broker.request("orders.7.get", "").await.ok() }
        })
        .await?;
        assert_eq!(reply.payload().as_ref(), br#"{"id":7}"#);
        assert_eq!(reply.content_type(), Some("application/json"));
        let error = broker.request("orders.0.get", "").await.expect_err("fails");
        assert!(
            matches!(&error, NatsError::ErrorReply { code: 500, description, .. } if description.contains("no order 0")),
            "{error:?}"
        );
        let error = broker.request("nobody.home", "").await.expect_err("no one");
        assert!(matches!(error, NatsError::NoResponders { .. }), "{error:?}");

        broker.publish("jobs.a", "one").await?;
        broker.publish("jobs.b", "two").await?;
        events.wait_for_count(2).await?;
        assert_eq!(events.snapshot(), ["jobs.a one Some(1)", "jobs.b two Some(2)"]);
        app.stop().await??;
        Ok(())
    })
    .await
}
