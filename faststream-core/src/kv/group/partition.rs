//! The pull loop of one partition, written against the consumer's next-message API rather
//! than async-nats's `messages()`: a member must know the moment it loses the server's pin
//! (to stop starting calls), which that stream hides, and `fetch`/`batch` refuse pinned
//! consumers.
//!
//! One pull request is kept waiting at a time: `{batch, expires, idle_heartbeat, group, id}`,
//! with the pin id once the server has given one. It is renewed when it expires (status 408),
//! when its batch is used up, after any other status, and in any case after its expiry plus a
//! grace period (a status lost in a reconnect). The expiry is well under the pin timeout, so a
//! pinned member keeps its pin while idle. A pull carrying a pin that is no longer valid gets
//! status 423 at once: the pin is lost.
//!
//! Giving the partition up goes pin first ([`PartitionPuller::give_back_pin`]): once the pin
//! is given back, the server answers this member's waiting pull requests with 423 instead of
//! delivering on them, so settling the last change cannot make it send the next one here; and
//! [`PartitionPuller::fence`] collects what it had sent before, for this member to handle.
//! Unsubscribing first would not do: a change the server had already sent (right after this
//! member's last acknowledgement, say) would be dropped unread, and would wait for the ack
//! wait, a session timeout, before going to the next member, an attempt used up. A member that
//! never held the partition's pin has none to give back: a change the server sends it at the
//! very moment it unsubscribes still waits for the ack wait.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};

use self::ack::ack_info;
pub(crate) use self::ack::Acker;
use super::layout::{split_subject, GroupLayout, PRIORITY_GROUP};
use crate::kv::message::{KvMessage, MessageParts, Operation};

/// Messages asked for per pull request: the consumer's `max_ack_pending` bounds what it sends
/// unacknowledged; a larger batch only saves requests.
const BATCH: usize = 256;
/// Added to a pull's expiry before it is given up as lost; also how long an answer to giving
/// the pin back is waited for.
const PULL_GRACE: Duration = Duration::from_secs(1);

/// What a partition's pull loop yields.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// A change to handle, with the server's delivery count.
    Change(Box<GroupDelivery>),
    /// The server moved the partition's pin to another member.
    PinLost,
    /// The connection is closed for good.
    Closed,
}

/// A change delivered by the group, and how to settle it with the server.
#[derive(Debug)]
pub(crate) struct GroupDelivery {
    pub(crate) message: KvMessage,
    /// The server's delivery count of the change (1 for the first delivery), which survives
    /// the member that made the earlier attempts; see `kv::group::handbacks` for the attempt
    /// number made from it.
    pub(crate) delivered: u64,
    /// The stream sequence (the bucket revision), to recognise a redelivery of the change in
    /// hand.
    pub(crate) stream_sequence: u64,
    ack: Acker,
}

impl GroupDelivery {
    pub(crate) fn acker(&self) -> &Acker {
        &self.ack
    }

    /// The change, its delivery count, its stream sequence, and how to settle it.
    pub(crate) fn into_parts(self) -> (KvMessage, u64, u64, Acker) {
        (self.message, self.delivered, self.stream_sequence, self.ack)
    }
}

/// The pull loop of one partition.
#[derive(Debug)]
pub(crate) struct PartitionPuller {
    client: Client,
    /// Shared by the deliveries' ackers.
    acks: Arc<Client>,
    partition: u16,
    next_subject: String,
    inbox: String,
    subscription: Subscriber,
    /// The pin id the server gave, while this member believes it holds the pin.
    pin: Option<String>,
    /// Shared with calls waiting to start: cleared when the pin is lost.
    pinned: Arc<AtomicBool>,
    expires: Duration,
    idle_heartbeat: Duration,
    remaining: usize,
    repull_at: Instant,
    /// Fires at `repull_at`: kept across calls of [`next`](Self::next) rather than made anew
    /// for each delivery.
    repull: Pin<Box<tokio::time::Sleep>>,
    bucket: Arc<str>,
    without_values: bool,
    /// Set once the pin is given back: no more pulls are sent.
    released: bool,
    /// Whether a pull request of this member may still be waiting on the server.
    outstanding: bool,
    /// Set by [`give_back_pin`](Self::give_back_pin) for [`fence`](Self::fence) to run.
    fence_due: bool,
    /// The pin given back, for the fence.
    given_back: Option<String>,
}

