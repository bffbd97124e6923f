//! Dispatch: turning what a subscriber receives into handler calls. It sits above `kv` and
//! `nats`, which know nothing of handlers: the watcher, the group's partitions and the
//! subscriptions yield messages, and the loops here decide when and how each becomes a call.
//!
//! - [`watch_loop`]: a plain Key-Value subscriber, every instance handling every change;
//! - [`group_member`]: a member of a consumer group, handling the partitions the group gives
//!   it and settling each change with the server (acknowledged, retried or given up);
//! - [`subject_loop`]: a subject or stream subscriber, settling each JetStream delivery as
//!   its acknowledgement policy says.
//!
//! All of them call the handler through [`Dispatcher`], the one path every message takes:
//! extract, call, send what the handler returned (to its publishers, and as the reply to a
//! request), turn every way the call can end (a skipped entry, a rejected argument, an `Err`, a
//! panic, a timeout, a publish that failed) into a [`CallOutcome`] instead of an unwinding
//! task, so nothing a handler does stops a loop, and count it as its own [`Outcome`] in the
//! message's span.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tracing::{Instrument as _, Span};

use crate::context::SubscriberContext;
use crate::error::{chain, HandlerError, Rejection};
use crate::extract::Message;
use crate::handler::{call_catching_panics, panic_message, BoxedHandler};
use crate::observe::metrics::{Outcome, SubscriberMetrics};
use crate::observe::trace;

pub(crate) mod group_member;
mod keyed;
mod respond;
pub(crate) mod subject_loop;
pub(crate) mod watch_loop;
pub(crate) mod watched;

pub(crate) use respond::Publication;

/// A log event about `message` (a `&Message`), with the fields that name it: `bucket`, `key`
/// and `revision` for a Key-Value change, `subject` (and `stream`, `sequence` for a JetStream
/// delivery) for a message. A field a message does not have is left out. The fields are read
/// only when the event is enabled.
macro_rules! message_event {
    ($level:ident, $message:expr, $($rest:tt)*) => {
        tracing::$level!(
            bucket = $message.log_fields().bucket,
            key = $message.log_fields().key,
            revision = $message.log_fields().revision,
            subject = $message.log_fields().subject,
            stream = $message.log_fields().stream,
            sequence = $message.log_fields().sequence,
            $($rest)*
        )
    };
}

/// Calls the handler for one entry, in the entry's span, and logs and counts the outcome.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) context: Arc<SubscriberContext>,
    pub(crate) handler: BoxedHandler,
    /// How long one handler call may take before it is abandoned; `None`: no limit.
    pub(crate) handler_timeout: Option<Duration>,
    /// Where each call's outcome and duration are counted; `None` when no exporter reads them.
    pub(crate) metrics: Option<Arc<SubscriberMetrics>>,
    /// The consumer group, for the span of a group member's calls.
    pub(crate) group: Option<Arc<str>>,
    /// Which entries get a span, and how it joins the writer's trace.
    pub(crate) entry_tracing: trace::EntryTracing,
    /// Where the handler's return value is published: its `#[publisher]`s.
    pub(crate) publishers: Arc<[Publication]>,
    /// Whether a request (a message with a reply subject) is answered; `no_reply` turns it off.
    pub(crate) replies: bool,
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

/// Who logs a call that failed. A rejection is always logged by the dispatcher, which alone
/// knows the argument and the bucket: it is never tried again, whoever the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureLog {
    /// The dispatcher, as it happens: a plain watch, which moves on to the next entry.
    Dispatcher,
    /// The caller, which knows whether the change will be tried again: a group member.
    Caller,
}

impl Dispatcher {
    /// Calls the handler with the app's handler timeout and logs the outcome, with a panic
    /// anywhere in it caught and logged, so it can stop neither the key nor the subscriber.
    pub(crate) async fn dispatch_guarded(&self, message: Message) {
        self.call_guarded(&message, self.handler_timeout, FailureLog::Dispatcher)
            .await;
    }

    /// Calls the handler (bounded by `timeout`), a failure logged by `failure_log`, with a
    /// panic anywhere in it, the logging included, caught.
    pub(crate) async fn call_guarded(
        &self,
        message: &Message,
        timeout: Option<Duration>,
        failure_log: FailureLog,
    ) -> CallOutcome {
        let span = trace::entry_span(
            &self.context.name,
            self.group.as_deref(),
            self.entry_tracing,
            message,
        );
        let called = AssertUnwindSafe(self.call(message, timeout, failure_log, &span))
            .catch_unwind()
            .instrument(span.clone())
            .await;
        called.unwrap_or_else(|payload| {
            let panic = panic_message(&*payload).to_owned();
            let label = message.label();
            let _entered = span.enter();
            message_event!(error, message, subscriber = %self.context.name, panic,
                "{label} - panic outside the handler (dropping or logging its call); the subscriber goes on");
            trace::record_failure(&span, "panic", &panic);
            // `call` counts its outcome last, so a panic before that is counted here, once.
            self.count(Outcome::Panic, None);
            CallOutcome::Failed(format!("panic outside the handler: {panic}"))
        })
    }

