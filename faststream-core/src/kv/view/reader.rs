//! The task reading a view's watch: hands what arrives to the keeper in batches, and tells it
//! when an expiry deadline passes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, watch};

use super::commit::{wait_for_rest, OpenCommit, Rest};
use super::handover::{Input, NextDeadline, Preparer, MAX_BATCH, NO_DEADLINE};
use crate::kv::watcher::{KvWatcher, WatchEvent};

/// The task reading a view's watch for its keeper.
pub(super) struct Reader<T> {
    pub(super) inputs: mpsc::Sender<Input<T>>,
    /// Turns the events into changes of the map.
    pub(super) preparer: Preparer,
    /// The views' change channel: closed once every clone of the view is gone.
    pub(super) views: Arc<watch::Sender<()>>,
    pub(super) next_deadline: Arc<NextDeadline>,
}

impl<T> Reader<T> {
    /// Reads the watch in batches (whatever has arrived, up to [`MAX_BATCH`]; [`MAX_BATCH`]
    /// while catching up; and always the whole of an atomic commit: see `commit.rs`) for the
    /// keeper, as changes of the map (`handover.rs`), and tells it when an expiry
    /// deadline passes; ends with the watch, or once every clone of the view is gone (dropping
    /// the watcher deletes its consumer, and the keeper's thread ends with the channel).
    pub(super) async fn run(mut self, mut watcher: KvWatcher) {
        let mut expired_at = NO_DEADLINE;
        let lookup = watcher.head_lookup();
        let mut commit = OpenCommit::default();
        let mut catching_up = CatchingUp(true);
        // Reused for every batch: the events are handed over as changes.
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let deadline = self.next_deadline.nanos.load(Ordering::Acquire);
            // Told once per deadline: the keeper moves it on when it has expired what is due.
            let timer = (deadline != NO_DEADLINE && deadline != expired_at).then_some(deadline);
            let first = tokio::select! {
                biased;
                () = self.views.closed() => return,
                () = self.next_deadline.moved.notified() => continue,
                () = sleep_until(timer), if timer.is_some() => {
                    expired_at = deadline;
                    if self.inputs.send(Input::Expire).await.is_err() {
                        return;
                    }
                    continue;
                }
                event = watcher.next_event() => event,
            };
            let Some(first) = first else { return };
            catching_up.track(&first);
            commit.track(&first);
            batch.push(first);
            let mut ended = false;
            loop {
                while batch.len() < MAX_BATCH || commit.is_open() {
                    match watcher.next_event().now_or_never() {
                        Some(Some(event)) => {
                            catching_up.track(&event);
                            commit.track(&event);
                            batch.push(event);
                        }
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                if ended {
                    break;
                }
                if !commit.is_open() {
                    if !catching_up.0 || batch.len() >= MAX_BATCH {
                        break;
                    }
                    // Nothing is published before a catch-up ends: the batch is filled first,
                    // so that the keeper is woken once per full batch rather than per burst.
                    let event = tokio::select! {
                        biased;
                        () = self.views.closed() => return,
                        event = watcher.next_event() => event,
                    };
                    let Some(event) = event else {
                        ended = true;
                        break;
                    };
                    catching_up.track(&event);
                    commit.track(&event);
                    batch.push(event);
                    continue;
                }
                // Part of a commit: hold it until the view has the rest of it.
                let rest = tokio::select! {
                    biased;
                    () = self.views.closed() => return,
                    rest = wait_for_rest(&mut commit, &lookup, watcher.next_event(), &mut batch) => rest,
                };
                match rest {
                    Rest::Arrived => {
                        if let Some(event) = batch.last() {
                            catching_up.track(event);
                        }
                    }
                    Rest::Whole => break,
                    Rest::Ended => {
                        ended = true;
                        break;
                    }
                }
            }
            let mut changes = Vec::with_capacity(batch.len() + 1);
            self.preparer.prepare(batch.drain(..), &mut changes);
            if self.inputs.send(Input::Changes(changes)).await.is_err() || ended {
                return;
            }
        }
    }
}

/// Whether the watch is catching up (from its start, or from a start over, to its `CaughtUp`).
struct CatchingUp(bool);

impl CatchingUp {
    fn track(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::CaughtUp(_) => self.0 = false,
            WatchEvent::StartedOver => self.0 = true,
            WatchEvent::Entry(_) => {}
        }
    }
}

/// Sleeps until `deadline` (nanoseconds since the Unix epoch) by the system clock: the
/// server's timestamps are wall-clock time.
async fn sleep_until(deadline: Option<u64>) {
    let wait = deadline
        .map(|nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        .and_then(|deadline| deadline.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}
