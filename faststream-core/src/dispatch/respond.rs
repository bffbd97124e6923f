//! After a call: what the handler returned, published to its `#[publisher]`s and sent as the
//! reply to a request; a failed call answered with the NATS service API's error headers, so a
//! requester can tell a failure from silence.

use std::sync::Arc;

use super::Dispatcher;
use crate::error::chain;
use crate::extract::Message;
use crate::handler::Reply;
use crate::nats::publish::{self, Outgoing, PublishRetry, SERVICE_ERROR, SERVICE_ERROR_CODE};
use crate::nats::{NatsMessage, CONTENT_TYPE, CORRELATION_ID};

/// One `#[publisher]` of a handler, resolved when the app started.
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    /// The subject, router prefix included.
    pub(crate) subject: Arc<str>,
    /// The stream that stores what is published there, if one does (named, or found when the
    /// app started): published through JetStream, acknowledged.
    pub(crate) stream: Option<Arc<str>>,
    /// Whether the stream was named (then checked with `Nats-Expected-Stream`).
    pub(crate) expect_stream: bool,
    pub(crate) retry: PublishRetry,
}

/// The longest error description put in a reply header, in characters.
const MAX_DESCRIPTION: usize = 1024;

impl Dispatcher {
    /// [`send_output`](Self::send_output) when there is anywhere to send to. Its future is
    /// boxed: kept inline it would grow every call's future, publishers or not.
    pub(super) async fn send_output_if_any(
        &self,
        message: &Message,
        reply: Reply,
    ) -> Result<(), String> {
        if self.publishers.is_empty() && self.reply_subject(message).is_none() {
            return Ok(());
        }
        Box::pin(self.send_output(message, reply)).await
    }

    /// [`answer_failure`](Self::answer_failure) for a request, its future boxed (see
    /// [`send_output_if_any`](Self::send_output_if_any)).
    pub(super) async fn answer_failure_if_asked(
        &self,
        message: &Message,
        code: u16,
        description: &str,
    ) {
        if self.reply_subject(message).is_some() {
            Box::pin(self.answer_failure(message, code, description)).await;
        }
    }

    /// Sends what the handler returned: to each publisher, in order (the first failure fails
    /// the call), then as the reply to a request. A reply that cannot be sent is logged: the
    /// requester times out, and the message is handled.
    async fn send_output(&self, message: &Message, reply: Reply) -> Result<(), String> {
        let broker = &self.context.app.broker;
        let correlation = message.nats().and_then(NatsMessage::correlation_id);
        for publication in self.publishers.iter() {
            let outgoing = self.outgoing(&reply, correlation);
            let subject = &*publication.subject;
            let sent = match &publication.stream {
                Some(stream) => {
                    let jetstream = broker.jetstream().map_err(|e| chain(&e))?;
                    let expected = publication.expect_stream.then_some(&**stream);
                    publish::publish_stored(
                        &jetstream,
                        subject,
                        outgoing,
                        expected,
                        &publication.retry,
                    )
                    .await
                }
                None => {
                    let client = broker.client().map_err(|e| chain(&e))?;
                    publish::publish(&client, subject, outgoing).await
                }
            };
            sent.map_err(|error| format!("publishing to `{subject}` failed: {}", chain(&error)))?;
        }
        if let Some(to) = self.reply_subject(message) {
            let outgoing = self.outgoing(&reply, correlation);
            self.send_reply(to, outgoing).await;
        }
        Ok(())
    }

    /// Answers a request whose call failed: an empty body with `Nats-Service-Error` (what
    /// failed) and `Nats-Service-Error-Code` (400: the request could not be read; 500: the
    /// handler failed).
    async fn answer_failure(&self, message: &Message, code: u16, description: &str) {
        let Some(to) = self.reply_subject(message) else {
            return;
        };
        let correlation = message.nats().and_then(NatsMessage::correlation_id);
        let description: String = description
            .chars()
            .take(MAX_DESCRIPTION)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let outgoing = self
            .outgoing(&Reply::empty(), correlation)
            .header(SERVICE_ERROR, &description)
            .header(SERVICE_ERROR_CODE, &code.to_string());
        self.send_reply(to, outgoing).await;
    }

    fn reply_subject<'a>(&self, message: &'a Message) -> Option<&'a str> {
        if !self.replies {
            return None;
        }
        message.nats()?.reply_subject()
    }

    /// A message of `reply`'s body with FastStream's headers: `content-type`, and the
    /// request's `correlation_id` (a new one without a request); the trace context is added
    /// when it is sent.
    fn outgoing(&self, reply: &Reply, correlation: Option<&str>) -> Outgoing {
        let mut outgoing = Outgoing::new(reply.payload().clone());
        if let Some(correlation) = correlation {
            outgoing = outgoing.header(CORRELATION_ID, correlation);
        }
        if let Some(content_type) = reply.content_type() {
            outgoing = outgoing.header(CONTENT_TYPE, content_type);
        }
        outgoing
    }

    async fn send_reply(&self, to: &str, outgoing: Outgoing) {
        let sent = match self.context.app.broker.client() {
            Ok(client) => publish::publish(&client, to, outgoing).await,
            Err(_) => Err(crate::error::NatsError::NotConnected),
        };
        if let Err(error) = sent {
            tracing::warn!(subscriber = %self.context.name, reply_to = to, error = %chain(&error),
                "could not send the reply to `{to}`");
        }
    }
}
