//! The watch loop: one task per subscriber that hands each entry of its [`KvWatcher`] to the
//! handler. It sits above `kv`, which knows nothing of handlers: the watcher yields entries,
//! and this loop decides when and how each becomes a handler call.
//!
//! With `max_workers = 1` (the default) entries are handled one at a time, in revision order.
//! With `N > 1` up to `N` calls run at once, each in its own task; an entry whose key already
//! has a call in flight waits behind it, so the entries of one key are never handled
//! concurrently and stay in revision order, while other keys go ahead. At most `N` entries
//! wait; beyond that the loop stops reading, which holds back the watch and with it the server
//! (flow control) instead of buffering.
//!
//! Nothing a handler does stops the loop: a rejected argument, an `Err`, a panic and a timeout
//! are logged with subscriber, bucket, key and revision, and the next entry is handled. That
//! includes a panic outside the handler's own future (the `Drop` of a call abandoned at its
//! timeout, a `Display` of the handler's error while logging): each dispatch is guarded as a
//! whole, and with `max_workers > 1` a call task that ends in any way frees its key, which
//! the loop knows by task id.
//! Connection problems are the watcher's: it resumes after the last revision by itself.
//!
//! The loop also tells the app when the subscriber has *handled* its bucket's state (the
//! watcher only knows when it was read): with `max_workers > 1`, once the calls for every entry
//! read before the watcher's catch-up have finished.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::keyed::KeyedCalls;
use super::watched::Watched;
use super::Dispatcher;
use crate::extract::Message;
use crate::kv::watcher::{CatchUp, KvWatcher, WatchEvent};

/// Set by a watch loop once its subscriber has handled the bucket's state (`false` again while
/// it handles a new stream's state after a start over).
pub(crate) type HandledSignal = tokio::sync::watch::Sender<bool>;

/// One subscriber's loop over its watcher.
pub(crate) struct WatchLoop {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) watcher: KvWatcher,
    /// Keys or objects.
    pub(crate) watched: Watched,
    pub(crate) max_workers: usize,
    pub(crate) handled: Arc<HandledSignal>,
}

/// Counts the entries of the bucket's state still being handled, and announces the catch-up
/// once the watcher has read the state and the last of them is done.
struct CatchUpTracker {
    /// The watcher's catch-up, and when it was seen: entries read from then on are changes.
    read: Option<(CatchUp, Instant)>,
    /// Entries of the state taken and not yet handled.
    outstanding: usize,
    announced: bool,
}

impl CatchUpTracker {
    fn new() -> Self {
        Self {
            read: None,
            outstanding: 0,
            announced: false,
        }
    }

    /// Whether an entry read now belongs to the bucket's state; counts it if so.
    fn taken(&mut self) -> bool {
        let in_state = self.read.is_none();
        self.outstanding += usize::from(in_state);
        in_state
    }

    fn handled(&mut self, in_state: bool, signal: &HandledSignal, subscriber: &str) {
        if in_state {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.announce_if_done(signal, subscriber);
        }
    }

    fn watcher_caught_up(&mut self, catch_up: CatchUp, signal: &HandledSignal, subscriber: &str) {
        self.read = Some((catch_up, Instant::now()));
        self.announce_if_done(signal, subscriber);
    }

    fn started_over(&mut self, signal: &HandledSignal) {
        *self = Self::new();
        signal.send_replace(false);
    }

    fn announce_if_done(&mut self, signal: &HandledSignal, subscriber: &str) {
        let Some((read, seen)) = self.read else {
            return;
        };
        if self.announced || self.outstanding > 0 {
            return;
        }
        self.announced = true;
        // From the start of the watch, as the watcher counts, to the last call's end.
        let handled = CatchUp {
            entries: read.entries,
            elapsed: read.elapsed + seen.elapsed(),
        };
        tracing::info!(subscriber, entries = handled.entries, read_in = ?read.elapsed,
            handled_in = ?handled.elapsed,
            "subscriber `{subscriber}` caught up: handled the {} entries of its bucket's state in {:?}",
            handled.entries, handled.elapsed);
        signal.send_replace(true);
    }
}

