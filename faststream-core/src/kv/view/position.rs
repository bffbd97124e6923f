//! How far a view has gone in its bucket's stream, and waiting until it has passed a position:
//! a handler given a view of the bucket its entry came from gets the view once it has applied
//! every entry of its keys up to that entry.
//!
//! The published revision says how far the view has read its own keys, so an entry of those
//! keys is passed once the view has applied it (or a later one). An entry of other keys (a
//! handler on `orders.*`, a view of `cfg.*`) never reaches the view, and the server tells a
//! watch nothing about the entries its filter leaves out, so that position is learned by asking:
//! the latest revision of the view's keys, looked up after the entry was stored, is as far as the
//! view must read to have passed it. Callers waiting at the same time share one lookup, and a
//! position passed stays passed, so a view that is already ahead costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use super::{KvView, ViewClosed};
use crate::kv::watcher::{HeadLookup, WatchPhase};

/// How long a caller waiting for an entry of the view's own keys waits for the view's watch to
/// bring it before asking the server (the entry may have been removed before the view read it,
/// and then only the server can tell).
const OWN_ENTRY_GRACE: Duration = Duration::from_millis(250);
/// The first pause after a failed lookup; it doubles, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(20);
const MAX_RETRY: Duration = Duration::from_millis(500);

/// How far a view has passed in its bucket's stream beyond its revision, shared by its clones.
pub(super) struct Progress {
    lookup: HeadLookup,
    /// A position the published state is known to have passed, from a lookup.
    passed_by_lookup: AtomicU64,
    /// The highest position a caller has asked for: a lookup sent after it was asked covers it,
    /// since the entry at that position was stored before.
    wanted: AtomicU64,
    /// Counts the view's start-overs on a new stream, whose positions mean something else; held
    /// while a lookup's result is recorded, so none from the old stream lands after the reset.
    stream_epoch: std::sync::Mutex<u64>,
    /// One lookup at a time: the callers waiting meanwhile mostly find theirs covered by it.
    lookup_turn: Mutex<()>,
    /// How long a caller waits at most: the view's watch timeout.
    limit: Duration,
}

impl Progress {
    pub(super) fn new(lookup: HeadLookup, limit: Duration) -> Self {
        Self {
            lookup,
            passed_by_lookup: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            stream_epoch: std::sync::Mutex::new(0),
            lookup_turn: Mutex::new(()),
            limit,
        }
    }

    /// The view starts over on a new stream: what was passed on the old one says nothing.
    pub(super) fn started_over(&self) {
        let mut epoch = self.epoch();
        *epoch += 1;
        self.passed_by_lookup.store(0, Ordering::Release);
        self.wanted.store(0, Ordering::Release);
    }

    fn epoch(&self) -> std::sync::MutexGuard<'_, u64> {
        // Only counters are written under it: a panic elsewhere leaves nothing half-done.
        self.stream_epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A view did not pass, within its watch timeout, the entry a handler was to be called with:
/// the call fails (a consumer group retries it) rather than showing the handler a view behind
/// its entry. Its watch is usually re-creating after a connection loss (see `phase`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error(
    "the view of `{pattern}` in bucket `{bucket}` did not pass revision {position} within \
     {waited:?} (it is at revision {revision}; its watch: {phase:?})"
)]
pub struct ViewBehind {
    /// The bucket viewed.
    pub bucket: String,
    /// The key pattern viewed.
    pub pattern: String,
    /// The stream position (the entry's revision) waited for.
    pub position: u64,
    /// The revision the view had reached.
    pub revision: u64,
    /// How long the call waited.
    pub waited: Duration,
    /// What the view's watch was doing.
    pub phase: WatchPhase,
}

impl<T> KvView<T> {
    /// Whether the view has applied every entry of its keys up to stream position `position`
    /// (an entry's revision, of any key of the bucket). No request: an atomic load or two.
    pub(crate) fn has_passed(&self, position: u64) -> bool {
        self.revision() >= position
            || self
                .published
                .progress
                .passed_by_lookup
                .load(Ordering::Acquire)
                >= position
    }

    /// Waits until the view has passed `position`, the revision of an entry of its bucket with
    /// key `key`, for at most the view's watch timeout.
    pub(crate) async fn wait_until_passed(
        &self,
        position: u64,
        key: &str,
    ) -> Result<(), ViewBehind> {
        if self.has_passed(position) {
            return Ok(());
        }
        let started = Instant::now();
        let limit = self.published.progress.limit;
        let reached = tokio::time::timeout(limit, self.reach(position, key)).await;
        match reached {
            Ok(Ok(())) => Ok(()),
            // The watch ended (the connection closed for good) or took too long.
            Ok(Err(ViewClosed)) | Err(_) => Err(ViewBehind {
                bucket: self.bucket().to_owned(),
                pattern: self.pattern().to_owned(),
                position,
                revision: self.revision(),
                waited: started.elapsed(),
                phase: self.status().phase(),
            }),
        }
    }

    async fn reach(&self, position: u64, key: &str) -> Result<(), ViewClosed> {
        let progress = &self.published.progress;
        progress.wanted.fetch_max(position, Ordering::AcqRel);
        let mut changes = self.changes.clone();
        if progress.lookup.watches(key) {
            // The view's own watch brings this entry, or a later one of the key.
            let own = tokio::time::timeout(
                OWN_ENTRY_GRACE,
                self.wait_for_revision(&mut changes, position),
            )
            .await;
            if let Ok(reached) = own {
                return reached;
            }
        }
        let mut retry = FIRST_RETRY;
        loop {
            let turn = progress.lookup_turn.lock().await;
            if self.has_passed(position) {
                return Ok(());
            }
            let epoch = *progress.epoch();
            // Every position wanted so far was stored before this lookup is sent: its answer
            // covers them all (this one included, even if a start-over reset the others).
            let covers = progress
                .wanted
                .fetch_max(position, Ordering::AcqRel)
                .max(position);
            let Some(head) = progress.lookup.revision().await else {
                drop(turn);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            };
            self.wait_for_revision(&mut changes, head).await?;
            let same_stream = progress.epoch();
            if *same_stream == epoch {
                progress
                    .passed_by_lookup
                    .fetch_max(covers, Ordering::AcqRel);
            }
        }
    }

    /// Waits until the published state is at `revision` or later.
    async fn wait_for_revision(
        &self,
        changes: &mut watch::Receiver<()>,
        revision: u64,
    ) -> Result<(), ViewClosed> {
        // Marked before looking, so a publication in between is not missed.
        changes.mark_unchanged();
        while self.revision() < revision {
            changes.changed().await.map_err(|_| ViewClosed)?;
        }
        Ok(())
    }
}
