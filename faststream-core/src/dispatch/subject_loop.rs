//! The subject loop: one task per subject or stream subscriber that hands each message of its
//! [`SubjectSource`] to the handler, then settles a JetStream delivery as its
//! [`AckPolicy`] says.
//!
//! With `max_workers = 1` (the default) messages are handled one at a time, in arrival order.
//! With `N > 1` up to `N` calls run at once; with `ordered_by`, the messages of one key wait
//! for each other, in arrival order. At most `N` wait; beyond that the loop stops reading,
//! which holds back the subscription (for a stream, the server) instead of buffering.
//!
//! On shutdown the subscription is stopped first: a core subscription is drained (the
//! messages already received are still handled, none is taken and dropped), a stream's
//! deliveries received but not started are handed back; then the calls in flight finish.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::keyed::KeyedCalls;
use super::{CallOutcome, Dispatcher, FailureLog};
use crate::extract::Message;
use crate::nats::dead_letters;
use crate::nats::source::SubjectSource;
use crate::nats::{AckPolicy, NatsMessage, Subscription};
use crate::observe::metrics::SubjectMetrics;

/// Which part of a subject orders the calls of `max_workers > 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKey {
    /// No order: any messages at once.
    None,
    /// The whole subject.
    Subject,
    /// The subject's token at this index (a `{name}` placeholder).
    Token(usize),
}

impl OrderKey {
    fn of(self, subject: &str) -> Option<String> {
        match self {
            Self::None => None,
            Self::Subject => Some(subject.to_owned()),
            Self::Token(index) => subject.split('.').nth(index).map(str::to_owned),
        }
    }
}

/// How a stream subscriber settles its deliveries.
#[derive(Debug, Clone)]
pub(crate) struct Settlement {
    pub(crate) policy: AckPolicy,
    pub(crate) max_attempts: u32,
    pub(crate) subscription: Arc<Subscription>,
    /// Where dead letters go; `None` for a core subscriber.
    pub(crate) jetstream: Option<jetstream::Context>,
    /// The stream's replicas, for its dead-letter stream.
    pub(crate) replicas: usize,
    pub(crate) metrics: Arc<SubjectMetrics>,
}

/// One subject subscriber's loop over its source.
pub(crate) struct SubjectLoop {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) source: SubjectSource,
    pub(crate) max_workers: usize,
    pub(crate) order: OrderKey,
    pub(crate) settlement: Settlement,
}

impl SubjectLoop {
    /// Handles messages until `cancel` fires; then stops the subscription, handles what it
    /// had received (a core subscription's) and lets the calls in flight finish.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        if self.max_workers <= 1 {
            self.run_sequential(cancel).await;
        } else {
            self.run_concurrent(cancel).await;
        }
    }

    /// One call at a time, in the loop itself: no task per message.
    async fn run_sequential(mut self, cancel: CancellationToken) {
        let name = Arc::clone(&self.dispatcher.context.name);
        // One wait for the cancellation, not one made and dropped per message.
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            let message = tokio::select! {
                biased;
                () = &mut cancelled => break,
                message = self.source.next() => message,
            };
            let Some(message) = message else {
                tracing::warn!(subscriber = %name, "subscription closed; subject loop ends");
                return;
            };
            self.note_pending(&message);
            handle(&self.dispatcher, &self.settlement, message).await;
        }
        self.source.stop().await;
        // What a drained core subscription still holds is handled; a stream's is handed back.
        while let Some(message) = self.source.next().await {
            handle(&self.dispatcher, &self.settlement, message).await;
        }
        tracing::debug!(subscriber = %name, "subject loop stopped");
    }

    /// Up to `max_workers` calls at once, each in a task; with `ordered_by`, one per key.
    async fn run_concurrent(mut self, cancel: CancellationToken) {
        let name = Arc::clone(&self.dispatcher.context.name);
        let dispatcher = self.dispatcher.clone();
        let settlement = self.settlement.clone();
        let mut calls = KeyedCalls::new(self.max_workers, move |message: NatsMessage| {
            let dispatcher = dispatcher.clone();
            let settlement = settlement.clone();
            async move { handle(&dispatcher, &settlement, message).await }
        });
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(()) = calls.join_next(), if !calls.is_idle() => {}
                message = self.source.next(), if calls.has_room() => {
                    let Some(message) = message else {
                        tracing::warn!(subscriber = %name, "subscription closed; subject loop ends");
                        calls.finish().await;
                        return;
                    };
                    self.take(&mut calls, message);
                }
            }
        }
        self.source.stop().await;
        // What a drained core subscription still holds is handled; a stream's is handed back.
        while let Some(message) = self.source.next().await {
            while !calls.has_room() {
                calls.join_next().await;
            }
            self.take(&mut calls, message);
        }
        for message in calls.take_waiting() {
            hand_back(&message).await;
        }
        calls.finish().await;
        tracing::debug!(subscriber = %name, "subject loop stopped");
    }

    fn take(&self, calls: &mut KeyedCalls<NatsMessage>, message: NatsMessage) {
        self.note_pending(&message);
        calls.submit(self.order.of(message.subject()), message, ());
    }

    fn note_pending(&self, message: &NatsMessage) {
        if let Some(counts) = message.delivery_counts() {
            self.settlement.metrics.set_pending(counts.pending);
        }
    }
}