    fn count(&self, outcome: Outcome, duration: Option<Duration>) {
        if let Some(metrics) = &self.metrics {
            metrics.record(outcome, duration);
        }
    }

    /// Calls the handler; logs a failure if `failure_log` says so, marks `span` failed if the
    /// call failed, and counts the outcome, last.
    async fn call(
        &self,
        message: &Message,
        timeout: Option<Duration>,
        failure_log: FailureLog,
        span: &Span,
    ) -> CallOutcome {
        let log = failure_log == FailureLog::Dispatcher;
        let label = message.label();
        let subscriber = &*self.context.name;
        message_event!(debug, message, subscriber, "{label} - Received");

        let started = self.metrics.is_some().then(Instant::now);
        let call = call_catching_panics(|| self.handler.call(message, &self.context));
        let outcome = match timeout {
            None => call.await,
            Some(limit) => {
                // The abandoned call is dropped with this statement, before the outcome is
                // counted: a panic in its `Drop` is then counted once, as a panic, by the caller.
                let timed = tokio::time::timeout(limit, call).await;
                match timed {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        if log {
                            message_event!(error, message, subscriber, timeout = ?limit,
                                "{label} - handler timed out; abandoned");
                        }
                        let reason = format!("timed out after {limit:?}");
                        trace::record_failure(span, "timeout", &reason);
                        self.answer_failure_if_asked(message, 500, &reason).await;
                        self.count(Outcome::Timeout, None);
                        return CallOutcome::Failed(reason);
                    }
                }
            }
        };
        let took = started.map(|started| started.elapsed());
        let (counted, outcome) = match outcome {
            Ok(reply) => match self.send_output_if_any(message, reply).await {
                Ok(()) => {
                    message_event!(debug, message, subscriber, "{label} - Processed");
                    (Outcome::Ok, CallOutcome::Done)
                }
                Err(error) => {
                    if log {
                        message_event!(error, message, subscriber, error = %error,
                            "{label} - handled, but {error}");
                    }
                    trace::record_failure(span, "publish_error", &error);
                    // The reply follows the publishers, so none was sent: a requester gets
                    // the failure rather than silence.
                    self.answer_failure_if_asked(message, 500, &error).await;
                    (Outcome::Error, CallOutcome::Failed(error))
                }
            },
            Err(HandlerError::Rejected(rejection)) if rejection.is_skip() => {
                message_event!(debug, message, subscriber, reason = %rejection, "{label} - Skipped");
                (Outcome::Skipped, CallOutcome::Done)
            }
            Err(HandlerError::Rejected(rejection)) => {
                let reason = rejection_reason(&rejection);
                let (argument, argument_type) = rejection
                    .argument()
                    .map_or((0, ""), |argument| (argument.position, argument.type_name));
                message_event!(error, message, subscriber, argument, argument_type,
                    error = %chain(&rejection),
                    "{label} - {reason}; handler not called");
                trace::record_failure(span, "decode_error", &reason);
                self.answer_failure_if_asked(message, 400, &reason).await;
                (Outcome::Rejected, CallOutcome::Rejected(reason))
            }
            Err(HandlerError::Failed(error)) => {
                let error = chain(&*error);
                if log {
                    message_event!(error, message, subscriber, error = %error,
                        "{label} - handler failed");
                }
                trace::record_failure(span, "handler_error", &error);
                self.answer_failure_if_asked(message, 500, &error).await;
                (Outcome::Error, CallOutcome::Failed(error))
            }
            Err(HandlerError::Panicked { message: panic }) => {
                if log {
                    message_event!(error, message, subscriber, panic = %panic,
                        "{label} - handler panicked");
                }
                trace::record_failure(span, "panic", &panic);
                let reason = format!("panicked: {panic}");
                self.answer_failure_if_asked(message, 500, &reason).await;
                (Outcome::Panic, CallOutcome::Failed(reason))
            }
        };
        // A skipped or rejected entry's handler never ran: no duration.
        let ran = !matches!(counted, Outcome::Skipped | Outcome::Rejected);
        self.count(counted, took.filter(|_| ran));
        outcome
    }
}

/// What was wrong, and with which argument, as the log line says it:
///
/// ```text
/// argument 2 (`Json<Order>`) rejected the entry: value is not valid JSON for `Order`: expected value at line 1 column 1
/// ```
fn rejection_reason(rejection: &Rejection) -> String {
    let error = chain(rejection);
    match rejection.argument() {
        Some(argument) => format!(
            "argument {} (`{}`) rejected the entry: {error}",
            argument.position, argument.type_name
        ),
        None => format!("an argument rejected the entry: {error}"),
    }
}
