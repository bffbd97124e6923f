//! What the messaging tests share: waiting for a subscription or a consumer to exist on the
//! server, reading a consumer's state, and collecting what is published to a subject.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::Info;
use faststream_testing::NatsServer;
use futures_util::StreamExt as _;

use crate::common::EVENT_TIMEOUT;

/// Waits until the server holds `count` subscriptions on exactly `subject` (the app has
/// subscribed: a core message published now reaches it).
pub async fn wait_for_subscriptions(
    server: &NatsServer,
    subject: &str,
    count: usize,
) -> anyhow::Result<()> {
    faststream_testing::wait_for(
        &format!("{count} subscription(s) on `{subject}`"),
        EVENT_TIMEOUT,
        || async {
            let subsz = server.monitor("/subsz?subs=1&limit=100000").await?;
            let found = subsz["subscriptions_list"]
                .as_array()
                .context("subsz without subscriptions_list")?
                .iter()
                .filter(|sub| sub["subject"].as_str() == Some(subject))
                .count();
            anyhow::Ok((
                (found == count).then_some(()),
                format!("{found} subscriptions"),
            ))
        },
    )
    .await
}

/// The server's view of consumer `consumer` of `stream`.
pub async fn consumer_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<Info> {
    let stream = js.get_stream(stream).await?;
    Ok(stream.consumer_info(consumer).await?)
}

/// Waits until consumer `consumer` of `stream` exists (the app has started reading).
pub async fn wait_for_consumer(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<Info> {
    faststream_testing::wait_for(
        &format!("consumer `{consumer}` of `{stream}`"),
        EVENT_TIMEOUT,
        || async { consumer_info(js, stream, consumer).await.map(Some) },
    )
    .await
}

/// Waits until consumer `consumer` of `stream` has nothing delivered and unsettled, and its
/// ack floor reached stream sequence `sequence`; returns its state.
pub async fn wait_for_settled(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
    sequence: u64,
) -> anyhow::Result<Info> {
    faststream_testing::wait_for(
        &format!("consumer `{consumer}` of `{stream}` settled up to {sequence}"),
        EVENT_TIMEOUT,
        || async {
            let info = consumer_info(js, stream, consumer).await?;
            let done = info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= sequence;
            let seen = format!(
                "ack pending {}, ack floor {}, delivered {}",
                info.num_ack_pending,
                info.ack_floor.stream_sequence,
                info.delivered.consumer_sequence
            );
            anyhow::Ok((done.then_some(info), seen))
        },
    )
    .await
}

/// The messages published to `subject`, as a raw client receives them.
pub struct Collected {
    subscriber: async_nats::Subscriber,
}

impl Collected {
    /// Subscribes to `subject` (flushed: what is published from now on is received).
    pub async fn subscribe(server: &NatsServer, subject: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(server.url()).await?;
        let subscriber = client.subscribe(subject.to_owned()).await?;
        client.flush().await?;
        Ok(Self { subscriber })
    }

    /// The next message, within [`EVENT_TIMEOUT`].
    pub async fn next(&mut self) -> anyhow::Result<async_nats::Message> {
        self.next_within(EVENT_TIMEOUT).await
    }

    /// The next message, within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> anyhow::Result<async_nats::Message> {
        tokio::time::timeout(timeout, self.subscriber.next())
            .await
            .with_context(|| format!("no message within {timeout:?}"))?
            .context("the subscription ended")
    }
}

/// A message's header, if it has it.
pub fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()?
        .get(name)
        .map(|value| value.as_str())
}
