//! The thread keeping a view: applies the watch's entries to its own copy of the map, drops
//! what expires, and publishes the state once it is whole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use bytes::Bytes;

use super::decode::Decode;
use super::handover::{Change, Input, NextDeadline, NO_DEADLINE};
use super::state::{Entries, PublishedView, ViewState};
use crate::error::chain;

/// At most this many keys are made room for in advance: a catch-up's count of entries is the
/// server's, and may count revisions rather than keys (a batched catch-up of a bucket with
/// history).
const MAX_RESERVED: usize = 1 << 20;

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
    pub(super) fn run(mut self, mut inputs: mpsc::Receiver<Input<T>>) {
        while let Some(input) = inputs.blocking_recv() {
            self.handle(input);
        }
        tracing::debug!(bucket = %self.published.bucket, pattern = %self.published.pattern,
            "view stopped");
    }

    /// Applies one input and publishes the result.
    fn handle(&mut self, input: Input<T>) {
        let changed = match input {
            Input::Changes(batch) => {
                let mut changed = false;
                for change in batch {
                    changed |= self.apply(change);
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

    /// Applies one change; `true` if the state changed.
    fn apply(&mut self, change: Change<T>) -> bool {
        match change {
            Change::Put {
                mut slot,
                value,
                created,
            } => {
                let revision = slot.revision;
                self.working.revision = revision;
                let decoded = self.decode(&slot.key, &value, revision);
                // The slot is the reader's alone until inserted: setting its value cannot fail.
                if !decoded.is_some_and(|value| slot.set_value(Arc::new(value))) {
                    self.working.entries.remove(&slot.key);
                    return true;
                }
                if let Some(expiry) = self.expiry.as_mut() {
                    expiry.track(&slot.key, revision, created);
                }
                self.working.entries.insert(slot);
                if let Some(expiry) = self.expiry.as_mut() {
                    // Rewritten keys leave stale deadlines behind; keep them to about the live
                    // keys.
                    if expiry.deadlines.len() > 2 * self.working.entries.len() + 1024 {
                        expiry.drop_stale(&self.working.entries);
                    }
                }
                true
            }
            Change::Remove { key, revision } => {
                self.working.revision = revision;
                self.working.entries.remove(&key);
                true
            }
            Change::Coming(entries) => {
                // Room for the whole catch-up at once, rather than growing the map (and
                // copying its slots) along the way.
                let entries = usize::try_from(entries).unwrap_or(usize::MAX);
                self.working.entries.reserve(entries.min(MAX_RESERVED));
                false
            }
            Change::CaughtUp(catch_up) => {
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
            Change::StartedOver => {
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

    /// `value` decoded, or `None` (logged) if it does not decode.
    fn decode(&self, key: &str, value: &Bytes, revision: u64) -> Option<T> {
        // A decoder that panics fails that value, not the view.
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.decode)(value)))
                .unwrap_or_else(|_| Err("the decoder panicked".into()));
        decoded
            .inspect_err(|error| {
                tracing::warn!(bucket = %self.published.bucket, key, revision,
                    error = %chain(&**error),
                    "{key} | {revision} - the value does not decode; the key is left out of the \
                     view until a value that does");
            })
            .ok()
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
