//! What the view's reader (a task, owning the watch) hands its keeper (a thread, building the
//! map), and the expiry deadline the keeper hands back.

use std::sync::atomic::AtomicU64;

use tokio::sync::Notify;

use crate::kv::watcher::WatchEvent;

/// How many entries already received are handed over (and applied before the state is
/// published) at once.
pub(super) const MAX_BATCH: usize = 512;
/// Batches read ahead of the one being applied.
pub(super) const BATCHES_AHEAD: usize = 8;

/// What the reader hands the keeper.
pub(super) enum Input {
    /// Events read from the watch, in order.
    Events(Vec<WatchEvent>),
    /// The earliest expiry deadline has passed.
    Expire,
}

/// `Keeper::next_deadline` when there is none.
pub(super) const NO_DEADLINE: u64 = u64::MAX;

/// The keeper's earliest expiry deadline, in nanoseconds since the Unix epoch, and a wake-up
/// for the reader's timer when it moves.
pub(super) struct NextDeadline {
    pub(super) nanos: AtomicU64,
    pub(super) moved: Notify,
}
