//! Reading a watch: the state machine behind `next_event` and the `Stream` impl. It takes
//! what the active consumer delivered, answers the server's control traffic, notices gaps,
//! silences and reconnections (which re-create the consumer), and tells when the watch has
//! caught up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_nats::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

use super::consumer::{head_revision, next_delay, MAX_HEAD_CHECK_DELAY};
use super::delivery::parse_reply;
use super::status::{CatchUp, RecreateReason, WatchEvent, WatchPhase};
use super::KvWatcher;
use crate::error::{chain, BoxError};
use crate::kv::message::{KvMessage, MessageParts, Operation};

/// How often a head lookup that keeps failing is logged again at warn level.
const HEAD_CHECK_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl KvWatcher {
    /// The next entry or change of state, as [`next_event`](Self::next_event) returns it.
    ///
    /// An entry is taken from the subscription only in a poll that returns it, and everything
    /// else this waits for (a consumer being created, a head check) runs as a task of its own,
    /// so a caller that stops polling loses nothing.
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.closed {
                return Poll::Ready(None);
            }
            if self
                .head_check
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                if let Poll::Ready(head) = self.poll_head_check(cx) {
                    self.head_checked(head);
                    continue;
                }
            }
            if self.paged.is_some() {
                match ready!(self.poll_paged(cx)) {
                    Some(event) => return Poll::Ready(Some(event)),
                    None => continue,
                }
            }
            let Some(active) = self.active.as_mut() else {
                if !ready!(self.poll_consumer(cx)) {
                    return Poll::Ready(None);
                }
                continue;
            };
            // In the order of their urgency: what arrived, then the reasons to re-create.
            match active.subscriber.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => {
                    active.last_heard = tokio::time::Instant::now();
                    let entry = self.read(message);
                    if let Some(entry) = entry {
                        if !self.caught_up_announced {
                            self.catch_up_entries += 1;
                        }
                        self.check_caught_up();
                        return Poll::Ready(Some(WatchEvent::Entry(entry)));
                    }
                    self.check_caught_up();
                    continue;
                }
                Poll::Ready(None) => {
                    self.closed = true;
                    self.status.set_phase(WatchPhase::Closed);
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            if active.silence.as_mut().poll(cx).is_ready() {
                let timeout = self.options.timeout;
                let silent_from = active.last_heard + timeout;
                if tokio::time::Instant::now() < silent_from {
                    // Heard from the server since the timer was set.
                    active.silence.as_mut().reset(silent_from);
                } else {
                    self.rewatch(
                        RecreateReason::Silence,
                        format_args!("nothing heard from the server for {timeout:?}"),
                    );
                }
                continue;
            }
            if self.reconnects.poll(cx).is_ready() {
                self.rewatch(
                    RecreateReason::Reconnected,
                    format_args!("the connection was re-established"),
                );
                continue;
            }
            if let Poll::Ready(head) = self.poll_head_check(cx) {
                self.head_checked(head);
                continue;
            }
            return Poll::Pending;
        }
    }

    /// The result of the running head check, clearing it; pending if there is none.
    fn poll_head_check(&mut self, cx: &mut Context<'_>) -> Poll<Result<u64, BoxError>> {
        let Some(check) = self.head_check.as_mut() else {
            return Poll::Pending;
        };
        // The check goes on while nobody polls it.
        let head = ready!(Pin::new(check).poll(cx)).unwrap_or_else(|error| Err(error.into()));
        self.head_check = None;
        Poll::Ready(head)
    }

    /// Looks up the head of the watched keys in the background (one at a time), after the
    /// pause that failed lookups call for.
    fn start_head_check(&mut self) {
        if self.head_check.is_some() {
            return;
        }
        let jetstream = self.jetstream.clone();
        let stream = self.stream_name.clone();
        let filter = self.filter_subject.clone();
        let delay = self.head_check_delay;
        self.head_check = Some(tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            head_revision(&jetstream, &stream, &filter).await
        }));
    }

    /// Caught up if the watch has read as far as the head found. A failed lookup confirms
    /// nothing: the watch stays catching up and looks again after a pause (100 ms, doubling up
    /// to [`MAX_HEAD_CHECK_DELAY`]). Trusting the server's count instead would report a watch
    /// caught up that may not be (the reason for the check).
    fn head_checked(&mut self, head: Result<u64, BoxError>) {
        let read = self.position.last_revision.unwrap_or(0);
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                self.head_check_failed(&*error);
                return;
            }
        };
        if self.head_check_failures > 0 {
            tracing::info!(bucket = %self.bucket, filter = %self.filter_subject,
                failures = self.head_check_failures, "the head of the watched keys was looked up");
        }
        self.head_check_failures = 0;
        self.head_check_delay = Duration::ZERO;
        self.status.set_head_unconfirmed(false);
        if head > read {
            tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject, head, read,
                "nothing pending, but the head is further: catching up on");
            self.head_target = Some(head);
        } else {
            self.position.caught_up = true;
        }
        self.check_caught_up();
    }

    /// Logs a failed lookup of the head (at warn level the first time, then once a minute)
    /// and starts the next one after a pause.
    fn head_check_failed(&mut self, error: &(dyn std::error::Error + 'static)) {
        self.head_check_failures += 1;
        self.head_check_delay = next_delay(self.head_check_delay, MAX_HEAD_CHECK_DELAY);
        self.status.set_head_unconfirmed(true);
        let failures = self.head_check_failures;
        let retry_in = self.head_check_delay;
        if self
            .head_check_warned
            .is_none_or(|at| at.elapsed() >= HEAD_CHECK_WARNING_INTERVAL)
        {
            self.head_check_warned = Some(Instant::now());
            tracing::warn!(bucket = %self.bucket, filter = %self.filter_subject, failures,
                ?retry_in, error = %chain(error),
                "could not look up the head of the watched keys to confirm the catch-up; the \
                 watch stays catching up and looks again");
        } else {
            tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject, failures,
                ?retry_in, error = %chain(error), "head lookup failed again");
        }
        self.start_head_check();
    }

    /// Queues the catch-up event the first time the position says the state is delivered.
    pub(super) fn check_caught_up(&mut self) {
        if self.position.caught_up && !self.caught_up_announced {
            self.caught_up_announced = true;
            let catch_up = CatchUp {
                entries: self.catch_up_entries,
                elapsed: self.catch_up_started.elapsed(),
            };
            self.status.caught_up(catch_up);
            self.events.push_back(WatchEvent::CaughtUp(catch_up));
        }
    }

    /// Turns one message of the consumer into an entry, or handles it as control traffic.
    fn read(&mut self, message: async_nats::Message) -> Option<KvMessage> {
        if message.status.is_some() {
            self.control(message);
            return None;
        }
        let active = self.active.as_mut()?;
        let Some(delivery) = message.reply.as_deref().and_then(parse_reply) else {
            tracing::warn!(bucket = %self.bucket, subject = %message.subject,
                "watch message without delivery metadata; skipped");
            return None;
        };
        if delivery.consumer_sequence != active.consumer_sequence + 1 {
            let expected = active.consumer_sequence + 1;
            self.rewatch(
                RecreateReason::Gap,
                format_args!(
                    "gap in the watch: consumer sequence {} after {}",
                    delivery.consumer_sequence,
                    expected - 1
                ),
            );
            return None;
        }
        active.consumer_sequence = delivery.consumer_sequence;
        self.status.set_pending(delivery.pending);
        if !self.position.caught_up {
            if self
                .head_target
                .is_some_and(|head| delivery.stream_sequence >= head)
            {
                self.position.caught_up = true;
            } else if delivery.pending == 0 {
                self.start_head_check();
            }
        }
        if self
            .position
            .last_revision
            .is_some_and(|last| delivery.stream_sequence <= last)
        {
            return None;
        }
        self.position.last_revision = Some(delivery.stream_sequence);

        let Some(key) = message.subject.as_str().strip_prefix(&self.key_prefix) else {
            tracing::warn!(bucket = %self.bucket, subject = %message.subject,
                "watch message outside the bucket; skipped");
            return None;
        };
        let operation = Operation::from_headers(message.headers.as_ref());
        if operation != Operation::Put && self.options.ignore_deletes {
            return None;
        }
        let value_size = if self.options.without_values() {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Size"))
                .and_then(|size| size.as_str().parse().ok())
                .unwrap_or(0)
        } else {
            message.payload.len()
        };
        let created = time::OffsetDateTime::from_unix_timestamp_nanos(delivery.timestamp_nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Some(KvMessage::from(MessageParts {
            bucket: Arc::clone(&self.bucket),
            key: key.to_owned(),
            value: message.payload,
            value_size,
            revision: delivery.stream_sequence,
            delta: delivery.pending,
            created,
            operation,
            headers: message.headers,
        }))
    }

    /// Flow-control requests and stall notices are answered; an idle heartbeat that reports a
    /// later consumer sequence than the last one received means entries were lost: re-create.
    fn control(&mut self, message: async_nats::Message) {
        if message.status != Some(StatusCode::IDLE_HEARTBEAT) {
            tracing::debug!(bucket = %self.bucket, status = ?message.status, "watch status message");
            return;
        }
        let headers = message.headers.as_ref();
        let stalled = headers
            .and_then(|headers| headers.get("Nats-Consumer-Stalled"))
            .map(|subject| subject.as_str().to_owned());
        for reply in message.reply.iter().map(|s| s.to_string()).chain(stalled) {
            // Sent by a task: a poll cannot wait for room in the client's queue, and a reply
            // must not be lost to a caller that stops polling.
            let client = self.client.clone();
            let bucket = Arc::clone(&self.bucket);
            tokio::spawn(async move {
                if let Err(error) = client.publish(reply, Bytes::new()).await {
                    tracing::debug!(%bucket, %error, "could not answer flow control");
                }
            });
        }
        let last_sent = headers
            .and_then(|headers| headers.get("Nats-Last-Consumer"))
            .and_then(|sequence| sequence.as_str().parse::<u64>().ok());
        if let (Some(last_sent), Some(active)) = (last_sent, self.active.as_ref()) {
            if last_sent > active.consumer_sequence {
                let received = active.consumer_sequence;
                self.rewatch(
                    RecreateReason::Gap,
                    format_args!(
                        "the server sent entries up to {last_sent} but only {received} arrived"
                    ),
                );
            }
        }
    }
}
