//! The thread keeping a view: applies the watch's entries to its own copy of the map, drops
//! what expires, and publishes the state once it is whole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::decode::Decode;
use super::handover::{Input, NextDeadline, NO_DEADLINE};
use super::state::{Entries, PublishedView, Slot, ViewState};
use crate::error::chain;
use crate::kv::message::{KvMessage, Operation};
use crate::kv::watcher::WatchEvent;

/// The thread keeping a view: applies the watch's entries and publishes the state.
pub(super) struct Keeper<T> {
    published: Arc<PublishedView<T>>,
    decode: Decode<T>,
    /// The state being built; published by a (cheap, structurally shared) clone.
    working: ViewState<T>,
    expiry: Option<Expiry>,
    /// Publishing waits for the first catch-up, and for the catch-up after a start over, so
    /// readers never see half a state.
    caught_up: bool,
    /// Caught up in the input being applied: ready is announced once it is published.
    announce_ready: bool,
    changes: Arc<watch::Sender<()>>,
    ready: watch::Sender<bool>,
    /// Its earliest expiry deadline, for the reader's timer.
    next_deadline: Arc<NextDeadline>,
}

/// Keys to drop when they outlive the bucket's `ttl`, by deadline (lazily: a key rewritten
/// since has another revision and is left alone).
struct Expiry {
    ttl: Duration,
    deadlines: BinaryHeap<Reverse<(SystemTime, u64, Arc<str>)>>,
}

impl<T> Keeper<T> {
    /// A keeper of `published`, from an empty state; `ttl` is the bucket's, when the server does
    /// not report expiries itself.
    pub(super) fn new(
        published: Arc<PublishedView<T>>,
        decode: Decode<T>,
        ttl: Option<Duration>,
        changes: Arc<watch::Sender<()>>,
        ready: watch::Sender<bool>,
        next_deadline: Arc<NextDeadline>,
    ) -> Self {
        Self {
            published,
            decode,
            working: ViewState::default(),
            expiry: ttl.map(|ttl| Expiry {
                ttl,
                deadlines: BinaryHeap::new(),
            }),
            caught_up: false,
            announce_ready: false,
            changes,
            ready,
            next_deadline,
        }
    }
}

impl<T: Send + Sync + 'static> Keeper<T> {
    pub(super) fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        while let Some(input) = inputs.blocking_recv() {
            let changed = match input {
                Input::Events(batch) => {
                    let mut changed = false;
                    for event in batch {
                        changed |= self.apply(event);
                    }
                    changed
                }
                Input::Expire => self.expire(),
            };
            // Published once per input, after all of it: an input holds whole commits.
            if changed && self.caught_up {
                self.publish();
            }
            if std::mem::take(&mut self.announce_ready) {
                self.ready.send_replace(true);
            }
            let deadline = self
                .expiry
                .as_ref()
                .and_then(Expiry::next_deadline)
                .and_then(|deadline| deadline.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(NO_DEADLINE, |since| {
                    u64::try_from(since.as_nanos()).unwrap_or(NO_DEADLINE)
                });
            if self.next_deadline.nanos.swap(deadline, Ordering::AcqRel) != deadline {
                self.next_deadline.moved.notify_one();
            }
        }
        tracing::debug!(bucket = %self.published.bucket, pattern = %self.published.pattern,
            "view stopped");
    }

    /// Applies one event; `true` if the state changed.
    fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Entry(entry) => {
                self.apply_entry(entry);
                true
            }
            WatchEvent::CaughtUp(catch_up) => {
                self.caught_up = true;
                tracing::info!(bucket = %self.published.bucket, pattern = %self.published.pattern,
                    keys = self.working.entries.len(), entries = catch_up.entries,
                    elapsed = ?catch_up.elapsed,
                    "view of `{}` in bucket `{}` caught up: {} keys from {} entries in {:?}",
                    self.published.pattern, self.published.bucket, self.working.entries.len(),
                    catch_up.entries, catch_up.elapsed);
                self.announce_ready = true;
                true
            }
            WatchEvent::StartedOver => {
                // Built afresh from the new stream; readers keep the old state meanwhile.
                self.caught_up = false;
                self.working = ViewState::default();
                self.published.progress.started_over();
                if let Some(expiry) = self.expiry.as_mut() {
                    expiry.deadlines.clear();
                }
                false
            }
        }
    }

    fn apply_entry(&mut self, entry: KvMessage) {
        let key = entry.key();
        let revision = entry.revision();
        self.working.revision = revision;
        if entry.operation() != Operation::Put {
            self.working.entries.remove(key);
            return;
        }
        // A decoder that panics fails that value, not the view.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.decode)(entry.value())
        }))
        .unwrap_or_else(|_| Err("the decoder panicked".into()));
        let value = match decoded {
            Ok(value) => Arc::new(value),
            Err(error) => {
                tracing::warn!(bucket = %self.published.bucket, key, revision,
                    error = %chain(&*error),
                    "{key} | {revision} - the value does not decode; the key is left out of the \
                     view until a value that does");
                self.working.entries.remove(key);
                return;
            }
        };
        if let Some(expiry) = self.expiry.as_mut() {
            expiry.track(key, revision, entry.created());
        }
        // The entry's own key becomes the slot's: no copy.
        let slot = Slot::new(entry.into_key().into_boxed_str(), value, revision);
        self.working.entries.insert(slot);
        if let Some(expiry) = self.expiry.as_mut() {
            // Rewritten keys leave stale deadlines behind; keep them to about the live keys.
            if expiry.deadlines.len() > 2 * self.working.entries.len() + 1024 {
                expiry.drop_stale(&self.working.entries);
            }
        }
    }

    /// Drops keys past the bucket's `ttl`; `true` if any was.
    fn expire(&mut self) -> bool {
        let Some(expiry) = self.expiry.as_mut() else {
            return false;
        };
        let now = SystemTime::now();
        let mut expired = false;
        while let Some(Reverse((deadline, revision, key))) = expiry.deadlines.peek() {
            if *deadline > now {
                break;
            }
            if self
                .working
                .entries
                .get(key)
                .is_some_and(|slot| slot.revision == *revision)
            {
                self.working.entries.remove(key);
                expired = true;
            }
            expiry.deadlines.pop();
        }
        expired
    }

    fn publish(&mut self) {
        self.published.state.store(Arc::new(self.working.clone()));
        self.changes.send_replace(());
    }
}

impl Expiry {
    fn track(&mut self, key: &str, revision: u64, created: SystemTime) {
        self.deadlines
            .push(Reverse((created + self.ttl, revision, Arc::from(key))));
    }

    /// Keeps only the deadlines of the keys' current revisions.
    fn drop_stale<T>(&mut self, entries: &Entries<T>) {
        self.deadlines.retain(|Reverse((_, revision, key))| {
            entries
                .get(key)
                .is_some_and(|slot| slot.revision == *revision)
        });
    }

    fn next_deadline(&self) -> Option<SystemTime> {
        self.deadlines
            .peek()
            .map(|Reverse((deadline, _, _))| *deadline)
    }
}
