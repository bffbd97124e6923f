//! Settling a partition's changes with the server: acknowledged, asked again after a backoff,
//! kept as a dead letter, or handed back without a call (recorded, so not counted as an
//! attempt; see `kv::group::handbacks`).

use std::time::Duration;

use super::partition_task::PartitionContext;
use crate::dispatch::CallOutcome;
use crate::kv::group::dead_letters;
use crate::kv::group::partition::Acker;
use crate::kv::message::KvMessage;

/// How an attempt ended: the call's outcome, or why it was never made.
pub(super) enum AttemptEnd {
    /// The pin was lost (or the connection), or the partition given up, before the call could
    /// start.
    NotStarted,
    Called(CallOutcome),
}

/// Where a change stands once settled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// Done with: acknowledged, or given up (terminated).
    Done,
    /// Asked again after a backoff: its key waits for it.
    Retrying,
    /// Never started: to hand back (and so it comes again, here or to the next holder).
    HandBack,
}

/// A call that ran or was to run, with what settling it needs (but its change, which the call
/// holds).
pub(super) struct Attempt {
    /// The real attempt this call is: the delivery count less the hand-backs.
    pub(super) number: u64,
    pub(super) stream_sequence: u64,
    /// The deliveries of this change handed back without a call so far, as recorded.
    pub(super) handed_back: u64,
    /// Deliveries of this change to this member that are not calls of their own (the server
    /// delivered it again while it was in hand): added to `handed_back` when it is let go.
    pub(super) uncounted: u64,
    pub(super) acker: Acker,
}

/// A delivery to hand back: settled with a retry at once once its count is recorded.
pub(super) struct HandBack {
    pub(super) acker: Acker,
    pub(super) stream_sequence: u64,
    pub(super) before: HandedBackBefore,
    /// Deliveries of it here that were not calls, this one included.
    pub(super) not_calls: u64,
}

/// How often a change was handed back before this delivery.
pub(super) enum HandedBackBefore {
    /// Read when its call was prepared.
    Known(u64),
    /// Not read yet: read at hand-back if the server's delivery count says it was delivered
    /// before.
    Unread { delivered: u64 },
}

impl PartitionContext {
    /// Settles the call of `attempt` after it ended as `end`.
    pub(super) async fn settle(
        &self,
        partition: u16,
        attempt: &Attempt,
        message: &KvMessage,
        end: AttemptEnd,
    ) -> Settled {
        let settings = &self.settings;
        let subscriber = &*self.dispatcher.context.name;
        let (key, revision) = (message.key(), message.revision());
        let number = attempt.number;
        match end {
            AttemptEnd::NotStarted => Settled::HandBack,
            AttemptEnd::Called(CallOutcome::Done) => {
                if let Err(error) = attempt.acker.ack().await {
                    tracing::warn!(subscriber, key, revision, error = %error,
                        "{key} | {revision} - handled, but the acknowledgement was not sent; it will be handled again");
                }
                Settled::Done
            }
            AttemptEnd::Called(CallOutcome::Rejected(reason)) => {
                let reason = format!("could not decode the entry: {reason}");
                self.give_up(message, number, &attempt.acker, &reason).await
            }
            AttemptEnd::Called(CallOutcome::Failed(reason)) => {
                if number >= u64::from(settings.max_attempts) {
                    return self.give_up(message, number, &attempt.acker, &reason).await;
                }
                let delay = settings.backoff_after(number);
                tracing::warn!(subscriber, key, revision, attempt = number,
                    max_attempts = settings.max_attempts, retry_in = ?delay, error = %reason,
                    "{key} | {revision} - attempt {number} of {} failed: {reason}; retrying in {delay:?}",
                    settings.max_attempts);
                // Deliveries that were not calls of their own are recorded, so that the next
                // delivery's count tells the next attempt.
                let count = if attempt.uncounted > 0 {
                    attempt.handed_back + attempt.uncounted
                } else {
                    0
                };
                self.let_go(
                    partition,
                    &attempt.acker,
                    attempt.stream_sequence,
                    count,
                    delay,
                )
                .await;
                Settled::Retrying
            }
        }
    }

    /// How many deliveries of the change at `sequence` were handed back without a call, if it
    /// was delivered before (`delivered` > 1). A count that cannot be read is taken as 0: the
    /// hand-backs then count as attempts.
    pub(super) async fn handed_back(&self, partition: u16, sequence: u64, delivered: u64) -> u64 {
        if delivered <= 1 {
            return 0;
        }
        match self.handbacks.of(partition, sequence).await {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(partition, sequence, error = %error,
                    "could not read how often the change was handed back; those deliveries count as attempts");
                0
            }
        }
    }

    /// Records that the change at `sequence` was handed back `count` times in all without a
    /// call, then asks for it again after `delay`. If the count cannot be recorded, the
    /// delivery counts as an attempt.
    pub(super) async fn let_go(
        &self,
        partition: u16,
        acker: &Acker,
        sequence: u64,
        count: u64,
        delay: Duration,
    ) {
        if count > 0 {
            self.record(partition, &[(sequence, count)]).await;
        }
        let _ = acker.retry_after(delay).await;
    }

    /// Hands deliveries back at once, their counts recorded together first.
    pub(super) async fn hand_back(&self, partition: u16, deliveries: Vec<HandBack>) {
        if deliveries.is_empty() {
            return;
        }
        let mut counts = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let before = match delivery.before {
                HandedBackBefore::Known(before) => before,
                HandedBackBefore::Unread { delivered } => {
                    self.handed_back(partition, delivery.stream_sequence, delivered)
                        .await
                }
            };
            counts.push((delivery.stream_sequence, before + delivery.not_calls));
        }
        self.record(partition, &counts).await;
        for delivery in deliveries {
            let _ = delivery.acker.retry_after(Duration::ZERO).await;
        }
    }

    async fn record(&self, partition: u16, counts: &[(u64, u64)]) {
        if let Err(error) = self.handbacks.record(partition, counts).await {
            tracing::warn!(partition, changes = counts.len(), error = %error,
                "could not record deliveries handed back without a call; they count as attempts");
        }
    }

    /// Keeps the change as a dead letter, then terminates it so its key moves on. If it cannot
    /// be kept, it is retried after the backoff instead (and given up again then).
    pub(super) async fn give_up(
        &self,
        message: &KvMessage,
        attempts: u64,
        acker: &Acker,
        reason: &str,
    ) -> Settled {
        let subscriber = &*self.dispatcher.context.name;
        let (key, revision) = (message.key(), message.revision());
        let kept = dead_letters::publish(
            &self.jetstream,
            &self.layout,
            message,
            attempts,
            reason,
            &self.member_id,
        )
        .await;
        match kept {
            Ok(sequence) => {
                tracing::error!(subscriber, key, revision, attempts, error = %reason,
                    dead_letter = sequence, stream = %self.layout.dead_stream,
                    "{key} | {revision} - given up after {attempts} attempt(s): {reason}; kept as dead letter {sequence} in `{}`",
                    self.layout.dead_stream);
                self.metrics.given_up();
                let _ = acker.terminate().await;
                Settled::Done
            }
            Err(error) => {
                let delay = self.settings.backoff_after(attempts);
                tracing::error!(subscriber, key, revision, error = %error, retry_in = ?delay,
                    "{key} | {revision} - could not keep the change as a dead letter; trying again in {delay:?}");
                let _ = acker.retry_after(delay).await;
                Settled::Retrying
            }
        }
    }
}
