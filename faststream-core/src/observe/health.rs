//! Readiness: whether the service should get traffic, and if not, which part holds it back.
//!
//! Ready means: start-up finished (the `after_startup` hooks ran), connected to NATS, and
//! every subscriber live (a watch caught up with its bucket and its handler with the watch; a
//! consumer-group member joined, holding partitions or standing by). A connection blip or a
//! watch re-creating its consumer shorter than the grace period does not count: readiness
//! flapping on every leader election would take a healthy fleet out of rotation.
//!
//! Everything is read at request time from where it already is (the watch's status, the
//! loop's catch-up signal, the connection), so nothing on the hot path reports to it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::watch;

use super::metrics::Progress;
use super::{Registered, SubscriberId};
use crate::broker::NatsBroker;
use crate::kv::watcher::WatchPhase;

/// Default for [`App::readiness_grace`](crate::App::readiness_grace).
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// Where the app's lifecycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stage {
    /// Connecting, starting the watches, running the start-up hooks.
    Starting = 0,
    /// Started: the `after_startup` hooks have run.
    Running = 1,
    /// Shutting down.
    Stopping = 2,
}

impl Stage {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Stage::Starting,
            1 => Stage::Running,
            _ => Stage::Stopping,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Running => "running",
            Stage::Stopping => "stopping",
        }
    }
}

/// The readiness inputs of the whole app. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    broker: NatsBroker,
    grace: Duration,
    stage: AtomicU8,
    subscribers: Registered<SubscriberHealth>,
}

/// One subscriber's readiness inputs: registered before it starts (so it shows as
/// `starting`), completed when its watch or group member runs.
#[derive(Debug)]
pub(crate) struct SubscriberHealth {
    id: Arc<SubscriberId>,
    started: OnceLock<RunningLoop>,
    /// Set when the subscriber's loop ended (it should run until shutdown).
    ended: AtomicBool,
}

#[derive(Debug)]
struct RunningLoop {
    progress: Progress,
    /// A watch: set once its handler has handled the bucket's state. A group member: once it
    /// has joined.
    done: watch::Receiver<bool>,
}

/// Sets [`SubscriberHealth`]'s `ended` when dropped: held by the loop's task, so a loop that
/// ends in any way (returns, panics, is aborted) is seen.
#[derive(Debug)]
pub(crate) struct EndedOnDrop(Arc<SubscriberHealth>);

impl Drop for EndedOnDrop {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

impl SubscriberHealth {
    /// The watch or member has started: where to read its state from, and its signal.
    pub(crate) fn started(
        self: &Arc<Self>,
        progress: Progress,
        done: watch::Receiver<bool>,
    ) -> EndedOnDrop {
        let _ = self.started.set(RunningLoop { progress, done });
        EndedOnDrop(Arc::clone(self))
    }
}

/// What a subscriber is doing, as `/health/ready` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Starting,
    CatchingUp { pending: u64 },
    Live { partitions: Option<u64> },
    Recreating { for_: Duration },
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::CatchingUp { .. } => "catching_up",
            State::Live { .. } => "live",
            State::Recreating { .. } => "recreating",
            State::Failed => "failed",
        }
    }
}

/// The answer to a readiness check.
#[derive(Debug)]
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    /// The JSON body: the overall status, the reasons it is not ready, and each part's state.
    pub(crate) body: Json,
}

impl Health {
    pub(crate) fn new(broker: NatsBroker, grace: Duration) -> Self {
        Self {
            inner: Arc::new(HealthInner {
                broker,
                grace,
                stage: AtomicU8::new(Stage::Starting as u8),
                subscribers: Registered::default(),
            }),
        }
    }

    pub(crate) fn set_stage(&self, stage: Stage) {
        self.inner.stage.store(stage as u8, Ordering::Relaxed);
    }

    fn stage(&self) -> Stage {
        Stage::from_u8(self.inner.stage.load(Ordering::Relaxed))
    }

