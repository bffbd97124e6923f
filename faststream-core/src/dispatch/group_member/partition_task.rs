//! The task of one partition a member holds: pulls its changes, runs up to the group's
//! `in_flight` of them at once (each key's in order, `key_order`), settles each with the server,
//! and hands the partition over when told to stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::key_order::{KeyOrder, Known};
use super::settle::{Attempt, AttemptEnd, HandBack, HandedBackBefore, Settled};
use crate::dispatch::{Dispatcher, FailureLog};
use crate::extract::Message;
use crate::kv::group::handbacks::Handbacks;
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::membership::Heartbeat;
use crate::kv::group::partition::{Acker, GroupDelivery, PartitionPuller, Pulled};
use crate::kv::group::takeover;
use crate::kv::group::GroupSettings;
use crate::kv::message::Operation;
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
    /// The member's connection, shared by the calls to check it is up before starting.
    pub(super) client: Arc<async_nats::Client>,
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

/// How often the consumer's ack floor is read while the old range holds changes back.
const FLOOR_POLL: Duration = Duration::from_millis(50);

/// A change delivered here and not started yet.
struct Pending {
    delivery: GroupDelivery,
    /// Deliveries of this change here that were not calls (it came again while held).
    uncounted: u64,
}

impl Pending {
    fn hand_back(self) -> HandBack {
        HandBack {
            stream_sequence: self.delivery.stream_sequence,
            before: HandedBackBefore::Unread {
                delivered: self.delivery.delivered,
            },
            acker: self.delivery.into_parts().3,
            not_calls: self.uncounted + 1,
        }
    }
}

/// What the partition's loop keeps between events.
#[derive(Default)]
struct Flight {
    order: KeyOrder<Pending>,
    /// The calls started, by stream sequence (their futures are in `calls`).
    running: HashMap<u64, Attempt>,
    /// Deliveries to hand back at the end of the loop's turn, their counts recorded together.
    hand_back: Vec<HandBack>,
    /// The pin the old range was read for.
    fenced_for: Option<Option<String>>,
    /// Deliveries again of changes done with here, to acknowledge again at the end of the turn.
    settle_again: Vec<Acker>,
}

