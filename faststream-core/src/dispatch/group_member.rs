//! A member of a consumer group: joins, pulls the partitions the group assigns it, calls the
//! handler for each change and settles it with the server.
//!
//! - **One change per partition at a time.** The partition's consumer lets one change be
//!   unacknowledged, so a partition's next change comes only once the last is settled:
//!   acknowledged after `Ok`, or given up. A failed call is not settled: it is asked for again
//!   after the backoff, and the partition waits for it, so a key's later changes never overtake
//!   it. `max_workers` bounds the calls of this instance across its partitions.
//! - **Attempts are counted by the server** (its delivery count), so a change whose member died
//!   mid-call counts that attempt, and the limit holds across members; deliveries handed back
//!   without a call are recorded and not counted (`kv::group::handbacks`). Past the limit, or
//!   at once for a value the handler's arguments cannot be built from, the change is given up:
//!   kept as a dead letter, logged, and terminated so the key moves on.
//! - **A call starts only while this member holds the partition's pin and is connected.** Both
//!   are checked when the call would start (after waiting for a worker); a change whose pin
//!   was lost meanwhile is handed back at once. While a call runs, the member tells the server it is
//!   still working on it, so it is not delivered to anyone else.
//! - **Giving a partition up** (reassigned, or shutting down): no new pull, the pin is given
//!   back at once (the server then sends this member nothing more of the partition, and pins
//!   the next member), a call in flight (or of a change the server had sent just before) is
//!   finished and settled here, a change still waiting for a worker is handed back, then the
//!   next member starts at once.
//! - **A partition task that panics** (not a handler: its panics are caught in the call; the
//!   task's own code, a tracing layer it logs through) is logged and started again after a
//!   pause that doubles at each panic in a row, so the partition is never left dead.
//! - **A bucket deleted and created again** is noticed within a session timeout, and the group
//!   starts over on it (`kv::group::replaced`); the partition tasks carry on, on its new
//!   consumers.

mod key_order;
mod partition_task;
mod settle;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::FutureExt as _;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::partition_task::{PartitionContext, PartitionTask};
use super::watch_loop::HandledSignal;
use super::Dispatcher;
use crate::handler::panic_message;
use crate::kv::group::declare::DeclaredGroup;
use crate::kv::group::handbacks::Handbacks;
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::membership::{hostname, member_id, Assignment, Heartbeat, Membership};
use crate::kv::group::mirror::MirrorCheck;
use crate::kv::group::replaced::ReplacementCheck;
use crate::kv::group::GroupSettings;
use crate::observe::metrics::GroupMetrics;

/// The longest pause before a partition task that panicked is started again.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A panic this long after the partition's last one starts the pauses over.
const PANICS_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

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

