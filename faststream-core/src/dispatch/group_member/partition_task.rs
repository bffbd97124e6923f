//! The task of one partition a member holds: pulls its changes, calls the handler, settles each
//! with the server, counts attempts, and hands the partition over when told to stop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{CallOutcome, Dispatcher, FailureLog};
use crate::extract::Message;
use crate::kv::group::dead_letters;
use crate::kv::group::handbacks::Handbacks;
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::membership::Heartbeat;
use crate::kv::group::partition::{Acker, GroupDelivery, PartitionPuller, Pulled};
use crate::kv::group::GroupSettings;
use crate::kv::message::{KvMessage, Operation};
use crate::observe::metrics::GroupMetrics;

/// What one partition's task shares with the member.
#[derive(Clone)]
pub(super) struct PartitionContext {
    pub(super) dispatcher: Dispatcher,
    pub(super) jetstream: jetstream::Context,
    pub(super) layout: Arc<GroupLayout>,
    pub(super) settings: Arc<GroupSettings>,
    pub(super) stream: jetstream::stream::Stream,
    pub(super) handbacks: Handbacks,
    pub(super) member_id: Arc<str>,
    pub(super) workers: Arc<Semaphore>,
    pub(super) report: Arc<Mutex<Heartbeat>>,
    pub(super) without_values: bool,
    pub(super) ignore_deletes: bool,
    pub(super) metrics: Arc<GroupMetrics>,
}

impl PartitionContext {
    /// Records in the member's heartbeat and metrics whether it holds `partition`'s pin.
    pub(super) fn report_pin(&self, partition: u16, pin: Option<String>) {
        self.metrics.set_owned(partition, pin.is_some());
        if let Ok(mut report) = self.report.lock() {
            report.pinned.retain(|(held, _)| *held != partition);
            if let Some(pin) = pin {
                report.pinned.push((partition, pin));
                report.pinned.sort();
            }
        }
    }
}

/// How an attempt ended: the call's outcome, or why it was never made.
enum AttemptEnd {
    /// The pin was lost (or the connection) before the call could start.
    NotStarted,
    Called(CallOutcome),
}

/// The change in hand and its call.
struct InFlight {
    message: KvMessage,
    /// The real attempt this call is: the delivery count less the hand-backs.
    attempt: u64,
    stream_sequence: u64,
    /// The deliveries of this change handed back without a call so far, as recorded.
    handed_back: u64,
    /// Deliveries of this change to this member that are not calls of their own (the server
    /// delivered it again while it was in hand): added to `handed_back` when it is let go.
    uncounted: u64,
    acker: Acker,
    /// Set by the call once it starts the handler (it may first wait for a worker).
    started: Arc<AtomicBool>,
    call: BoxFuture<'static, AttemptEnd>,
}

/// A delivery received while another change was in hand, to be handed back.
struct Unstarted {
    acker: Acker,
    stream_sequence: u64,
    delivered: u64,
}

impl From<&GroupDelivery> for Unstarted {
    fn from(delivery: &GroupDelivery) -> Self {
        Self {
            acker: delivery.acker(),
            stream_sequence: delivery.stream_sequence,
            delivered: delivery.delivered,
        }
    }
}

pub(super) struct PartitionTask {
    pub(super) context: PartitionContext,
    pub(super) partition: u16,
    pub(super) stop: CancellationToken,
    /// How long to wait before pulling: a task started again after a panic waits.
    pub(super) start_after: Duration,
}

