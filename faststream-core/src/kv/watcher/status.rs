//! Where a watch stands, readable from other tasks: whether it has delivered the bucket's state
//! yet, how far behind the server it is, and whether it is re-creating its consumer.
//!
//! The watcher updates it on every entry, so the per-entry part is two relaxed atomic stores;
//! the channel that wakes waiters is written only when the catch-up state changes. Phase
//! changes and re-creations are counted here too, so metrics and health checks read them at
//! scrape time instead of the watcher reporting them anywhere.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::kv::message::KvMessage;

/// What [`KvWatcher::next_event`](super::KvWatcher::next_event) yields: an entry, or a change in
/// where the watch stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchEvent {
    /// An entry of a matching key.
    Entry(KvMessage),
    /// The watch has delivered the bucket's state as of its start: the latest entry of every
    /// matching key (every retained revision with `include_history`; nothing with
    /// `updates_only`). Comes once, right after the entry that completed that state (first
    /// thing on an empty bucket), and once more after each [`StartedOver`](Self::StartedOver).
    CaughtUp(CatchUp),
    /// The bucket's stream was replaced (the bucket was deleted and created again, or a memory
    /// bucket lost its contents in a server restart): entries delivered before no longer exist,
    /// and the watch delivers the new stream's state, followed by another
    /// [`CaughtUp`](Self::CaughtUp).
    StartedOver,
}

/// How a watch caught up with its bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Entries delivered until caught up (after `ignore_deletes` filtering).
    pub entries: u64,
    /// From the start of the watch (or its start over) to the last of those entries.
    pub elapsed: Duration,
}

/// What a watch is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchPhase {
    /// Delivering the bucket's state as of the start.
    CatchingUp,
    /// Caught up: delivering changes as they happen.
    Live,
    /// Between consumers: the connection dropped, the server restarted or a gap was seen, and
    /// the watch is being re-created after its last revision.
    Recreating,
    /// The connection is closed for good, or the watcher was dropped.
    Closed,
}

impl WatchPhase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => WatchPhase::CatchingUp,
            1 => WatchPhase::Live,
            2 => WatchPhase::Recreating,
            _ => WatchPhase::Closed,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            WatchPhase::CatchingUp => 0,
            WatchPhase::Live => 1,
            WatchPhase::Recreating => 2,
            WatchPhase::Closed => 3,
        }
    }
}

/// Why a watch re-created its consumer (see [`WatchStatus::recreations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecreateReason {
    /// Nothing, not even a heartbeat, was heard from the server for the watch's timeout.
    Silence,
    /// The connection to NATS was re-established.
    Reconnected,
    /// Entries were lost on the way: a consumer sequence was skipped.
    Gap,
    /// The bucket's stream was replaced (deleted and created again, or a memory bucket lost in
    /// a restart): the watch started over on the new one.
    StreamReplaced,
}

impl RecreateReason {
    /// Every reason, in the order of their indices.
    pub const ALL: [RecreateReason; 4] = [
        RecreateReason::Silence,
        RecreateReason::Reconnected,
        RecreateReason::Gap,
        RecreateReason::StreamReplaced,
    ];

    /// The reason as a metric label: `silence`, `reconnected`, `gap`, `stream_replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecreateReason::Silence => "silence",
            RecreateReason::Reconnected => "reconnected",
            RecreateReason::Gap => "gap",
            RecreateReason::StreamReplaced => "stream_replaced",
        }
    }

    fn index(self) -> usize {
        match self {
            RecreateReason::Silence => 0,
            RecreateReason::Reconnected => 1,
            RecreateReason::Gap => 2,
            RecreateReason::StreamReplaced => 3,
        }
    }
}

/// What phase changes are timed from: one instant for the process, so a change fits in an
/// atomic as milliseconds since it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// A read-only handle on a watch's progress, for other tasks: get one with
/// [`KvWatcher::status`](super::KvWatcher::status). Cheap to clone.
///
/// Progress is counted as entries are taken from the watcher: whoever owns the
/// [`KvWatcher`](super::KvWatcher) must keep calling `next`, or nothing moves.
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// use faststream_core::KvWatch;
///
/// let mut watcher = broker.kv_watch(">", KvWatch::new("flags")).await?;
/// let status = watcher.status();
/// tokio::spawn(async move {
///     while let Some(entry) = watcher.next().await {
///         println!("{} changed", entry.key());
///     }
/// });
/// if let Some(catch_up) = status.caught_up().await {
///     println!("{} entries in {:?}", catch_up.entries, catch_up.elapsed);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WatchStatus {
    counters: Arc<Counters>,
    catch_up: watch::Receiver<Option<CatchUp>>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Entries the server still held for the watch when it sent the last entry taken.
    pending: AtomicU64,
    phase: AtomicU8,
    /// When the phase last changed, in milliseconds since [`EPOCH`].
    phase_changed: AtomicU64,
    /// Re-creations by [`RecreateReason::index`].
    recreated: [AtomicU64; 4],
    /// The last lookup of the head, to confirm the catch-up, failed.
    head_unconfirmed: AtomicBool,
}

