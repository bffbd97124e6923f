//! Replacing a watch's consumer: requesting a new one (after the last revision delivered),
//! installing it once the server confirms it, and deleting the ones it replaces or that may
//! exist from unanswered requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{push, AckPolicy, ReplayPolicy};

use super::consumer::{
    create, delete_consumer, next_delay, CreateConsumerRequest, CreateFailure, Created,
    MAX_MISSING_BUCKET_DELAY, MAX_REWATCH_DELAY,
};
use super::status::{RecreateReason, WatchEvent, WatchPhase};
use super::{ActiveConsumer, KvWatcher};
use crate::error::{chain, WatchError};

/// How often a bucket that stays missing is logged again at warn level.
const MISSING_BUCKET_WARN_EVERY: Duration = Duration::from_secs(60);

impl KvWatcher {
    /// The next creation request, under a name of its own (recorded as unconfirmed until the
    /// server confirms it).
    pub(super) fn creation_request(
        &mut self,
        connection_wait: Option<Duration>,
    ) -> CreateConsumerRequest {
        self.creation_requests += 1;
        let name = format!("{}_{}", self.name_prefix, self.creation_requests);
        self.unconfirmed.push(name.clone());
        CreateConsumerRequest {
            jetstream: self.jetstream.clone(),
            client: self.client.clone(),
            stream_name: self.stream_name.clone(),
            name,
            config: push::Config {
                description: Some(self.description.clone()),
                ack_policy: AckPolicy::None,
                replay_policy: ReplayPolicy::Instant,
                filter_subject: self.filter_subject.clone(),
                headers_only: self.options.without_values(),
                flow_control: true,
                idle_heartbeat: self.options.idle_heartbeat(),
                inactive_threshold: self.options.inactive_threshold,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            },
            start_at: self.options.start_at(),
            position: self.position,
            delay: self.delay,
            connection_wait,
        }
    }

