//! A member of a consumer group: joins, pulls the partitions the group assigns it, calls the
//! handler for each change and settles it with the server.
//!
//! - **One change per partition at a time.** The partition's consumer lets one change be
//!   unacknowledged, so a partition's next change comes only once the last is settled:
//!   acknowledged after `Ok`, or given up. A failed call is not settled: it is asked for again
//!   after the backoff, and the partition waits for it, so a key's later changes never overtake
//!   it. `max_workers` bounds the calls of this instance across its partitions.
//! - **Attempts are counted by the server** (its delivery count), so a change whose member died
//!   mid-call counts that attempt, and the limit holds across members. Past the limit, or at
//!   once for a value the handler's arguments cannot be built from, the change is given up:
//!   kept as a dead letter, logged, and terminated so the key moves on.
//! - **A call starts only while this member holds the partition's pin and is connected.** Both
//!   are checked when the call would start (after waiting for a worker); a change whose pin
//!   was lost meanwhile is handed back at once. While a call runs, the member tells the server it is
//!   still working on it, so it is not delivered to anyone else.
//! - **Giving a partition up** (reassigned, or shutting down): no new pull, the pin is given
//!   back at once (the server then sends this member nothing more of the partition, and pins
//!   the next member), the change in hand (or one the server had sent just before) is handled
//!   and settled here, then the next member starts at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::watch_loop::HandledSignal;
use super::{CallOutcome, Dispatcher, FailureLog};
use crate::kv::group::dead_letters;
use crate::kv::group::declare::DeclaredGroup;
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::membership::{hostname, member_id, Assignment, Heartbeat, Membership};
use crate::kv::group::partition::{Acker, GroupDelivery, PartitionPuller, Pulled};
use crate::kv::group::GroupSettings;
use crate::kv::message::{KvMessage, Operation};
use crate::observe::metrics::GroupMetrics;

/// Everything one member needs; [`run`](Self::run) until cancelled.
pub(crate) struct GroupMember {
    pub(crate) dispatcher: Dispatcher,
    /// Redeliveries, given-up changes, and the partitions held with their pending counts.
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) layout: GroupLayout,
    pub(crate) settings: GroupSettings,
    pub(crate) declared: DeclaredGroup,
    pub(crate) max_workers: usize,
    pub(crate) without_values: bool,
    pub(crate) ignore_deletes: bool,
    /// Set once the member has joined (has an assignment).
    pub(crate) joined: Arc<HandledSignal>,
}

/// What one partition's task shares with the member.
#[derive(Clone)]
struct PartitionContext {
    dispatcher: Dispatcher,
    jetstream: jetstream::Context,
    layout: Arc<GroupLayout>,
    settings: Arc<GroupSettings>,
    stream: jetstream::stream::Stream,
    member_id: Arc<str>,
    workers: Arc<Semaphore>,
    report: Arc<Mutex<Heartbeat>>,
    without_values: bool,
    ignore_deletes: bool,
    metrics: Arc<GroupMetrics>,
}

impl GroupMember {
    /// Joins, handles the assigned partitions until `cancel` fires, then hands them over:
    /// calls in flight finish and are settled, pins are given back, and the member leaves.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let member = member_id(&self.jetstream.client());
        let report = Arc::new(Mutex::new(Heartbeat {
            host: hostname(),
            pid: std::process::id(),
            ..Heartbeat::default()
        }));
        let (assignment, mut assigned) = watch::channel(Assignment::default());
        let membership = Membership {
            id: Arc::clone(&member),
            store: self.declared.members.clone(),
            partitions: self.settings.partitions,
            session_timeout: self.settings.session_timeout,
            heartbeat_interval: self.settings.heartbeat_interval(),
            report: Arc::clone(&report),
            assignment,
        };
        let leave = CancellationToken::new();
        let membership = tokio::spawn(membership.run(leave.clone()));
        let subscriber = Arc::clone(&self.dispatcher.context.name);
        tracing::info!(subscriber = %subscriber, member = %member, group = %self.layout.group,
            bucket = %self.layout.bucket, "joining consumer group `{}`", self.layout.group);
        let context = PartitionContext {
            dispatcher: self.dispatcher,
            jetstream: self.jetstream,
            layout: Arc::new(self.layout),
            settings: Arc::new(self.settings),
            stream: self.declared.stream,
            member_id: member,
            workers: Arc::new(Semaphore::new(self.max_workers)),
            report,
            without_values: self.without_values,
            ignore_deletes: self.ignore_deletes,
            metrics: self.metrics,
        };
        let mut tasks: JoinSet<u16> = JoinSet::new();
        let mut running: HashMap<u16, CancellationToken> = HashMap::new();
        let mut mine: Vec<u16> = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                changed = assigned.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let assignment = assigned.borrow_and_update().clone();
                    if !assignment.members.is_empty() {
                        self.joined.send_replace(true);
                    }
                    mine = assignment.mine;
                    for (partition, stop) in &running {
                        if !mine.contains(partition) {
                            stop.cancel();
                        }
                    }
                    for partition in &mine {
                        if !running.contains_key(partition) {
                            running.insert(*partition, spawn_partition(&mut tasks, &context, *partition));
                        }
                    }
                }
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok(partition) = ended else {
                        tracing::error!(subscriber = %subscriber, "a partition task failed");
                        continue;
                    };
                    running.remove(&partition);
                    // Assigned again while it was handing over: start it afresh.
                    if mine.contains(&partition) {
                        running.insert(partition, spawn_partition(&mut tasks, &context, partition));
                    }
                }
            }
        }
        for stop in running.values() {
            stop.cancel();
        }
        while tasks.join_next().await.is_some() {}
        leave.cancel();
        let _ = membership.await;
        tracing::info!(subscriber = %subscriber, member = %context.member_id, "left consumer group `{}`",
            context.layout.group);
    }
}