impl PartitionTask {
    pub(super) async fn run(self) {
        let context = &self.context;
        if !self.start_after.is_zero() {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.start_after) => {}
            }
        }
        let puller = loop {
            match PartitionPuller::start(
                context.jetstream.clone(),
                &context.layout,
                self.partition,
                context.settings.session_timeout,
                context.without_values,
            )
            .await
            {
                Ok(puller) => break puller,
                Err(error) => {
                    tracing::warn!(partition = self.partition, error = %error,
                        "could not subscribe for the partition; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(context.settings.heartbeat_interval()) => {}
                    }
                }
            }
        };
        tracing::debug!(partition = self.partition, member = %context.member_id, "pulling partition");
        let (puller, mut hand_back) = self.pull(puller).await;
        // Handed back once the pin is given back: before, the server could deliver them to
        // this member again.
        let arrived = puller.release().await;
        hand_back.extend(arrived.iter().map(Unstarted::from));
        for unstarted in hand_back {
            self.hand_back_unstarted(unstarted).await;
        }
        context.report_pin(self.partition, None);
        tracing::debug!(partition = self.partition, member = %context.member_id, "partition handed over");
    }

    /// Handles the partition until stopped with nothing in flight; returns the puller to be
    /// released and the changes to hand back once it is.
    async fn pull(&self, mut puller: PartitionPuller) -> (PartitionPuller, VecDeque<Unstarted>) {
        let pinned = puller.pinned_flag();
        let mut in_flight: Option<InFlight> = None;
        // Changes received that this member will not start (stopping, or pin lost meanwhile):
        // handed back so the next holder gets them at once.
        let mut hand_back: VecDeque<Unstarted> = VecDeque::new();
        let mut progress = tokio::time::interval(self.context.settings.session_timeout / 3);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                attempt = async { (&mut in_flight.as_mut()?.call).await.into() }, if in_flight.is_some() => {
                    if let (Some(attempt), Some(done)) = (attempt, in_flight.take()) {
                        self.settle(done, attempt).await;
                    }
                }
                // Giving the partition up: the pin goes back first, so that the server sends
                // this member nothing more; then what it had sent before is handled here (it is
                // this member's: nobody else gets the partition until it is settled).
                () = self.stop.cancelled(), if in_flight.is_none() => {
                    puller.give_back_pin(&self.context.stream).await;
                    for delivery in puller.fence().await {
                        match in_flight {
                            None => in_flight = self.start(delivery, &pinned).await,
                            Some(_) => Self::received(&delivery, &mut in_flight, &mut hand_back),
                        }
                    }
                    if in_flight.is_none() {
                        break;
                    }
                }
                // With a change in hand, before it is settled: else settling it makes the
                // server send the partition's next change here, after this member stopped
                // reading, and that change waits for the ack wait before going to the next one.
                // A call already running finishes here; a change still waiting for a worker is
                // handed back (recorded, so not counted as an attempt) for the next member to
                // start at once, rather than wait for this member's worker, or be abandoned
                // unstarted at the shutdown timeout and come back after the ack wait counted
                // as an attempt.
                () = self.stop.cancelled(), if !puller.is_released() => {
                    puller.give_back_pin(&self.context.stream).await;
                    let unstarted = in_flight
                        .as_ref()
                        .is_some_and(|current| !current.started.load(Ordering::SeqCst));
                    if let Some(current) = in_flight.take_if(|_| unstarted) {
                        self.settle(current, AttemptEnd::NotStarted).await;
                    }
                }
                _ = progress.tick(), if in_flight.is_some() => {
                    if let Some(current) = &in_flight {
                        let _ = current.acker.progress().await;
                    }
                }
                pulled = puller.next(), if !puller.is_released() => match pulled {
                    Pulled::Change(delivery) => {
                        let delivery = *delivery;
                        if in_flight.is_none() {
                            in_flight = self.start(delivery, &pinned).await;
                            // Progress only for calls that outlast a third of the ack wait.
                            progress.reset();
                        } else {
                            Self::received(&delivery, &mut in_flight, &mut hand_back);
                        }
                    }
                    Pulled::PinLost => {
                        tracing::info!(partition = self.partition, member = %self.context.member_id,
                            "lost the partition's pin; no new call starts here");
                    }
                    Pulled::Closed => {
                        tracing::warn!(partition = self.partition, "connection closed; partition loop ends");
                        break;
                    }
                },
            }
            if puller.pin() != reported.as_deref() {
                reported = puller.pin().map(str::to_owned);
                self.context.report_pin(self.partition, reported.clone());
            }
            // Once the pin is lost, the server delivers them to the next member.
            if !hand_back.is_empty() && !pinned.load(Ordering::SeqCst) {
                while let Some(unstarted) = hand_back.pop_front() {
                    self.hand_back_unstarted(unstarted).await;
                }
            }
        }
        if let Some(current) = in_flight.take() {
            // The connection closed for good with a call unfinished or unstarted (which, once
            // dropped, cannot be told): it counts as an attempt, as after a member dies.
            let count = if current.uncounted > 0 {
                current.handed_back + current.uncounted
            } else {
                0
            };
            self.let_go(
                &current.acker,
                current.stream_sequence,
                count,
                Duration::ZERO,
            )
            .await;
        }
        (puller, hand_back)
    }

    /// A change received while one is in hand: the change in hand delivered again (settle the
    /// newest delivery; the delivery is not a call of its own), or another one, to hand back.
    fn received(
        delivery: &GroupDelivery,
        in_flight: &mut Option<InFlight>,
        hand_back: &mut VecDeque<Unstarted>,
    ) {
        match in_flight {
            Some(current) if current.stream_sequence == delivery.stream_sequence => {
                current.acker = delivery.acker();
                current.uncounted += 1;
            }
            _ => hand_back.push_back(Unstarted::from(delivery)),
        }
    }

    /// How many deliveries of the change at `sequence` were handed back without a call, if it
    /// was delivered before (`delivered` > 1). A count that cannot be read is taken as 0: the
    /// hand-backs then count as attempts.
    async fn handed_back(&self, sequence: u64, delivered: u64) -> u64 {
        if delivered <= 1 {
            return 0;
        }
        match self.context.handbacks.of(self.partition, sequence).await {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(partition = self.partition, sequence, error = %error,
                    "could not read how often the change was handed back; those deliveries count as attempts");
                0
            }
        }
    }

    /// Records that the change at `sequence` was handed back `count` times in all without a
    /// call, then asks for it again after `delay`. If the count cannot be recorded, the
    /// delivery counts as an attempt.
    async fn let_go(&self, acker: &Acker, sequence: u64, count: u64, delay: Duration) {
        if count > 0 {
            if let Err(error) = self
                .context
                .handbacks
                .record(self.partition, sequence, count)
                .await
            {
                tracing::warn!(partition = self.partition, sequence, error = %error,
                    "could not record a delivery handed back without a call; it counts as an attempt");
            }
        }
        let _ = acker.retry_after(delay).await;
    }

    /// Hands back a change that was received but never started.
    async fn hand_back_unstarted(&self, unstarted: Unstarted) {
        let before = self
            .handed_back(unstarted.stream_sequence, unstarted.delivered)
            .await;
        self.let_go(
            &unstarted.acker,
            unstarted.stream_sequence,
            before + 1,
            Duration::ZERO,
        )
        .await;
    }

    /// Starts the call for a change, or settles it at once (ignored deletion, attempts used up).
    async fn start(&self, delivery: GroupDelivery, pinned: &Arc<AtomicBool>) -> Option<InFlight> {
        let settings = &self.context.settings;
        let acker = delivery.acker();
        let GroupDelivery {
            message,
            delivered,
            stream_sequence,
            ..
        } = delivery;
        let metrics = &self.context.metrics;
        metrics.set_pending(self.partition, message.delta());
        if delivered > 1 {
            metrics.redelivered();
        }
        if self.context.ignore_deletes && message.operation() != Operation::Put {
            let _ = acker.ack().await;
            return None;
        }
        let handed_back = self.handed_back(stream_sequence, delivered).await;
        let attempt = delivered.saturating_sub(handed_back).max(1);
        if attempt > u64::from(settings.max_attempts) {
            // Its last attempt's member stopped before settling it.
            let reason = format!(
                "delivered for attempt {attempt}, more than the {} attempts allowed (a member \
                 stopped during the last one)",
                settings.max_attempts
            );
            self.give_up(&message, attempt - 1, &acker, &reason).await;
            return None;
        }
        let dispatcher = self.context.dispatcher.clone();
        let workers = Arc::clone(&self.context.workers);
        let pinned = Arc::clone(pinned);
        let timeout = settings.call_timeout;
        let call_message = message.clone();
        let client = self.context.jetstream.client();
        let started = Arc::new(AtomicBool::new(false));
        let call_started = Arc::clone(&started);
        let call = async move {
            let Ok(_permit) = workers.acquire_owned().await else {
                return AttemptEnd::NotStarted;
            };
            // The pin is a lease, not a fence: checked as late as possible. Without a
            // connection the lease may lapse unseen, so no call starts then either.
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            if !pinned.load(Ordering::SeqCst) || !connected {
                return AttemptEnd::NotStarted;
            }
            call_started.store(true, Ordering::SeqCst);
            AttemptEnd::Called(
                dispatcher
                    .call_guarded(
                        Message::from_kv(call_message),
                        Some(timeout),
                        FailureLog::Caller,
                    )
                    .await,
            )
        }
        .boxed();
        Some(InFlight {
            message,
            attempt,
            stream_sequence,
            handed_back,
            uncounted: 0,
            acker,
            started,
            call,
        })
    }

    async fn settle(&self, done: InFlight, attempt: AttemptEnd) {
        let InFlight {
            message,
            attempt: number,
            stream_sequence,
            handed_back,
            uncounted,
            acker,
            ..
        } = done;
        let settings = &self.context.settings;
        let subscriber = &*self.context.dispatcher.context.name;
        let (key, revision) = (message.key(), message.revision());
        match attempt {
            AttemptEnd::NotStarted => {
                let count = handed_back + uncounted + 1;
                self.let_go(&acker, stream_sequence, count, Duration::ZERO)
                    .await;
            }
            AttemptEnd::Called(CallOutcome::Done) => {
                if let Err(error) = acker.ack().await {
                    tracing::warn!(subscriber, key, revision, error = %error,
                        "{key} | {revision} - handled, but the acknowledgement was not sent; it will be handled again");
                }
            }
            AttemptEnd::Called(CallOutcome::Rejected(reason)) => {
                let reason = format!("could not decode the entry: {reason}");
                self.give_up(&message, number, &acker, &reason).await;
            }
            AttemptEnd::Called(CallOutcome::Failed(reason)) => {
                if number >= u64::from(settings.max_attempts) {
                    self.give_up(&message, number, &acker, &reason).await;
                } else {
                    let delay = settings.backoff_after(number);
                    tracing::warn!(subscriber, key, revision, attempt = number,
                        max_attempts = settings.max_attempts, retry_in = ?delay, error = %reason,
                        "{key} | {revision} - attempt {number} of {} failed: {reason}; retrying in {delay:?}",
                        settings.max_attempts);
                    // Deliveries that were not calls of their own are recorded, so that the
                    // next delivery's count tells the next attempt.
                    let count = if uncounted > 0 {
                        handed_back + uncounted
                    } else {
                        0
                    };
                    self.let_go(&acker, stream_sequence, count, delay).await;
                }
            }
        }
    }

    /// Keeps the change as a dead letter, then terminates it so its key moves on. If it cannot
    /// be kept, it is retried after the backoff instead (and given up again then).
    async fn give_up(&self, message: &KvMessage, attempts: u64, acker: &Acker, reason: &str) {
        let subscriber = &*self.context.dispatcher.context.name;
        let (key, revision) = (message.key(), message.revision());
        let kept = dead_letters::publish(
            &self.context.jetstream,
            &self.context.layout,
            message,
            attempts,
            reason,
            &self.context.member_id,
        )
        .await;
        match kept {
            Ok(sequence) => {
                tracing::error!(subscriber, key, revision, attempts, error = %reason,
                    dead_letter = sequence, stream = %self.context.layout.dead_stream,
                    "{key} | {revision} - given up after {attempts} attempt(s): {reason}; kept as dead letter {sequence} in `{}`",
                    self.context.layout.dead_stream);
                self.context.metrics.given_up();
                let _ = acker.terminate().await;
            }
            Err(error) => {
                let delay = self.context.settings.backoff_after(attempts);
                tracing::error!(subscriber, key, revision, error = %error, retry_in = ?delay,
                    "{key} | {revision} - could not keep the change as a dead letter; trying again in {delay:?}");
                let _ = acker.retry_after(delay).await;
            }
        }
    }
}