    /// Polls the consumer being created (starting a creation if none is running), retrying
    /// with backoff until one is confirmed. `false` once the connection is closed for good.
    pub(super) fn poll_consumer(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.closed {
                return Poll::Ready(false);
            }
            let creating = match self.creating.as_mut() {
                Some(creating) => creating,
                None => {
                    let request = self.creation_request(None);
                    self.creating.insert(tokio::spawn(create(request)))
                }
            };
            // The task goes on while nobody polls it.
            let outcome = ready!(Pin::new(creating).poll(cx));
            self.creating = None;
            match outcome {
                Ok(Ok(created)) => {
                    let resumed = !created.new_stream && self.missing.is_none();
                    self.install(created);
                    if resumed {
                        tracing::info!(
                            bucket = %self.bucket,
                            filter = %self.filter_subject,
                            after_revision = ?self.position.last_revision,
                            "watch re-created"
                        );
                    }
                    return Poll::Ready(true);
                }
                Ok(Err(failure)) => self.failed(failure),
                Err(error) => {
                    tracing::warn!(bucket = %self.bucket, %error,
                        "the task creating the watch failed; retrying");
                    self.delay = next_delay(self.delay, MAX_REWATCH_DELAY);
                }
            }
        }
    }

    /// Notes a failed attempt: delete what it may have created, back off, log.
    fn failed(&mut self, failure: CreateFailure) {
        // The name of the attempt that just failed is the last one recorded. Deleted now rather
        // than after the next success, so that a long run of failures piles up nothing.
        if let Some(name) = self.unconfirmed.pop() {
            if failure.maybe_created {
                self.delete_consumers(vec![name]);
            }
        }
        if failure.closed {
            tracing::warn!(bucket = %self.bucket, filter = %self.filter_subject,
                "the NATS connection is closed; the watch ends");
            self.closed = true;
            self.status.set_phase(WatchPhase::Closed);
            return;
        }
        if let WatchError::BucketMissing { stream } = &failure.error {
            self.delay = next_delay(self.delay, MAX_MISSING_BUCKET_DELAY);
            let now = Instant::now();
            match &mut self.missing {
                None => {
                    tracing::warn!(bucket = %self.bucket, %stream,
                        "bucket `{}` does not exist (deleted?); the watch waits for it to be \
                         created again, looking it up at most every {MAX_MISSING_BUCKET_DELAY:?} \
                         (it does not create the bucket)", self.bucket);
                    self.missing = Some((now, now));
                }
                Some((since, warned))
                    if now.duration_since(*warned) >= MISSING_BUCKET_WARN_EVERY =>
                {
                    tracing::warn!(bucket = %self.bucket, missing_for = ?since.elapsed(),
                        "bucket `{}` is still missing; the watch keeps waiting for it", self.bucket);
                    *warned = now;
                }
                Some(_) => tracing::debug!(bucket = %self.bucket, "bucket still missing"),
            }
            return;
        }
        self.delay = next_delay(self.delay, MAX_REWATCH_DELAY);
        tracing::warn!(
            bucket = %self.bucket,
            filter = %self.filter_subject,
            retry_in = ?self.delay,
            error = %chain(&failure.error),
            "could not re-create the watch"
        );
    }

    /// Makes a confirmed consumer the active one; deletes what earlier attempts may have made.
    pub(super) fn install(&mut self, created: Created) {
        self.unconfirmed.retain(|name| *name != created.name);
        if created.new_stream {
            tracing::warn!(
                bucket = %self.bucket,
                filter = %self.filter_subject,
                previous_revision = ?self.position.last_revision,
                "the bucket's stream is not the one watched so far (the bucket was deleted and \
                 created again, or its sequence went back); the watch starts over on it"
            );
        } else if let Some((since, _)) = self.missing {
            tracing::info!(bucket = %self.bucket, missing_for = ?since.elapsed(),
                "bucket `{}` exists again; watching it", self.bucket);
        }
        self.missing = None;
        self.delay = Duration::ZERO;
        // A head check may have completed the catch-up while this consumer was being made.
        let caught_up = self.position.caught_up && !created.new_stream;
        self.position = created.position;
        self.position.caught_up |= caught_up;
        // The first stream of a watch is not a start over: nothing was delivered from another.
        if created.new_stream {
            if let Some(check) = self.head_check.take() {
                check.abort();
            }
            self.head_target = None;
            self.head_check_failures = 0;
            self.head_check_delay = Duration::ZERO;
            self.status.set_head_unconfirmed(false);
            self.caught_up_announced = false;
            self.catch_up_started = Instant::now();
            self.catch_up_entries = 0;
            self.status.recreated(RecreateReason::StreamReplaced);
            self.status.started_over();
            self.events.push_back(WatchEvent::StartedOver);
        }
        self.status.set_phase(if self.caught_up_announced {
            WatchPhase::Live
        } else {
            WatchPhase::CatchingUp
        });
        if !self.caught_up_announced {
            self.status.set_pending(created.initial_pending);
        }
        self.check_caught_up();
        // A reconnection before this consumer was made is no reason to re-create it.
        self.reconnects.arm();
        let replaced = self
            .active
            .replace(ActiveConsumer::new(created, self.options.timeout));
        if let Some(replaced) = replaced {
            self.retire(replaced);
        }
        if !self.unconfirmed.is_empty() {
            let names = std::mem::take(&mut self.unconfirmed);
            self.delete_consumers(names);
        }
    }

    /// Drops the current consumer; the next call to `next` re-creates the watch after the last
    /// revision.
    pub(super) fn rewatch(&mut self, why: RecreateReason, reason: std::fmt::Arguments<'_>) {
        self.status.recreated(why);
        tracing::warn!(
            bucket = %self.bucket,
            filter = %self.filter_subject,
            last_revision = ?self.position.last_revision,
            "{reason}; re-creating the watch"
        );
        self.retire_active();
    }

    pub(super) fn retire_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.status.set_phase(WatchPhase::Recreating);
            self.retire(active);
        }
    }

    /// Unsubscribes and deletes the consumer in the background (best effort: after a server
    /// restart it is already gone, and its inactive threshold removes it in any case).
    fn retire(&self, consumer: ActiveConsumer) {
        drop(consumer.subscriber);
        self.delete_consumers(vec![consumer.name]);
    }

    /// Deletes consumers in the background, each until it is gone: a request failing during
    /// an outage or a leader election is retried (up to the inactive threshold, after which the
    /// server removes the consumer itself), and one not found is looked for once more a
    /// `timeout` later, since a cluster may still create it after its create request timed out.
    pub(super) fn delete_consumers(&self, names: Vec<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let jetstream = self.jetstream.clone();
        let stream = self.stream_name.clone();
        let recheck_after = self.options.timeout;
        let give_up_after = self.options.inactive_threshold;
        runtime.spawn(async move {
            let deletions = names.iter().map(|name| {
                delete_consumer(&jetstream, &stream, name, recheck_after, give_up_after)
            });
            futures_util::future::join_all(deletions).await;
        });
    }
}