impl WatchLoop {
    /// Handles entries until `cancel` fires. Entries in hand when it fires are finished first;
    /// queued ones are not started.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let name = Arc::clone(&self.dispatcher.context.name);
        if self.max_workers <= 1 {
            self.run_sequential(&cancel).await;
        } else {
            self.run_concurrent(&cancel).await;
        }
        tracing::debug!(subscriber = %name, "watch loop stopped");
    }

    async fn run_sequential(mut self, cancel: &CancellationToken) {
        let mut catch_up = CatchUpTracker::new();
        let subscriber = Arc::clone(&self.dispatcher.context.name);
        while let Some(event) = next_event(&mut self.watcher, cancel, &self.dispatcher).await {
            match event {
                WatchEvent::Entry(entry) => {
                    let Some(message) = self.watched.message(entry, &self.dispatcher) else {
                        continue;
                    };
                    let in_state = catch_up.taken();
                    self.dispatcher.dispatch_guarded(message).await;
                    catch_up.handled(in_state, &self.handled, &subscriber);
                }
                WatchEvent::CaughtUp(read) => {
                    catch_up.watcher_caught_up(read, &self.handled, &subscriber);
                }
                WatchEvent::StartedOver => catch_up.started_over(&self.handled),
            }
        }
    }

    /// Up to `max_workers` calls at once; an entry whose key is being handled waits for it.
    async fn run_concurrent(mut self, cancel: &CancellationToken) {
        let dispatcher = self.dispatcher.clone();
        // Each call is tagged with whether its entry belongs to the bucket's state: a call
        // that ends in any way (a panic included) still counts towards the catch-up.
        let mut calls: KeyedCalls<Message, bool> =
            KeyedCalls::new(self.max_workers, move |message: Message| {
                let dispatcher = dispatcher.clone();
                async move { dispatcher.dispatch_guarded(message).await }
            });
        let mut catch_up = CatchUpTracker::new();
        let subscriber = Arc::clone(&self.dispatcher.context.name);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(in_state) = calls.join_next(), if !calls.is_idle() => {
                    catch_up.handled(in_state, &self.handled, &subscriber);
                }
                // Read on only while there is room: a full house holds back the watch, and
                // with it the server, instead of buffering.
                event = self.watcher.next_event(), if calls.has_room() => {
                    let entry = match event {
                        Some(WatchEvent::Entry(entry)) => entry,
                        Some(WatchEvent::CaughtUp(read)) => {
                            catch_up.watcher_caught_up(read, &self.handled, &subscriber);
                            continue;
                        }
                        Some(WatchEvent::StartedOver) => {
                            catch_up.started_over(&self.handled);
                            continue;
                        }
                        None => {
                            tracing::warn!(subscriber = %subscriber,
                                "connection closed; watch loop ends");
                            break;
                        }
                    };
                    let Some(message) = self.watched.message(entry, &self.dispatcher) else {
                        continue;
                    };
                    let in_state = catch_up.taken();
                    calls.submit(Some(message.key().to_owned()), message, in_state);
                }
            }
        }
        // Entries still waiting are not started; calls in flight finish (the caller bounds how
        // long, and aborting this task aborts them).
        calls.take_waiting();
        calls.finish().await;
    }
}

/// The next event, or `None` on cancellation or when the connection is closed for good.
async fn next_event(
    watcher: &mut KvWatcher,
    cancel: &CancellationToken,
    dispatcher: &Dispatcher,
) -> Option<WatchEvent> {
    let event = tokio::select! {
        biased;
        () = cancel.cancelled() => return None,
        event = watcher.next_event() => event,
    };
    if event.is_none() {
        tracing::warn!(subscriber = %dispatcher.context.name, "connection closed; watch loop ends");
    }
    event
}