impl WatchStatus {
    /// Whether the watch has delivered the bucket's state as of its start (see
    /// [`WatchEvent::CaughtUp`]).
    pub fn is_caught_up(&self) -> bool {
        self.catch_up.borrow().is_some()
    }

    /// Waits until the watch is caught up; `None` if it ends first (connection closed for good,
    /// watcher dropped).
    pub async fn caught_up(&self) -> Option<CatchUp> {
        let mut receiver = self.catch_up.clone();
        let caught_up = receiver.wait_for(Option::is_some).await.ok()?;
        *caught_up
    }

    /// How the watch caught up, if it has.
    pub fn catch_up(&self) -> Option<CatchUp> {
        *self.catch_up.borrow()
    }

    /// The lag: entries of the watched keys the server still held when it sent the last entry
    /// taken from the watcher (NATS's `delta`). During catch-up, what is left of the state;
    /// afterwards, how far the reader is behind the writers.
    pub fn pending(&self) -> u64 {
        self.counters.pending.load(Ordering::Relaxed)
    }

    /// What the watch is doing.
    pub fn phase(&self) -> WatchPhase {
        WatchPhase::from_u8(self.counters.phase.load(Ordering::Relaxed))
    }

    /// How long the watch has been in its current [`phase`](Self::phase).
    pub fn in_phase_for(&self) -> Duration {
        let changed = Duration::from_millis(self.counters.phase_changed.load(Ordering::Relaxed));
        EPOCH.elapsed().saturating_sub(changed)
    }

    /// Whether the last lookup of the bucket's head, which confirms the catch-up, failed: the
    /// watch read what the server counted as pending but cannot tell whether that was all.
    pub(crate) fn head_unconfirmed(&self) -> bool {
        self.counters.head_unconfirmed.load(Ordering::Relaxed)
    }

    /// How far from caught up the watch is, for an error saying why it is not: the entries
    /// still pending, or the lookup of the head that keeps failing; and its phase.
    pub(crate) fn behind(&self) -> String {
        let behind = if self.head_unconfirmed() {
            "read what the server counted as pending, but the lookup of the bucket's head that \
             would confirm it was all keeps failing (logged as warnings)"
                .to_owned()
        } else {
            format!("{} entries still pending on the server", self.pending())
        };
        format!("{behind} ({:?})", self.phase())
    }

    /// How many times the watch re-created its consumer for `reason` (each start over on a
    /// replaced stream counts as one, with [`RecreateReason::StreamReplaced`]).
    pub fn recreations(&self, reason: RecreateReason) -> u64 {
        self.counters.recreated[reason.index()].load(Ordering::Relaxed)
    }
}

/// The watcher's side of [`WatchStatus`].
#[derive(Debug)]
pub(super) struct StatusWriter {
    counters: Arc<Counters>,
    catch_up: watch::Sender<Option<CatchUp>>,
}

impl StatusWriter {
    pub(super) fn new() -> Self {
        let counters = Counters::default();
        // The watch starts catching up now.
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        counters.phase_changed.store(now, Ordering::Relaxed);
        Self {
            counters: Arc::new(counters),
            catch_up: watch::Sender::new(None),
        }
    }

    pub(super) fn reader(&self) -> WatchStatus {
        WatchStatus {
            counters: Arc::clone(&self.counters),
            catch_up: self.catch_up.subscribe(),
        }
    }

    pub(super) fn set_pending(&self, pending: u64) {
        self.counters.pending.store(pending, Ordering::Relaxed);
    }

    /// Sets the phase; called on changes of state, never per entry.
    pub(super) fn set_phase(&self, phase: WatchPhase) {
        let previous = self.counters.phase.swap(phase.as_u8(), Ordering::Relaxed);
        if previous != phase.as_u8() {
            let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.counters.phase_changed.store(now, Ordering::Relaxed);
        }
    }

    pub(super) fn recreated(&self, reason: RecreateReason) {
        self.counters.recreated[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_head_unconfirmed(&self, unconfirmed: bool) {
        self.counters
            .head_unconfirmed
            .store(unconfirmed, Ordering::Relaxed);
    }

    pub(super) fn caught_up(&self, catch_up: CatchUp) {
        self.set_phase(WatchPhase::Live);
        self.catch_up.send_replace(Some(catch_up));
    }

    pub(super) fn started_over(&self) {
        self.set_phase(WatchPhase::CatchingUp);
        self.catch_up.send_replace(None);
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.set_phase(WatchPhase::Closed);
    }
}