fn spawn_partition(
    tasks: &mut JoinSet<u16>,
    context: &PartitionContext,
    partition: u16,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let task = PartitionTask {
        context: context.clone(),
        partition,
        stop: stop.clone(),
    };
    tasks.spawn(async move {
        task.run().await;
        partition
    });
    stop
}

/// How an attempt ended: the call's outcome, or why it was never made.
enum AttemptEnd {
    /// The pin was lost before the call could start.
    NotStarted,
    Called(CallOutcome),
}

/// The change in hand and its call.
struct InFlight {
    message: KvMessage,
    attempt: u64,
    stream_sequence: u64,
    acker: Acker,
    call: BoxFuture<'static, AttemptEnd>,
}

struct PartitionTask {
    context: PartitionContext,
    partition: u16,
    stop: CancellationToken,
}

impl PartitionTask {
    async fn run(self) {
        let context = &self.context;
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
        hand_back.extend(arrived.iter().map(GroupDelivery::acker));
        for acker in hand_back {
            let _ = acker.retry_after(Duration::ZERO).await;
        }
        self.report_pin(None);
        tracing::debug!(partition = self.partition, member = %context.member_id, "partition handed over");
    }

    /// Handles the partition until stopped with nothing in flight; returns the puller to be
    /// released and the changes to hand back once it is.
    async fn pull(&self, mut puller: PartitionPuller) -> (PartitionPuller, VecDeque<Acker>) {
        let pinned = puller.pinned_flag();
        let mut in_flight: Option<InFlight> = None;
        // Changes received that this member will not start (stopping, or pin lost meanwhile):
        // handed back so the next holder gets them at once.
        let mut hand_back: VecDeque<Acker> = VecDeque::new();
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
                            Some(_) => self.received(delivery, &mut in_flight, &mut hand_back),
                        }
                    }
                    if in_flight.is_none() {
                        break;
                    }
                }
                // With a call in flight, before the call is settled: else settling it makes the
                // server send the partition's next change here, after this member stopped
                // reading, and that change waits for the ack wait before going to the next one.
                () = self.stop.cancelled(), if !puller.is_released() => {
                    puller.give_back_pin(&self.context.stream).await;
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
                            self.received(delivery, &mut in_flight, &mut hand_back);
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
                self.report_pin(reported.clone());
            }
            // Once the pin is lost, the server delivers them to the next member.
            if !hand_back.is_empty() && !pinned.load(Ordering::SeqCst) {
                while let Some(acker) = hand_back.pop_front() {
                    let _ = acker.retry_after(Duration::ZERO).await;
                }
            }
        }
        if let Some(current) = in_flight.take() {
            hand_back.push_back(current.acker);
        }
        (puller, hand_back)
    }

    /// A change received while one is in hand: the change in hand delivered again (settle the
    /// newest delivery), or another one, to hand back.
    fn received(
        &self,
        delivery: GroupDelivery,
        in_flight: &mut Option<InFlight>,
        hand_back: &mut VecDeque<Acker>,
    ) {
        match in_flight {
            Some(current) if current.stream_sequence == delivery.stream_sequence => {
                current.acker = delivery.acker();
                current.attempt = delivery.attempt;
            }
            _ => hand_back.push_back(delivery.acker()),
        }
    }

    /// Starts the call for a change, or settles it at once (ignored deletion, attempts used up).
    async fn start(&self, delivery: GroupDelivery, pinned: &Arc<AtomicBool>) -> Option<InFlight> {
        let settings = &self.context.settings;
        let acker = delivery.acker();
        let GroupDelivery {
            message,
            attempt,
            stream_sequence,
            ..
        } = delivery;
        let metrics = &self.context.metrics;
        metrics.set_pending(self.partition, message.delta());
        if attempt > 1 {
            metrics.redelivered();
        }
        if self.context.ignore_deletes && message.operation() != Operation::Put {
            let _ = acker.ack().await;
            return None;
        }
        if attempt > u64::from(settings.max_attempts) {
            // Its last attempt's member stopped before settling it.
            let reason = format!(
                "delivered {attempt} times, more than the {} attempts allowed (a member stopped \
                 during the last one)",
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
            AttemptEnd::Called(
                dispatcher
                    .call_guarded(call_message, Some(timeout), FailureLog::Caller)
                    .await,
            )
        }
        .boxed();
        Some(InFlight {
            message,
            attempt,
            stream_sequence,
            acker,
            call,
        })
    }

    async fn settle(&self, done: InFlight, attempt: AttemptEnd) {
        let InFlight {
            message,
            attempt: number,
            acker,
            ..
        } = done;
        let settings = &self.context.settings;
        let subscriber = &*self.context.dispatcher.context.name;
        let (key, revision) = (message.key(), message.revision());
        match attempt {
            AttemptEnd::NotStarted => {
                let _ = acker.retry_after(Duration::ZERO).await;
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
                    let _ = acker.retry_after(delay).await;
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

    fn report_pin(&self, pin: Option<String>) {
        self.context
            .metrics
            .set_owned(self.partition, pin.is_some());
        if let Ok(mut report) = self.context.report.lock() {
            report
                .pinned
                .retain(|(partition, _)| *partition != self.partition);
            if let Some(pin) = pin {
                report.pinned.push((self.partition, pin));
                report.pinned.sort();
            }
        }
    }
}
