//! A handler argument for the other kind of message: `KvMessage` on a subject subscriber and
//! `NatsMessage` on a Key-Value subscriber fail start-up, naming the subscriber, before anything
//! is declared.

use crate::common::{on_each_server, startup_error};
use faststream_core::{App, BrokerConfig, Error, KvMessage, Subscription};

mod kv_message_on_a_subject {
    use faststream_core::{subscriber, KvMessage};

    #[subscriber("kinds.orders", stream = "KINDS")]
    async fn takes_kv_message(message: KvMessage) {
        let _ = message;
    }
}

mod nats_message_on_a_bucket {
    use faststream_core::{subscriber, NatsMessage};

    #[subscriber("settings.*", kv_watch = "kinds")]
    async fn takes_nats_message(message: NatsMessage) {
        let _ = message;
    }
}

/// The setup problems of `error`, which must be a setup error.
fn problems(error: &Error) -> anyhow::Result<&[String]> {
    match error {
        Error::Setup { problems } => Ok(problems),
        other => anyhow::bail!("expected a setup error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_kv_message_on_a_subject_subscriber_fails_start_up() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::kv_message_on_a_subject"));
        let error = startup_error(app).await?;
        let problems = problems(&error)?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        let name = "messaging::message_kinds::kv_message_on_a_subject::takes_kv_message";
        assert!(
            problems[0].contains(&format!("subscriber `it::{name}`"))
                && problems[0].contains("`KvMessage` is a Key-Value change")
                && problems[0].contains("take `NatsMessage` instead"),
            "{problems:?}"
        );
        // Refused before connecting: the stream was not declared.
        let js = crate::common::jetstream(&server).await?;
        assert!(js.get_stream("KINDS").await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_nats_message_on_a_kv_subscriber_fails_start_up() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::nats_message_on_a_bucket"));
        let error = startup_error(app).await?;
        let problems = problems(&error)?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        let name = "messaging::message_kinds::nats_message_on_a_bucket::takes_nats_message";
        assert!(
            problems[0].contains(&format!("subscriber `it::{name}`"))
                && problems[0].contains("`NatsMessage` is a message from a subject or a stream")
                && problems[0].contains("take `KvMessage` instead"),
            "{problems:?}"
        );
        let js = crate::common::jetstream(&server).await?;
        assert!(
            js.get_stream("KV_kinds").await.is_err(),
            "the bucket was created"
        );
        Ok(())
    })
    .await
}

async fn core_handler(message: KvMessage) {
    let _ = message;
}

/// The same check for a subscriber added in code, named as given.
#[tokio::test]
async fn the_code_api_is_checked_the_same_way() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subject_subscriber("from_code", "kinds.code", Subscription::new(), core_handler);
        let error = startup_error(app).await?;
        let problems = problems(&error)?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("subscriber `from_code`") && problems[0].contains("KvMessage"),
            "{problems:?}"
        );
        Ok(())
    })
    .await
}