    /// Registers a subscriber, `starting` until [`SubscriberHealth::started`].
    pub(crate) fn subscriber(&self, id: Arc<SubscriberId>) -> Arc<SubscriberHealth> {
        let health = Arc::new(SubscriberHealth {
            id,
            started: OnceLock::new(),
            ended: AtomicBool::new(false),
        });
        self.inner.subscribers.add(&health);
        health
    }

    /// Evaluates readiness now.
    pub(crate) fn readiness(&self) -> Readiness {
        let grace = self.inner.grace;
        let stage = self.stage();
        let mut reasons = Vec::new();
        match stage {
            Stage::Starting => reasons.push("the app is starting".to_owned()),
            Stage::Stopping => reasons.push("the app is shutting down".to_owned()),
            Stage::Running => {}
        }
        let connection = self.inner.broker.connection_health();
        let connection_ok =
            connection.connected || connection.down_for.is_some_and(|down_for| down_for < grace);
        if !connection_ok {
            reasons.push(match connection.down_for {
                Some(down_for) => format!("not connected to NATS for {}", millis(down_for)),
                None => "not connected to NATS".to_owned(),
            });
        }
        let subscribers = self.inner.subscribers.snapshot();
        let mut states = Vec::with_capacity(subscribers.len());
        for subscriber in &subscribers {
            let state = subscriber_state(subscriber);
            let ok = match &state {
                State::Live { .. } => true,
                State::Recreating { for_ } => *for_ < grace,
                _ => false,
            };
            if !ok {
                reasons.push(format!(
                    "subscriber `{}` is {}",
                    subscriber.id.name,
                    describe(&state)
                ));
            }
            let mut entry = json!({
                "subscriber": &*subscriber.id.name,
                "bucket": &*subscriber.id.bucket,
                "pattern": subscriber.id.pattern,
                "state": state.name(),
                "ready": ok,
            });
            if let Some(group) = &subscriber.id.group {
                entry["group"] = json!(&**group);
            }
            match state {
                State::CatchingUp { pending } => entry["pending"] = json!(pending),
                State::Recreating { for_ } => entry["for_ms"] = json!(for_.as_millis()),
                State::Live {
                    partitions: Some(partitions),
                } => entry["partitions"] = json!(partitions),
                _ => {}
            }
            states.push(entry);
        }
        let ready = reasons.is_empty();
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "stage": stage.as_str(),
            "reasons": reasons,
            "nats": {
                "connected": connection.connected,
                "down_for_ms": connection.down_for.map(|down_for| down_for.as_millis()),
                "reconnects": connection.reconnects,
            },
            "subscribers": states,
        });
        Readiness { ready, body }
    }
}

fn subscriber_state(subscriber: &SubscriberHealth) -> State {
    let Some(started) = subscriber.started.get() else {
        return State::Starting;
    };
    if subscriber.ended.load(Ordering::Relaxed) {
        return State::Failed;
    }
    let done = *started.done.borrow();
    match &started.progress {
        Progress::Watch(status) => match status.phase() {
            WatchPhase::Closed => State::Failed,
            WatchPhase::Recreating => State::Recreating {
                for_: status.in_phase_for(),
            },
            // Read but not yet handled counts as catching up: the handler is behind.
            WatchPhase::Live if done => State::Live { partitions: None },
            _ => State::CatchingUp {
                pending: status.pending(),
            },
        },
        // A member holding no partition is a hot standby: ready.
        Progress::Group(group) if done => State::Live {
            partitions: Some(group.owned_and_pending().0),
        },
        Progress::Group(_) => State::Starting,
        // Subscribed (and its stream and consumer declared): nothing to catch up with.
        Progress::Subject(_) if done => State::Live { partitions: None },
        Progress::Subject(_) => State::Starting,
    }
}

fn describe(state: &State) -> String {
    match state {
        State::Starting => "starting".to_owned(),
        State::CatchingUp { pending } => {
            format!("catching up ({pending} entries pending on the server)")
        }
        State::Live { .. } => "live".to_owned(),
        State::Recreating { for_ } => format!("re-creating its watch for {}", millis(*for_)),
        State::Failed => "failed: its watch ended (connection closed for good?)".to_owned(),
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