impl PartitionPuller {
    pub(crate) async fn start(
        context: jetstream::Context,
        layout: &GroupLayout,
        partition: u16,
        session_timeout: Duration,
        without_values: bool,
    ) -> Result<Self, async_nats::SubscribeError> {
        let client = context.client();
        let inbox = client.new_inbox();
        let subscription = client.subscribe(inbox.clone()).await?;
        // Pulls renewed at least three times per pin timeout.
        let expires = session_timeout / 3;
        Ok(Self {
            next_subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                layout.stream,
                GroupLayout::consumer(partition)
            ),
            acks: Arc::new(client.clone()),
            client,
            partition,
            inbox,
            subscription,
            pin: None,
            pinned: Arc::new(AtomicBool::new(false)),
            expires,
            idle_heartbeat: expires / 3,
            remaining: 0,
            repull_at: Instant::now(),
            repull: Box::pin(tokio::time::sleep(Duration::ZERO)),
            bucket: Arc::from(layout.bucket.as_str()),
            without_values,
            released: false,
            outstanding: false,
            fence_due: false,
            given_back: None,
        })
    }

    /// Cleared the moment this member learns it lost the pin.
    pub(crate) fn pinned_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.pinned)
    }

    /// The pin id held, if any, for the member's heartbeat.
    pub(crate) fn pin(&self) -> Option<&str> {
        self.pin.as_deref()
    }

    /// The next change or pin loss. Cancel-safe: a pull request is sent in one step, and what
    /// arrives stays in the subscription (but for a delivery that cannot be read, cancelled
    /// while it is being terminated: it comes back after the ack wait, to be terminated then).
    pub(crate) async fn next(&mut self) -> Pulled {
        loop {
            if self.remaining == 0 || Instant::now() >= self.repull_at {
                self.pull().await;
            }
            let message = tokio::select! {
                message = self.subscription.next() => message,
                () = self.repull.as_mut() => {
                    self.remaining = 0;
                    self.outstanding = false;
                    continue;
                }
            };
            let Some(message) = message else {
                return Pulled::Closed;
            };
            if let Some(status) = message.status {
                // Any answer but a heartbeat ends the pull request.
                self.outstanding &= status.as_u16() == 100;
                match status.as_u16() {
                    // Idle heartbeat: the pull is still waiting.
                    100 => {}
                    423 => {
                        self.remaining = 0;
                        if self.lose_pin() {
                            return Pulled::PinLost;
                        }
                    }
                    // No responders: the consumer has no leader (an election after a node
                    // died) or does not exist. The server answers at once, so pulling again
                    // at once would be a busy loop of requests against a cluster that is
                    // electing; the next pull goes after an idle-heartbeat interval (no pull
                    // is outstanding; `remaining` only holds the loop until `repull_at`).
                    503 => {
                        self.remaining = 1;
                        self.repull_after(self.idle_heartbeat);
                    }
                    // 408 expired, 409 (leadership change, max waiting, ...), 404: pull again.
                    _ => self.remaining = 0,
                }
                continue;
            }
            self.remaining = self.remaining.saturating_sub(1);
            self.outstanding &= self.remaining > 0;
            if let Some(delivery) = self.accept(message).await {
                return Pulled::Change(Box::new(delivery));
            }
        }
    }

    /// A delivery read, or `None` for one that cannot be: it is logged and terminated at
    /// once, so that it neither blocks the partition until the ack wait (a session timeout)
    /// and again after every redelivery, nor goes unseen.
    async fn accept(&mut self, message: async_nats::Message) -> Option<GroupDelivery> {
        let subject = message.subject.clone();
        let reply = message.reply.clone();
        match self.delivery(message) {
            Ok(delivery) => Some(delivery),
            Err(problem) => {
                let terminated = match reply {
                    Some(reply) => Acker::new(reply, Arc::clone(&self.acks))
                        .terminate()
                        .await
                        .map_err(|error| error.to_string()),
                    None => Err("it has no reply subject to terminate it with".to_owned()),
                };
                match terminated {
                    Ok(()) => tracing::error!(partition = self.partition, %subject, problem,
                        "a delivery of partition {} cannot be read ({problem}); terminated: it \
                         will not be delivered again", self.partition),
                    Err(error) => tracing::error!(partition = self.partition, %subject, problem,
                        error, "a delivery of partition {} cannot be read ({problem}), nor \
                         terminated ({error})", self.partition),
                }
                None
            }
        }
    }

    fn repull_after(&mut self, wait: Duration) {
        self.repull_at = Instant::now() + wait;
        self.repull.as_mut().reset(self.repull_at.into());
    }

    fn lose_pin(&mut self) -> bool {
        self.pinned.store(false, Ordering::SeqCst);
        self.pin.take().is_some()
    }

    async fn pull(&mut self) {
        let mut request = serde_json::json!({
            "batch": BATCH,
            "expires": nanos(self.expires),
            "idle_heartbeat": nanos(self.idle_heartbeat),
            "group": PRIORITY_GROUP,
        });
        if let Some(pin) = &self.pin {
            request["id"] = serde_json::Value::String(pin.clone());
        }
        self.repull_after(self.expires + PULL_GRACE);
        let payload = Bytes::from(request.to_string());
        match self
            .client
            .publish_with_reply(self.next_subject.clone(), self.inbox.clone(), payload)
            .await
        {
            Ok(()) => {
                self.remaining = BATCH;
                self.outstanding = true;
            }
            // The client is closed; the subscription ends too, which `next` reports.
            Err(error) => {
                tracing::debug!(partition = self.partition, error = %error, "pull request not sent");
                self.repull_after(self.idle_heartbeat);
            }
        }
    }

    /// Reads a delivery; what cannot be read is returned with the reason.
    fn delivery(&mut self, message: async_nats::Message) -> Result<GroupDelivery, &'static str> {
        let async_nats::Message {
            subject,
            reply,
            payload,
            headers,
            ..
        } = message;
        let pin = headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Pin-Id"))
            .map(|pin| pin.as_str());
        if let Some(pin) = pin {
            if self.pin.as_deref() != Some(pin) {
                tracing::debug!(partition = self.partition, pin, "pinned to this member");
                self.pin = Some(pin.to_owned());
            }
            self.pinned.store(true, Ordering::SeqCst);
        }
        let not_an_ack = "its reply subject is not a JetStream acknowledgement's";
        let reply = reply.ok_or(not_an_ack)?;
        let info = ack_info(&reply).ok_or(not_an_ack)?;
        let published = time::OffsetDateTime::from_unix_timestamp_nanos(info.published_nanos)
            .map_err(|_| "its reply subject has no valid publication time")?;
        let (_, key) = split_subject(&subject).ok_or("its subject is not `p.<partition>.<key>`")?;
        let value_size = payload.len();
        let parts = MessageParts {
            bucket: Arc::clone(&self.bucket),
            key: key.to_owned(),
            value: if self.without_values {
                Bytes::new()
            } else {
                payload
            },
            value_size,
            revision: info.stream_sequence,
            delta: info.pending,
            created: published,
            operation: Operation::from_headers(headers.as_ref()),
            headers,
        };
        Ok(GroupDelivery {
            message: KvMessage::from(parts),
            delivered: info.delivered.max(1),
            stream_sequence: info.stream_sequence,
            ack: Acker::new(reply, Arc::clone(&self.acks)),
        })
    }

    /// Whether the pin was given back: [`next`](Self::next) must not be called any more (it
    /// would pull again, and could be pinned again).
    pub(crate) fn is_released(&self) -> bool {
        self.released
    }

    /// Gives the pin back if this member holds it, so that the next member is pinned at once
    /// instead of after the pin timeout, and stops pulling. From then on the server answers this
    /// member's waiting pull requests with 423 rather than delivering on them: a member giving
    /// the partition up with a call in flight does this before it settles the call, so that
    /// settling does not send the partition's next change here. The change in hand may still
    /// be handled: nobody else gets the partition's changes until it is settled.
    pub(crate) async fn give_back_pin(&mut self, stream: &jetstream::stream::Stream) {
        self.released = true;
        let Some(pin) = self.pin.take() else {
            // The pin's id is not known: nothing was delivered to this member yet. It may be
            // pinned all the same, and a first change may be on its way; it cannot unpin a pin
            // it cannot tell from another member's, so [`fence`] checks without the id.
            self.fence_due |= self.outstanding;
            return;
        };
        let consumer = GroupLayout::consumer(self.partition);
        // A consumer electing a leader does not answer. Waiting for the request timeout (10 s
        // by default) would keep the partition from being pulled here again (its task is still
        // ending), while a pin not given back lapses anyway after the pin timeout.
        let unpinned =
            tokio::time::timeout(PULL_GRACE, stream.unpin_consumer(&consumer, PRIORITY_GROUP))
                .await;
        let problem = match unpinned {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {PULL_GRACE:?}")),
        };
        if let Some(problem) = problem {
            tracing::debug!(
                partition = self.partition,
                problem,
                "could not give the pin back; the next member is pinned after the pin timeout"
            );
        }
        self.given_back = Some(pin);
        self.fence_due = true;
    }

    /// After [`give_back_pin`](Self::give_back_pin): waits until the server has sent everything
    /// it delivered on this member's pull requests before the pin was given back (a change sent
    /// just after this member's last acknowledgement, say), and returns it. It is this member's
    /// to handle: nobody else gets the partition's changes until it is settled. A no-wait pull
    /// carrying the old pin is answered at once with a status (the pin no longer matches), and
    /// the consumer sends its answers and deliveries through one queue, in order: once the
    /// answer is in, so are those deliveries. A member that never learnt its pin's id (nothing
    /// was delivered to it yet, but it may be pinned, a first change on its way) sends the
    /// no-wait pull without one: another member's pin refuses it at once, the same way; with no
    /// pin at all the server may deliver a change on it, pinning this member: that change is
    /// returned, and carries the pin's id, so the pin can then be given back properly. Waits at
    /// most [`PULL_GRACE`] for the answer. Returns nothing after the first call, or if no pull of
    /// this member was waiting.
    pub(crate) async fn fence(&mut self) -> Vec<GroupDelivery> {
        if !std::mem::replace(&mut self.fence_due, false) {
            return Vec::new();
        }
        let mut request = serde_json::json!({
            "batch": 1,
            "no_wait": true,
            "group": PRIORITY_GROUP,
        });
        if let Some(pin) = self.given_back.take() {
            request["id"] = serde_json::Value::String(pin);
        }
        let mut arrived = Vec::new();
        let inbox = self.client.new_inbox();
        if let Ok(mut answer) = self.client.subscribe(inbox.clone()).await {
            let sent = self
                .client
                .publish_with_reply(
                    self.next_subject.clone(),
                    inbox,
                    Bytes::from(request.to_string()),
                )
                .await;
            let answered = match sent {
                Ok(()) => tokio::time::timeout(PULL_GRACE, answer.next())
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            let _ = answer.unsubscribe().await;
            match answered {
                None => tracing::debug!(partition = self.partition,
                    "no answer to the hand-over fence; a change sent here meanwhile may wait for the ack wait"),
                Some(message) if message.status.is_none() => {
                    arrived.extend(self.accept(message).await);
                }
                Some(_) => {}
            }
        }
        // Received before the answer, so already in the subscription.
        while let Some(Some(message)) = self.subscription.next().now_or_never() {
            if message.status.is_none() {
                arrived.extend(self.accept(message).await);
            }
        }
        self.outstanding = false;
        arrived
    }

    /// Ends the pull: unsubscribes, and returns the changes that arrived and were not handled
    /// (none once the pin is given back and [`fence`](Self::fence) has run), to be handed back.
    pub(crate) async fn release(mut self) -> Vec<GroupDelivery> {
        let _ = self.subscription.unsubscribe().await;
        // The subscription is closed: what it holds can still be read, then it ends.
        let mut arrived = Vec::new();
        while let Some(message) = self.subscription.next().await {
            if message.status.is_none() {
                arrived.extend(self.accept(message).await);
            }
        }
        arrived
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

mod ack;
#[cfg(test)]
mod props;
