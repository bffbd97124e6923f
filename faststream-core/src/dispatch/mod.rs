//! Dispatch: turning what a subscriber receives into handler calls. It sits above `kv`, which
//! knows nothing of handlers: the watcher and the group's partitions yield changes, and the
//! loops here decide when and how each becomes a call.
//!
//! - [`watch_loop`]: a plain subscriber, every instance handling every change;
//! - [`group_member`]: a member of a consumer group, handling the partitions the group gives
//!   it and settling each change with the server (acknowledged, retried or given up).
//!
//! Both call the handler through [`Dispatcher`], which turns every way a call can end (a
//! rejected argument, an `Err`, a panic, a timeout) into a [`CallOutcome`] instead of an
//! unwinding task, so nothing a handler does stops a loop.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;

use crate::context::SubscriberContext;
use crate::error::{chain, HandlerError};
use crate::handler::{call_catching_panics, panic_message, BoxedHandler};
use crate::kv::message::KvMessage;

pub(crate) mod group_member;
pub(crate) mod watch_loop;

/// Calls the handler for one entry and logs the outcome.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) context: Arc<SubscriberContext>,
    pub(crate) handler: BoxedHandler,
    /// How long one handler call may take before it is abandoned; `None`: no limit.
    pub(crate) handler_timeout: Option<Duration>,
}

/// How one handler call ended.
#[derive(Debug)]
pub(crate) enum CallOutcome {
    /// The handler returned `Ok`, or an extractor chose to skip the entry (a `Json<T>` of a
    /// deletion).
    Done,
    /// The handler's arguments could not be built from the entry; calling again cannot help.
    Rejected(String),
    /// The handler returned `Err`, panicked, or ran past its timeout.
    Failed(String),
}

impl Dispatcher {
    /// [`dispatch`](Self::dispatch), with a panic anywhere in it caught and logged, so it can
    /// stop neither the key nor the subscriber.
    pub(crate) async fn dispatch_guarded(&self, message: KvMessage) {
        self.call_guarded(message, self.handler_timeout, true).await;
    }

    /// Calls the handler (bounded by `timeout`), logging the outcome if `log` (else the caller
    /// does), with a panic anywhere in it, the logging included, caught.
    pub(crate) async fn call_guarded(
        &self,
        message: KvMessage,
        timeout: Option<Duration>,
        log: bool,
    ) -> CallOutcome {
        let (key, revision) = (message.key().to_owned(), message.revision());
        let called = AssertUnwindSafe(self.call(message, timeout, log))
            .catch_unwind()
            .await;
        called.unwrap_or_else(|payload| {
            let panic = panic_message(&*payload).to_owned();
            tracing::error!(subscriber = %self.context.name, key, revision, panic,
                "{key} | {revision} - panic outside the handler (dropping or logging its call); the watch goes on");
            CallOutcome::Failed(format!("panic outside the handler: {panic}"))
        })
    }

    async fn call(&self, message: KvMessage, timeout: Option<Duration>, log: bool) -> CallOutcome {
        let (bucket, key, revision) = (message.bucket(), message.key(), message.revision());
        let subscriber = &*self.context.name;
        tracing::debug!(subscriber, operation = %message.operation(),
            "{bucket} | {key} | {revision} - Received");

        let call = call_catching_panics(|| self.handler.call(&message, &self.context));
        let outcome = match timeout {
            None => call.await,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    if log {
                        tracing::error!(
                            subscriber, bucket, key, revision, timeout = ?limit,
                            "{bucket} | {key} | {revision} - handler timed out; abandoned"
                        );
                    }
                    return CallOutcome::Failed(format!("timed out after {limit:?}"));
                }
            },
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(subscriber, "{bucket} | {key} | {revision} - Processed");
                CallOutcome::Done
            }
            Err(HandlerError::Rejected(rejection)) if rejection.is_skip() => {
                tracing::debug!(subscriber, reason = %rejection,
                    "{bucket} | {key} | {revision} - Skipped");
                CallOutcome::Done
            }
            Err(HandlerError::Rejected(rejection)) => {
                let reason = chain(&rejection);
                if log {
                    tracing::error!(subscriber, bucket, key, revision, reason = %reason,
                        "{bucket} | {key} | {revision} - could not decode the entry; handler not called");
                }
                CallOutcome::Rejected(reason)
            }
            Err(HandlerError::Failed(error)) => {
                let error = chain(&*error);
                if log {
                    tracing::error!(subscriber, bucket, key, revision, error = %error,
                        "{bucket} | {key} | {revision} - handler failed");
                }
                CallOutcome::Failed(error)
            }
            Err(HandlerError::Panicked { message }) => {
                if log {
                    tracing::error!(subscriber, bucket, key, revision, panic = %message,
                        "{bucket} | {key} | {revision} - handler panicked");
                }
                CallOutcome::Failed(format!("panicked: {message}"))
            }
        }
    }
}