impl GroupMember {
    /// Joins, handles the assigned partitions until `cancel` fires, then hands them over:
    /// calls in flight finish and are settled, pins are given back, and the member leaves.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let member = member_id(&self.jetstream.client());
        let report = Arc::new(Mutex::new(Heartbeat {
            host: hostname(),
            pid: std::process::id(),
            sticky: true,
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
        // Cancelled when this future ends or is dropped: a member aborted at the shutdown
        // timeout leaves too (deletes its key) rather than heartbeat on without it.
        let leave = CancellationToken::new();
        let _leave_when_dropped = leave.clone().drop_guard();
        let membership = tokio::spawn(membership.run(leave.clone()));
        let replacement = ReplacementCheck {
            jetstream: self.jetstream.clone(),
            spec: self.declared.spec,
            bucket: self.declared.bucket,
            member: Arc::clone(&member),
            assignment: assigned.clone(),
            mirror: MirrorCheck::default(),
        };
        let replacement = tokio::spawn(replacement.run(leave.clone()));
        let subscriber = Arc::clone(&self.dispatcher.context.name);
        tracing::info!(subscriber = %subscriber, member = %member, group = %self.layout.group,
            bucket = %self.layout.bucket, "joining consumer group `{}`", self.layout.group);
        let context = PartitionContext {
            client: Arc::new(self.jetstream.client()),
            dispatcher: self.dispatcher,
            jetstream: self.jetstream,
            layout: Arc::new(self.layout),
            settings: Arc::new(self.settings),
            stream: self.declared.stream,
            handbacks: Handbacks {
                store: self.declared.handbacks,
            },
            member_id: member,
            workers: Arc::new(Semaphore::new(self.max_workers)),
            report,
            without_values: self.without_values,
            ignore_deletes: self.ignore_deletes,
            metrics: self.metrics,
        };
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut running: HashMap<u16, CancellationToken> = HashMap::new();
        let mut panics: HashMap<u16, Panics> = HashMap::new();
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
                            let stop = spawn_partition(&mut tasks, &context, *partition, Duration::ZERO);
                            running.insert(*partition, stop);
                        }
                    }
                }
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    // A task's future catches its own panics: an error here is an abort, which
                    // only dropping the set does.
                    let Ok(Ended { partition, panic }) = ended else {
                        continue;
                    };
                    running.remove(&partition);
                    let restart_after = match panic {
                        None => Duration::ZERO,
                        Some(panic) => {
                            // Its state went with it: the pin it held lapses after the pin
                            // timeout, its change in hand comes back after the ack wait.
                            context.report_pin(partition, None);
                            let delay = panics
                                .entry(partition)
                                .or_default()
                                .next_delay(context.settings.heartbeat_interval());
                            tracing::error!(subscriber = %subscriber, member = %context.member_id,
                                partition, panic, restart_in = ?delay,
                                "the task of partition {partition} panicked: {panic}; starting it again in {delay:?}");
                            delay
                        }
                    };
                    // Still (or again) assigned: start it afresh.
                    if mine.contains(&partition) {
                        let stop = spawn_partition(&mut tasks, &context, partition, restart_after);
                        running.insert(partition, stop);
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
        let _ = replacement.await;
        tracing::info!(subscriber = %subscriber, member = %context.member_id, "left consumer group `{}`",
            context.layout.group);
    }
}

/// How a partition task ended: its partition, and its panic's message if it panicked.
struct Ended {
    partition: u16,
    panic: Option<String>,
}

/// The panics in a row of one partition's task, for the pause before it starts again.
#[derive(Debug, Default)]
struct Panics {
    count: u32,
    last: Option<Instant>,
}

impl Panics {
    /// `base` after the first panic, doubled at each one in a row, at most
    /// [`MAX_RESTART_DELAY`]; a panic long after the last one starts over.
    fn next_delay(&mut self, base: Duration) -> Duration {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) > PANICS_FORGOTTEN_AFTER)
        {
            self.count = 0;
        }
        self.last = Some(now);
        self.count = self.count.saturating_add(1);
        base.saturating_mul(1 << (self.count - 1).min(16))
            .min(MAX_RESTART_DELAY)
    }
}

/// Spawns the task of `partition`, started after `start_after`; returns what stops it.
fn spawn_partition(
    tasks: &mut JoinSet<Ended>,
    context: &PartitionContext,
    partition: u16,
    start_after: Duration,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let task = PartitionTask {
        context: context.clone(),
        partition,
        stop: stop.clone(),
        start_after,
    };
    tasks.spawn(async move {
        let ran = AssertUnwindSafe(task.run()).catch_unwind().await;
        Ended {
            partition,
            panic: ran.err().map(|payload| panic_message(&*payload).to_owned()),
        }
    });
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off() {
        let base = Duration::from_millis(400);
        let mut panics = Panics::default();
        let delays: Vec<Duration> = (0..10).map(|_| panics.next_delay(base)).collect();
        assert_eq!(delays[0], base);
        assert_eq!(delays[1], base * 2);
        assert_eq!(delays[2], base * 4);
        assert_eq!(delays[9], MAX_RESTART_DELAY);
    }
}
