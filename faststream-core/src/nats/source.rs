//! [`SubjectSource`]: the messages of one subject subscriber, from a core subscription (which
//! async-nats renews after every reconnect) or a JetStream pull consumer (re-created if the
//! server loses it).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy as NatsAckPolicy};
use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::Client;
use futures_util::{FutureExt as _, StreamExt as _};

use super::message::NatsMessage;
use super::subscription::Subscription;
use crate::error::NatsError;

/// Where a subject subscriber's messages come from.
pub(crate) struct SubjectSource {
    subject: String,
    incoming: Incoming,
    /// Set by [`stop`](SubjectSource::stop): a stream is read no more.
    stopped: bool,
}

enum Incoming {
    Core(async_nats::Subscriber),
    /// Boxed: the pull stream is some kilobytes, the core subscriber a few words.
    Stream(Box<StreamReader>),
}

/// A JetStream pull consumer and its message stream.
struct StreamReader {
    consumer: PullConsumer,
    /// To create the consumer again if the server lost it.
    handle: jetstream::stream::Stream,
    config: pull::Config,
    messages: Option<pull::Stream>,
    pull: super::policy::PullSub,
    stream: String,
    /// The consumer's name, for messages.
    name: String,
}

impl SubjectSource {
    /// Subscribes to `filter` (the subject pattern, placeholders as `*`) as `subscription`
    /// says: a core subscription, or a consumer of the subscription's stream, which must have
    /// been declared.
    pub(crate) async fn open(
        client: &Client,
        jetstream: &jetstream::Context,
        filter: &str,
        subscription: &Subscription,
    ) -> Result<Self, NatsError> {
        let incoming = match &subscription.stream {
            None => {
                let subscribed = match &subscription.queue {
                    Some(queue) => {
                        client
                            .queue_subscribe(filter.to_owned(), queue.clone())
                            .await
                    }
                    None => client.subscribe(filter.to_owned()).await,
                };
                Incoming::Core(subscribed.map_err(|error| NatsError::Subscribe {
                    subject: filter.to_owned(),
                    source: Box::new(error),
                })?)
            }
            Some(stream) => {
                let durable = subscription.durable_name().map(str::to_owned);
                let name = durable.clone().unwrap_or_else(|| "(ephemeral)".to_owned());
                let consumer_error =
                    |operation, error: Box<dyn std::error::Error + Send + Sync>| {
                        NatsError::Consumer {
                            operation,
                            stream: stream.name.clone(),
                            consumer: name.clone(),
                            source: error,
                        }
                    };
                let handle = jetstream
                    .get_stream(&stream.name)
                    .await
                    .map_err(|error| consumer_error("create", Box::new(error)))?;
                let config = pull::Config {
                    durable_name: durable.clone(),
                    filter_subject: filter.to_owned(),
                    deliver_policy: subscription.deliver_policy.to_nats(),
                    ack_policy: NatsAckPolicy::Explicit,
                    ack_wait: subscription.ack_wait,
                    // Attempts are counted here, so a message is kept as a dead letter rather
                    // than dropped by the server.
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(
                        subscription.max_workers.max(subscription.pull.batch_size) * 2,
                    )
                    .unwrap_or(i64::MAX)
                    .max(1000),
                    inactive_threshold: if durable.is_some() {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(300)
                    },
                    ..Default::default()
                };
                let consumer = create(&handle, &config)
                    .await
                    .map_err(|error| consumer_error("create", error))?;
                Incoming::Stream(Box::new(StreamReader {
                    consumer,
                    handle,
                    config,
                    messages: None,
                    pull: subscription.pull,
                    stream: stream.name.clone(),
                    name,
                }))
            }
        };
        Ok(Self {
            subject: filter.to_owned(),
            incoming,
            stopped: false,
        })
    }

    /// The next message, or `None` once the subscription is closed for good (drained, or
    /// the connection closed).
    pub(crate) async fn next(&mut self) -> Option<NatsMessage> {
        match &mut self.incoming {
            Incoming::Core(subscriber) => subscriber.next().await.map(NatsMessage::core),
            Incoming::Stream(_) if self.stopped => None,
            Incoming::Stream(reader) => reader.next(&self.subject).await,
        }
    }