/// A call's future: its stream sequence, how it ended, and its change back.
type Call = BoxFuture<'static, (u64, AttemptEnd, Message)>;

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
        hand_back.extend(arrived.into_iter().map(|delivery| {
            Pending {
                delivery,
                uncounted: 0,
            }
            .hand_back()
        }));
        context.hand_back(self.partition, hand_back).await;
        context.report_pin(self.partition, None);
        tracing::debug!(partition = self.partition, member = %context.member_id, "partition handed over");
    }

    /// Handles the partition until stopped with no call running; returns the puller to be
    /// released and the changes to hand back once it is.
    async fn pull(&self, mut puller: PartitionPuller) -> (PartitionPuller, Vec<HandBack>) {
        let pinned = puller.pinned_flag();
        let mut flight = Flight::default();
        let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
        // Cancelled when giving the partition up: calls still waiting for a worker end unstarted.
        let unstart = CancellationToken::new();
        let mut progress = tokio::time::interval(self.context.settings.session_timeout / 3);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut floor = tokio::time::interval(FLOOR_POLL);
        floor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                Some((sequence, end, message)) = calls.next(), if !calls.is_empty() => {
                    self.finished(&mut flight, sequence, end, &message).await;
                    // Those that ended meanwhile too: their hand-backs are recorded together.
                    while let Some(Some((sequence, end, message))) = calls.next().now_or_never() {
                        self.finished(&mut flight, sequence, end, &message).await;
                    }
                }
                // Giving the partition up: the pin goes back first, so that the server sends this
                // member nothing more, and settling a call cannot make it send the next change
                // here. Calls running finish here; everything else is handed back, for the next
                // holder to start at once (it waits for what runs here: its old range).
                () = self.stop.cancelled(), if !puller.is_released() => {
                    unstart.cancel();
                    puller.give_back_pin(&self.context.stream).await;
                    let mut arrived = puller.fence().await;
                    // A member that had no pin id yet learns it from a change the fence reads:
                    // the pin is then given back properly, and the fence run again.
                    while puller.pin().is_some() {
                        puller.give_back_pin(&self.context.stream).await;
                        arrived.extend(puller.fence().await);
                    }
                    for delivery in arrived {
                        self.received(&mut flight, delivery);
                    }
                    let held = flight.order.take_held();
                    flight.hand_back.extend(held.into_iter().map(|(_, pending)| pending.hand_back()));
                }
                _ = progress.tick(), if !flight.running.is_empty() || flight.order.in_hand() > 0 => {
                    for attempt in flight.running.values() {
                        let _ = attempt.acker.progress().await;
                    }
                    for pending in flight.order.held() {
                        let _ = pending.delivery.acker().progress().await;
                    }
                }
                _ = floor.tick(), if !puller.is_released() && self.floor_due(&flight, &puller) => {
                    self.read_floor(&mut flight, &puller).await;
                }
                pulled = puller.next(), if !puller.is_released() => match pulled {
                    Pulled::Change(delivery) => {
                        if flight.fenced_for.as_ref().map(Option::as_deref) != Some(puller.pin()) {
                            self.take_over(&mut flight, &puller).await;
                        }
                        self.received(&mut flight, *delivery);
                    }
                    Pulled::PinLost => {
                        tracing::info!(partition = self.partition, member = %self.context.member_id,
                            "lost the partition's pin; no new call starts here");
                        let held = flight.order.take_held();
                        flight.hand_back.extend(held.into_iter().map(|(_, pending)| pending.hand_back()));
                        flight.order.unfence();
                        flight.fenced_for = None;
                    }
                    Pulled::Closed => {
                        tracing::warn!(partition = self.partition, "connection closed; partition loop ends");
                        break;
                    }
                },
                else => break,
            }
            if !unstart.is_cancelled() {
                self.start_ready(&mut flight, &mut calls, &pinned, &unstart)
                    .await;
            }
            if puller.pin() != reported.as_deref() {
                reported = puller.pin().map(str::to_owned);
                self.context.report_pin(self.partition, reported.clone());
            }
            // Only ever queued once the pin is lost or given back (the server then delivers
            // them to the next member), or for calls that could not start without a connection.
            for acker in std::mem::take(&mut flight.settle_again) {
                let _ = acker.ack().await;
            }
            if !flight.hand_back.is_empty() {
                let hand_back = std::mem::take(&mut flight.hand_back);
                self.context.hand_back(self.partition, hand_back).await;
            }
            if puller.is_released() && calls.is_empty() {
                break;
            }
        }
        // The connection closed for good with calls unfinished or unstarted (which, once
        // dropped, cannot be told): each counts as an attempt, as after a member dies.
        for (sequence, attempt) in flight.running.drain() {
            let count = if attempt.uncounted > 0 {
                attempt.handed_back + attempt.uncounted
            } else {
                0
            };
            self.context
                .let_go(
                    self.partition,
                    &attempt.acker,
                    sequence,
                    count,
                    Duration::ZERO,
                )
                .await;
        }
        let mut hand_back = std::mem::take(&mut flight.hand_back);
        hand_back.extend(
            flight
                .order
                .take_held()
                .into_iter()
                .map(|(_, pending)| pending.hand_back()),
        );
        (puller, hand_back)
    }

    /// Whether the consumer's ack floor is worth reading: the old range holds something back,
    /// or it could not be read when the pin was taken.
    fn floor_due(&self, flight: &Flight, puller: &PartitionPuller) -> bool {
        let unread = flight.fenced_for.is_none() && puller.pin().is_some();
        unread || flight.order.awaits_old()
    }

    async fn read_floor(&self, flight: &mut Flight, puller: &PartitionPuller) {
        if flight.fenced_for.is_none() {
            self.take_over(flight, puller).await;
            return;
        }
        match takeover::consumer_position(&self.context.stream, self.partition).await {
            Ok((ack_floor, _)) => flight.order.passed(ack_floor),
            Err(error) => tracing::debug!(partition = self.partition, error = %error,
                "could not read the partition's ack floor"),
        }
    }

    /// This member got the partition's pin: reads what the member before left unsettled, to
    /// keep each key's changes in order across the takeover. Until it is read, nothing starts.
    async fn take_over(&self, flight: &mut Flight, puller: &PartitionPuller) {
        if flight.fenced_for.is_some() {
            // The pin changed hands since the last read (and came back): read again.
            flight.order.unfence();
            flight.fenced_for = None;
        }
        match takeover::old_range(&self.context.stream, self.partition).await {
            Ok(range) => {
                tracing::debug!(partition = self.partition, member = %self.context.member_id,
                    ack_floor = range.ack_floor, old = range.keys.len(), unknown = ?range.unknown,
                    "took the partition over");
                flight
                    .order
                    .fence(range.ack_floor, range.keys, range.unknown);
                flight.fenced_for = Some(puller.pin().map(str::to_owned));
            }
            Err(error) => tracing::warn!(partition = self.partition, error = %error,
                "could not read what the partition's last holder left unsettled; nothing \
                 starts here until it is read"),
        }
    }

    /// Takes a delivery in: a change delivered again while in hand replaces its older
    /// delivery (and is not a call of its own); any other is held until it may start.
    fn received(&self, flight: &mut Flight, delivery: GroupDelivery) {
        let metrics = &self.context.metrics;
        metrics.set_pending(self.partition, delivery.message.delta());
        if delivery.delivered > 1 {
            metrics.redelivered();
        }
        let sequence = delivery.stream_sequence;
        match flight.order.known(sequence) {
            Known::Running => {
                if let Some(attempt) = flight.running.get_mut(&sequence) {
                    attempt.acker = delivery.into_parts().3;
                    attempt.uncounted += 1;
                }
            }
            Known::Held => {
                if let Some(pending) = flight.order.held_mut(sequence) {
                    pending.delivery = delivery;
                    pending.uncounted += 1;
                }
            }
            // Done with here, and delivered again: the server lost the acknowledgement (a
            // consumer leader died before passing it on). Called again, it could run after a
            // later change of its key: acknowledged again instead.
            Known::Nothing | Known::Waiting
                if delivery.delivered > 1
                    && flight.order.done_here(delivery.message.key(), sequence) =>
            {
                tracing::debug!(partition = self.partition, sequence,
                    "a change done with here was delivered again; acknowledged again without a call");
                flight.order.settled(sequence);
                flight.settle_again.push(delivery.into_parts().3);
            }
            Known::Nothing | Known::Waiting => {
                let key: Arc<str> = Arc::from(delivery.message.key());
                flight.order.hold(
                    sequence,
                    key,
                    Pending {
                        delivery,
                        uncounted: 0,
                    },
                );
            }
        }
    }

    /// Starts every held change that may start now.
    async fn start_ready(
        &self,
        flight: &mut Flight,
        calls: &mut FuturesUnordered<Call>,
        pinned: &Arc<AtomicBool>,
        unstart: &CancellationToken,
    ) {
        loop {
            let ready = flight.order.start_ready();
            if ready.is_empty() {
                return;
            }
            for (sequence, pending) in ready {
                match self.start(pending, pinned, unstart).await {
                    Started::Call(attempt, call) => {
                        flight.running.insert(sequence, *attempt);
                        calls.push(call);
                    }
                    // Settled without a call: the key's next change may start.
                    Started::Settled => flight.order.done(sequence),
                    Started::Retrying => flight.order.retrying(sequence),
                }
            }
        }
    }

    /// Starts the call for a change, or settles it at once (ignored deletion, attempts used up).
    async fn start(
        &self,
        pending: Pending,
        pinned: &Arc<AtomicBool>,
        unstart: &CancellationToken,
    ) -> Started {
        let settings = &self.context.settings;
        let Pending {
            delivery,
            uncounted,
        } = pending;
        let (message, delivered, stream_sequence, acker) = delivery.into_parts();
        if self.context.ignore_deletes && message.operation() != Operation::Put {
            let _ = acker.ack().await;
            return Started::Settled;
        }
        let handed_back = self
            .context
            .handed_back(self.partition, stream_sequence, delivered)
            .await;
        let number = delivered.saturating_sub(handed_back).max(1);
        if number > u64::from(settings.max_attempts) {
            // Its last attempt's member stopped before settling it.
            let reason = format!(
                "delivered for attempt {number}, more than the {} attempts allowed (a member \
                 stopped during the last one)",
                settings.max_attempts
            );
            return match self
                .context
                .give_up(&message, number - 1, &acker, &reason)
                .await
            {
                Settled::Retrying => Started::Retrying,
                Settled::Done | Settled::HandBack => Started::Settled,
            };
        }
        let dispatcher = self.context.dispatcher.clone();
        let workers = Arc::clone(&self.context.workers);
        let pinned = Arc::clone(pinned);
        let unstart = unstart.clone();
        let timeout = settings.call_timeout;
        let client = Arc::clone(&self.context.client);
        let call = async move {
            let message = Message::from_kv(message);
            let permit = tokio::select! {
                biased;
                permit = workers.acquire_owned() => permit,
                () = unstart.cancelled() => return (stream_sequence, AttemptEnd::NotStarted, message),
            };
            let Ok(_permit) = permit else {
                return (stream_sequence, AttemptEnd::NotStarted, message);
            };
            // The pin is a lease, not a fence: checked as late as possible. Without a
            // connection the lease may lapse unseen, so no call starts then either.
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            if !pinned.load(Ordering::SeqCst) || !connected || unstart.is_cancelled() {
                return (stream_sequence, AttemptEnd::NotStarted, message);
            }
            let outcome = dispatcher
                .call_guarded(&message, Some(timeout), FailureLog::Caller)
                .await;
            (stream_sequence, AttemptEnd::Called(outcome), message)
        }
        .boxed();
        let attempt = Attempt {
            number,
            stream_sequence,
            handed_back,
            uncounted,
            acker,
        };
        Started::Call(Box::new(attempt), call)
    }

    /// A call ended: settles it, and lets its key's next change start.
    async fn finished(
        &self,
        flight: &mut Flight,
        sequence: u64,
        end: AttemptEnd,
        message: &Message,
    ) {
        let (Some(attempt), Some(message)) = (flight.running.remove(&sequence), message.kv())
        else {
            return;
        };
        match self
            .context
            .settle(self.partition, &attempt, message, end)
            .await
        {
            Settled::Done => flight.order.done(sequence),
            Settled::Retrying => flight.order.retrying(sequence),
            // Handed back at the end of this turn: it comes back to this member if it still
            // holds the pin (the connection was down), else to the next holder. Its key waits
            // for it.
            Settled::HandBack => {
                flight.order.retrying(sequence);
                flight.hand_back.push(HandBack {
                    acker: attempt.acker,
                    stream_sequence: sequence,
                    before: HandedBackBefore::Known(attempt.handed_back),
                    not_calls: attempt.uncounted + 1,
                });
            }
        }
    }
}

/// What starting a change came to.
enum Started {
    Call(Box<Attempt>, Call),
    Settled,
    Retrying,
}
