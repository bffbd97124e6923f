//! The watch loop: one task per subscriber that hands each entry of its [`KvWatcher`] to the
//! handler.
//!
//! With `max_workers = 1` (the default) entries are handled one at a time, in revision order.
//! With `N > 1` the loop shards entries over `N` workers by key: a key always goes to the same
//! worker, so its entries are never handled concurrently and stay in revision order, while
//! different keys proceed in parallel. Each worker's queue is short, so a busy worker holds
//! back the watch, and with it the server (flow control), instead of buffering.
//!
//! Nothing a handler does stops the loop: a rejected argument, an `Err`, a panic and a timeout
//! are logged with subscriber, bucket, key and revision, and the next entry is handled.
//! Connection problems are the watcher's: it resumes after the last revision by itself.

use std::any::Any;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::watcher::KvWatcher;
use super::KvMessage;
use crate::context::SubscriberContext;
use crate::handler::{BoxedHandler, HandlerError};

/// Entries waiting per worker when `max_workers > 1`.
const WORKER_QUEUE: usize = 16;

/// One subscriber's loop over its watcher.
pub(crate) struct WatchLoop {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) watcher: KvWatcher,
    pub(crate) max_workers: usize,
}

/// Calls the handler for one entry and logs the outcome.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) context: Arc<SubscriberContext>,
    pub(crate) handler: BoxedHandler,
    /// How long one handler call may take before it is abandoned; `None`: no limit.
    pub(crate) handler_timeout: Option<Duration>,
}

impl WatchLoop {
    /// Handles entries until `cancel` fires. Entries in hand when it fires are finished first;
    /// queued ones are not started.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let name = Arc::clone(&self.dispatcher.context.name);
        if self.max_workers <= 1 {
            self.run_sequential(&cancel).await;
        } else {
            self.run_sharded(&cancel).await;
        }
        tracing::debug!(subscriber = %name, "watch loop stopped");
    }

    async fn run_sequential(mut self, cancel: &CancellationToken) {
        while let Some(entry) = next_entry(&mut self.watcher, cancel, &self.dispatcher).await {
            self.dispatcher.dispatch(entry).await;
        }
    }

    async fn run_sharded(mut self, cancel: &CancellationToken) {
        let mut workers = JoinSet::new();
        let lanes: Vec<mpsc::Sender<KvMessage>> = (0..self.max_workers)
            .map(|_| {
                let (lane, mut queue) = mpsc::channel::<KvMessage>(WORKER_QUEUE);
                let dispatcher = self.dispatcher.clone();
                let cancel = cancel.clone();
                workers.spawn(async move {
                    loop {
                        let entry = tokio::select! {
                            biased;
                            () = cancel.cancelled() => break,
                            entry = queue.recv() => entry,
                        };
                        let Some(entry) = entry else { break };
                        dispatcher.dispatch(entry).await;
                    }
                });
                lane
            })
            .collect();
        while let Some(entry) = next_entry(&mut self.watcher, cancel, &self.dispatcher).await {
            let lane = &lanes[lane_of(entry.key(), lanes.len())];
            let sent = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                sent = lane.send(entry) => sent,
            };
            if sent.is_err() {
                break;
            }
        }
        drop(lanes);
        while workers.join_next().await.is_some() {}
    }
}

/// The next entry, or `None` on cancellation or when the connection is closed for good.
async fn next_entry(
    watcher: &mut KvWatcher,
    cancel: &CancellationToken,
    dispatcher: &Dispatcher,
) -> Option<KvMessage> {
    let entry = tokio::select! {
        biased;
        () = cancel.cancelled() => return None,
        entry = watcher.next() => entry,
    };
    if entry.is_none() {
        tracing::warn!(subscriber = %dispatcher.context.name, "connection closed; watch loop ends");
    }
    entry
}

/// The worker a key is handled by: the same one for every entry of the key.
fn lane_of(key: &str, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    // The remainder is below `lanes`, so it fits in usize.
    (hasher.finish() % lanes as u64) as usize
}

impl Dispatcher {
    async fn dispatch(&self, message: KvMessage) {
        let message = Arc::new(message);
        let (bucket, key, revision) = (message.bucket(), message.key(), message.revision());
        let subscriber = &*self.context.name;
        tracing::debug!(subscriber, operation = %message.operation(),
            "{bucket} | {key} | {revision} - Received");

        let call = AssertUnwindSafe(
            self.handler
                .call(Arc::clone(&message), Arc::clone(&self.context)),
        )
        .catch_unwind();
        let outcome = match self.handler_timeout {
            None => call.await,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::error!(
                        subscriber, bucket, key, revision, timeout = ?limit,
                        "{bucket} | {key} | {revision} - handler timed out; abandoned"
                    );
                    return;
                }
            },
        };
        match outcome {
            Ok(Ok(())) => {
                tracing::debug!(subscriber, "{bucket} | {key} | {revision} - Processed");
            }
            Ok(Err(HandlerError::Rejected(rejection))) if rejection.is_skip() => {
                tracing::debug!(subscriber, reason = %rejection,
                    "{bucket} | {key} | {revision} - Skipped");
            }
            Ok(Err(HandlerError::Rejected(rejection))) => tracing::error!(
                subscriber, bucket, key, revision, reason = %rejection,
                "{bucket} | {key} | {revision} - could not decode the entry; handler not called"
            ),
            Ok(Err(HandlerError::Failed(error))) => tracing::error!(
                subscriber,
                bucket,
                key,
                revision,
                error = format!("{error:#}"),
                "{bucket} | {key} | {revision} - handler failed"
            ),
            Err(panic) => tracing::error!(
                subscriber,
                bucket,
                key,
                revision,
                panic = panic_message(&*panic),
                "{bucket} | {key} | {revision} - handler panicked"
            ),
        }
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic payload)")
}

#[cfg(test)]
mod tests {
    use super::lane_of;

    #[test]
    fn a_key_always_goes_to_the_same_lane_and_keys_spread() {
        assert_eq!(lane_of("users.1", 64), lane_of("users.1", 64));
        let used: std::collections::HashSet<_> =
            (0..1000).map(|i| lane_of(&format!("k.{i}"), 64)).collect();
        assert!(used.len() > 60, "{} of 64 lanes used", used.len());
    }
}
