//! Publishing and requests for code outside handlers, and the dead letters of stream
//! subscribers.

use std::time::Duration;

use async_nats::jetstream::context::GetStreamByNameErrorKind;

use super::NatsBroker;
use crate::error::NatsError;
use crate::nats::publish::{self, PublishRetry};
use crate::nats::{dead_letters, NatsMessage, Outgoing, StreamDeadLetter};

/// How long [`NatsBroker::request`] waits for a reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl NatsBroker {
    /// Publishes `payload` to `subject` with a new `correlation_id` (FastStream's
    /// `broker.publish`): through JetStream, waiting for the stream to store it, if a stream
    /// captures the subject, else on core NATS.
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> Result<(), faststream_core::error::NatsError> {
    /// broker.publish("orders.created", r#"{"id": 1}"#).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish(
        &self,
        subject: &str,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<(), NatsError> {
        self.publish_with(subject, Outgoing::new(payload)).await
    }

    /// Publishes `message` (payload and headers) to `subject`, as [`publish`](Self::publish).
    pub async fn publish_with(&self, subject: &str, message: Outgoing) -> Result<(), NatsError> {
        let jetstream = self.jetstream().map_err(|_| NatsError::NotConnected)?;
        match jetstream.stream_by_subject(subject.to_owned()).await {
            Ok(_) => {
                publish::publish_stored(
                    &jetstream,
                    subject,
                    message,
                    None,
                    &PublishRetry::default(),
                )
                .await
            }
            Err(error) if matches!(error.kind(), GetStreamByNameErrorKind::NotFound) => {
                publish::publish(&jetstream.client(), subject, message).await
            }
            Err(error) => Err(NatsError::Publish {
                subject: subject.to_owned(),
                source: Box::new(error),
            }),
        }
    }

    /// Sends a request and returns the reply (FastStream's `broker.request`), waiting up to
    /// [`DEFAULT_REQUEST_TIMEOUT`]. Nobody listening fails at once with
    /// [`NatsError::NoResponders`]; a handler that failed answers with
    /// [`NatsError::ErrorReply`].
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> Result<(), faststream_core::error::NatsError> {
    /// let reply = broker.request("orders.1.get", "").await?;
    /// println!("{:?}", reply.payload());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(
        &self,
        subject: &str,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<NatsMessage, NatsError> {
        self.request_with(subject, Outgoing::new(payload), DEFAULT_REQUEST_TIMEOUT)
            .await
    }

    /// Sends `message` as a request and waits up to `timeout` for the reply.
    pub async fn request_with(
        &self,
        subject: &str,
        message: Outgoing,
        timeout: Duration,
    ) -> Result<NatsMessage, NatsError> {
        let client = self.client().map_err(|_| NatsError::NotConnected)?;
        let reply = publish::request(&client, subject, message, timeout).await?;
        Ok(NatsMessage::core(reply))
    }

    /// The JetStream deliveries of `stream` its subscribers gave up, oldest first.
    pub async fn stream_dead_letters(
        &self,
        stream: &str,
    ) -> Result<Vec<StreamDeadLetter>, NatsError> {
        let jetstream = self.jetstream().map_err(|_| NatsError::NotConnected)?;
        dead_letters::read(&jetstream, stream).await
    }

    /// Publishes dead letter `sequence` of `stream` to its subject again, then removes it.
    pub async fn replay_stream_dead_letter(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<(), NatsError> {
        let jetstream = self.jetstream().map_err(|_| NatsError::NotConnected)?;
        dead_letters::replay(&jetstream, stream, sequence).await
    }
}
