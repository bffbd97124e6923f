//! The watch loop: one task per subscriber that feeds each change of the watched keys to the
//! handler, one at a time, in revision order.
//!
//! Nothing a handler does stops the loop: a rejected argument, an `Err` and a panic are logged
//! with subscriber, bucket, key and revision, and the next entry is handled. Transient watch
//! errors (missed heartbeats while the server is away) are logged and polling goes on; if the
//! watch ends, it is re-created from the last revision handed to the handler.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Watch};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::bucket::error_chain;
use super::{KeyValue, KvMessage};
use crate::context::SubscriberContext;
use crate::handler::{BoxedHandler, HandlerError};

const FIRST_REWATCH_DELAY: Duration = Duration::from_millis(100);
const MAX_REWATCH_DELAY: Duration = Duration::from_secs(5);

/// One subscriber's watch of one bucket.
pub(crate) struct WatchLoop {
    context: Arc<SubscriberContext>,
    handler: BoxedHandler,
    store: KeyValue,
    /// The revision last handed to the handler: entries at or below it are duplicates, and a
    /// re-created watch starts after it.
    last_revision: Option<u64>,
}

impl WatchLoop {
    pub(crate) fn new(
        context: Arc<SubscriberContext>,
        handler: BoxedHandler,
        store: KeyValue,
    ) -> Self {
        Self {
            context,
            handler,
            store,
            last_revision: None,
        }
    }

    fn filter(&self) -> &str {
        self.context.pattern.filter()
    }

    /// Creates the server-side watch: the latest value of every matching key, then every change;
    /// after a restart of the watch, every change after the last handled revision.
    pub(crate) async fn watch(&self) -> Result<Watch, String> {
        let watch = match self.last_revision {
            None => self.store.watch_with_history(self.filter()).await,
            Some(revision) => {
                self.store
                    .watch_from_revision(self.filter(), revision + 1)
                    .await
            }
        };
        watch.map_err(|error| error_chain(&error))
    }

    /// Handles entries until `cancel` fires. The entry in hand when it fires is finished first.
    pub(crate) async fn run(mut self, mut watch: Watch, cancel: CancellationToken) {
        let mut rewatch_delay = FIRST_REWATCH_DELAY;
        loop {
            let item = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                item = watch.next() => item,
            };
            match item {
                Some(Ok(entry)) => {
                    rewatch_delay = FIRST_REWATCH_DELAY;
                    self.dispatch(entry).await;
                }
                Some(Err(error)) => {
                    // A missed heartbeat or a consumer being re-created: the stream goes on.
                    tracing::warn!(
                        subscriber = %self.context.name,
                        bucket = %self.store.name,
                        error = %error_chain(&error),
                        "watch interrupted; waiting for it to resume"
                    );
                }
                None => {
                    tracing::warn!(
                        subscriber = %self.context.name,
                        bucket = %self.store.name,
                        last_revision = ?self.last_revision,
                        "watch ended; re-creating it"
                    );
                    match self.rewatch(&cancel, &mut rewatch_delay).await {
                        Some(new_watch) => watch = new_watch,
                        None => break,
                    }
                }
            }
        }
        tracing::debug!(subscriber = %self.context.name, "watch loop stopped");
    }

    /// Re-creates the watch with backoff (re-creating in a tight loop leaks server consumers).
    /// `None` when cancelled first.
    async fn rewatch(&self, cancel: &CancellationToken, delay: &mut Duration) -> Option<Watch> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(*delay) => {}
            }
            *delay = (*delay * 2).min(MAX_REWATCH_DELAY);
            match self.watch().await {
                Ok(watch) => return Some(watch),
                Err(error) => tracing::warn!(
                    subscriber = %self.context.name,
                    bucket = %self.store.name,
                    retry_in = ?delay,
                    %error,
                    "could not re-create the watch"
                ),
            }
        }
    }

    async fn dispatch(&mut self, entry: Entry) {
        if self
            .last_revision
            .is_some_and(|last| entry.revision <= last)
        {
            tracing::debug!(
                subscriber = %self.context.name,
                key = %entry.key,
                revision = entry.revision,
                "skipping an entry delivered twice"
            );
            return;
        }
        self.last_revision = Some(entry.revision);
        let message = Arc::new(KvMessage::from(entry));
        let (bucket, key, revision) = (message.bucket(), message.key(), message.revision());
        let subscriber = &*self.context.name;
        tracing::debug!(subscriber, operation = %message.operation(),
            "{bucket} | {key} | {revision} - Received");

        let call = self
            .handler
            .call(Arc::clone(&message), Arc::clone(&self.context));
        match AssertUnwindSafe(call).catch_unwind().await {
            Ok(Ok(())) => {
                tracing::debug!(subscriber, "{bucket} | {key} | {revision} - Processed");
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