/// Calls the handler for one message and settles it: the one path every message takes.
///
/// A stream delivery's call and its dead-letter path are boxed: kept inline they made this
/// future some kilobytes, moved several times for every message. A core message's call is
/// not: awaited in place, it is never moved.
async fn handle(dispatcher: &Dispatcher, settlement: &Settlement, message: NatsMessage) {
    let Some(delivered) = message.delivery_counts().map(|counts| counts.delivered) else {
        dispatcher
            .dispatch_guarded(Message::from_nats(message))
            .await;
        return;
    };
    let policy = settlement.policy;
    if policy == AckPolicy::AckFirst {
        settle(&message, message.ack().await);
    }
    let outcome = {
        let called = Message::from_nats(message.clone());
        let call = Box::pin(dispatcher.call_guarded(
            &called,
            dispatcher.handler_timeout,
            FailureLog::Dispatcher,
        ));
        keep_alive(&message, settlement.subscription.ack_wait, policy, call).await
    };
    if matches!(policy, AckPolicy::AckFirst | AckPolicy::Manual) || message.is_settled() {
        return;
    }
    let failure = match outcome {
        CallOutcome::Done => return settle(&message, message.ack().await),
        CallOutcome::Rejected(reason) => Some(reason),
        CallOutcome::Failed(_) if policy == AckPolicy::Ack => {
            return settle(&message, message.ack().await)
        }
        CallOutcome::Failed(reason)
            if policy == AckPolicy::NackOnError
                && delivered < u64::from(settlement.max_attempts) =>
        {
            let delay = settlement.subscription.delay_after(delivered);
            let label = Message::from_nats(message.clone()).label().to_string();
            tracing::info!(
                subject = message.subject(),
                attempt = delivered,
                ?delay,
                reason,
                "{label} - handed back, to be tried again in {delay:?}"
            );
            settlement.metrics.redelivered();
            return settle(&message, message.nak(Some(delay)).await);
        }
        CallOutcome::Failed(reason) => Some(reason),
    };
    let Some(reason) = failure else { return };
    Box::pin(give_up(settlement, &message, delivered, &reason)).await;
}

/// Keeps the failed delivery as a dead letter, then terminates it. If it cannot be kept, it is
/// handed back instead, to be tried again: never dropped.
async fn give_up(settlement: &Settlement, message: &NatsMessage, attempts: u64, reason: &str) {
    let Some(jetstream) = &settlement.jetstream else {
        return;
    };
    match dead_letters::keep(jetstream, message, settlement.replicas, attempts, reason).await {
        Ok(sequence) => {
            tracing::warn!(
                subject = message.subject(),
                attempts,
                dead_letter = sequence,
                reason,
                "given up after {attempts} attempt(s) and kept as dead letter {sequence}"
            );
            settlement.metrics.given_up();
            settle(message, message.term().await);
        }
        Err(error) => {
            tracing::error!(subject = message.subject(), error = %crate::error::chain(&error),
                "could not keep a delivery given up as a dead letter; handing it back");
            settle(message, message.nak(Some(Duration::from_secs(5))).await);
        }
    }
}

/// Runs `call`, telling the server the delivery is still worked on every third of its ack
/// wait, so a long call is not delivered again to another instance meanwhile.
async fn keep_alive<F: std::future::Future<Output = CallOutcome>>(
    message: &NatsMessage,
    ack_wait: Duration,
    policy: AckPolicy,
    call: F,
) -> CallOutcome {
    if policy == AckPolicy::AckFirst {
        return call.await;
    }
    let mut call = std::pin::pin!(call);
    // Most calls end on their first poll: those need no timer (making one costs more than
    // many a handler).
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(outcome) = first {
        return outcome;
    }
    let period = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            outcome = &mut call => return outcome,
            _ = ticks.tick() => {
                if !message.is_settled() {
                    if let Err(error) = message.in_progress().await {
                        tracing::debug!(error = %error, "could not extend the ack wait");
                    }
                }
            }
        }
    }
}

/// A delivery taken but not started at shutdown: handed back for another instance.
async fn hand_back(message: &NatsMessage) {
    if message.is_jetstream() {
        settle(message, message.nak(None).await);
    }
}

fn settle(message: &NatsMessage, settled: Result<(), crate::error::NatsError>) {
    if let Err(error) = settled {
        tracing::warn!(subject = message.subject(), error = %crate::error::chain(&error),
            "could not settle a delivery; the server delivers it again after its ack wait");
    }
}
