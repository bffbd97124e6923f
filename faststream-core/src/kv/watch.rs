//! The watch loop: one task per subscriber that hands each entry of its [`KvWatcher`] to the
//! handler, one at a time, in revision order.
//!
//! Nothing a handler does stops the loop: a rejected argument, an `Err` and a panic are logged
//! with subscriber, bucket, key and revision, and the next entry is handled. Connection
//! problems are the watcher's: it resumes after the last revision by itself.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::watcher::KvWatcher;
use super::KvMessage;
use crate::context::SubscriberContext;
use crate::handler::{BoxedHandler, HandlerError};

/// One subscriber's loop over its watcher.
pub(crate) struct WatchLoop {
    pub(crate) context: Arc<SubscriberContext>,
    pub(crate) handler: BoxedHandler,
    pub(crate) watcher: KvWatcher,
    /// How long one handler call may take before it is abandoned; `None`: no limit.
    pub(crate) handler_timeout: Option<Duration>,
}

impl WatchLoop {
    /// Handles entries until `cancel` fires. The entry in hand when it fires is finished first.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        loop {
            let entry = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                entry = self.watcher.next() => entry,
            };
            match entry {
                Some(entry) => self.dispatch(entry).await,
                None => {
                    tracing::warn!(subscriber = %self.context.name, "connection closed; watch loop ends");
                    break;
                }
            }
        }
        tracing::debug!(subscriber = %self.context.name, "watch loop stopped");
    }

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