    /// Stops taking new messages. A core subscription is drained: the messages already
    /// received are still returned by [`next`](Self::next), then it ends. A JetStream
    /// consumer stops pulling; the deliveries already received and not yet read are handed
    /// back (nak'd) so another instance gets them at once.
    pub(crate) async fn stop(&mut self) {
        self.stopped = true;
        match &mut self.incoming {
            Incoming::Core(subscriber) => {
                if let Err(error) = subscriber.drain().await {
                    tracing::warn!(subject = %self.subject, %error,
                        "could not drain the subscription to `{}`", self.subject);
                }
            }
            Incoming::Stream(reader) => {
                let Some(mut messages) = reader.messages.take() else {
                    return;
                };
                let mut received = Vec::new();
                while let Some(Some(delivery)) = messages.next().now_or_never() {
                    if let Ok(message) = delivery {
                        received.push(message);
                    }
                }
                // Unsubscribed before handing them back (the unsubscription goes out first on
                // the connection): the server redelivers at once, and a redelivery to this
                // instance's pull request, still open, would be read by no one and wait out
                // the ack wait.
                drop(messages);
                let mut handed_back = 0usize;
                for message in received {
                    if message
                        .ack_with(jetstream::AckKind::Nak(None))
                        .await
                        .is_ok()
                    {
                        handed_back += 1;
                    }
                }
                if handed_back > 0 {
                    tracing::info!(subject = %self.subject, handed_back,
                        "handed back {handed_back} deliveries not started");
                }
            }
        }
    }

    /// For a JetStream subscriber, the ack wait of its consumer on the server: a durable
    /// consumer that existed is joined as it is, perhaps with another than the subscription's.
    pub(crate) fn ack_wait(&self) -> Option<Duration> {
        match &self.incoming {
            Incoming::Core(_) => None,
            Incoming::Stream(reader) => Some(reader.consumer.cached_info().config.ack_wait),
        }
    }

    /// For a JetStream subscriber, the stream and the consumer.
    pub(crate) fn consumer(&self) -> Option<(&str, &str)> {
        match &self.incoming {
            Incoming::Core(_) => None,
            Incoming::Stream(reader) => Some((&reader.stream, &reader.name)),
        }
    }
}

impl StreamReader {
    async fn next(&mut self, subject: &str) -> Option<NatsMessage> {
        let mut failures = 0u32;
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.pull.batch_size)
                    .expires(self.pull.expires)
                    .messages()
                    .await
                {
                    Ok(messages) => self.messages.insert(messages),
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(subject, stream = %self.stream, consumer = %self.name,
                            %error, "could not pull from the consumer; trying again");
                        tokio::time::sleep(retry_delay(failures)).await;
                        // Lost with a stream leader or deleted: made again, as at start.
                        match create(&self.handle, &self.config).await {
                            Ok(consumer) => self.consumer = consumer,
                            Err(error) => tracing::debug!(subject, %error,
                                "could not create the consumer again yet"),
                        }
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => match NatsMessage::jetstream(message) {
                    Some(message) => return Some(message),
                    None => tracing::warn!(subject, stream = %self.stream,
                        "a delivery without JetStream metadata was ignored"),
                },
                Some(Err(error)) => {
                    // Missed heartbeats and the like: the stream goes on by itself; a lost
                    // consumer ends it, and it is pulled from again below.
                    tracing::warn!(subject, stream = %self.stream, consumer = %self.name,
                        %error, "pulling from the consumer");
                }
                None => {
                    failures += 1;
                    self.messages = None;
                    tokio::time::sleep(retry_delay(failures)).await;
                }
            }
        }
    }
}

/// Creates the consumer, or for a durable one that exists, joins it (whatever its settings):
/// a second instance with the same durable name never fails for the consumer existing.
async fn create(
    stream: &jetstream::stream::Stream,
    config: &pull::Config,
) -> Result<PullConsumer, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match &config.durable_name {
        Some(durable) => {
            stream
                .get_or_create_consumer(durable, config.clone())
                .await?
        }
        None => stream.create_consumer(config.clone()).await?,
    })
}

fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.min(50)))
}
