//! `KvWatcher`: a resumable, in-order watch of the keys matching a pattern in one bucket.
//!
//! Built on a plain push consumer rather than async-nats's `kv::Watch` so that every `KvWatch`
//! option reaches the server (`headers_only`, `inactive_threshold`, the heartbeat interval) and
//! so that this crate, not the client library, decides where a re-created watch starts: after
//! the last revision it delivered. The client library's own recreation restarts from the
//! beginning when nothing had been delivered, replaying history.
//!
//! The consumer is what async-nats and nats.go use for watches: ephemeral, no acks, flow
//! control, idle heartbeats, memory storage, one replica; but named by the watcher (a prefix of
//! its own and an attempt counter), so an attempt whose answer never came can be deleted. The
//! watcher
//! - answers flow-control requests and stall notices, so the server never blocks on it;
//! - checks the consumer sequence of every message (and of every heartbeat) and re-creates the
//!   watch on a gap;
//! - re-creates the watch when nothing (not even a heartbeat) arrived for `timeout`;
//! - creates consumers in a task of its own, only while connected, so neither a dropped
//!   `next()` nor an outage multiplies them;
//! - checks, before each creation, that the bucket's stream is still the one its position
//!   belongs to, and starts over on a new one (bucket deleted and created again);
//! - drops entries at or below the last delivered revision, so nothing is delivered twice;
//! - deletes the consumers it replaces and the attempts left unanswered, so none leak;
//! - knows when it has delivered the bucket's state as of its start (caught up), and says so
//!   in its event stream and its [`WatchStatus`].
//!
//! Caught up means the watch has reached the head of the bucket: every entry that existed
//! when it started (or its newer value) has been delivered. nats.go and async-nats take a
//! message with nothing pending after it as the sign; but when keys are rewritten during a
//! latest-per-key catch-up, nats-server (2.9 and 2.15 alike) reports nothing pending while
//! their new values are still to come. So that sign only starts a check: one request for the
//! last revision of the watched keys, and the watch is caught up once it has read that far. A
//! reader slower than the bucket's writers is therefore not caught up until it catches up for
//! real.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::StatusCode;
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

mod consumer;
mod delivery;
mod status;

use consumer::{
    create, delete_consumer, head_revision, next_delay, Attempt, CreateFailure, Created,
};
pub(crate) use delivery::operation;
use delivery::parse_reply;
use status::StatusWriter;
pub use status::{CatchUp, RecreateReason, WatchEvent, WatchPhase, WatchStatus};

use super::key_value::KeyValue;
use super::message::{KvMessage, MessageParts, Operation};
use super::options::{KvWatch, StartAt};
use crate::error::{chain, WatchError};

/// Changes each time the connection is (re)established; the watcher re-creates its consumer
/// then instead of waiting to notice the silence. Closed when the connection's owner is gone.
pub(crate) type ReconnectSignal = tokio::sync::watch::Receiver<u64>;

const FIRST_REWATCH_DELAY: Duration = Duration::from_millis(100);
const MAX_REWATCH_DELAY: Duration = Duration::from_secs(1);
/// A missing bucket is looked up less often: it may stay missing for long.
const MAX_MISSING_BUCKET_DELAY: Duration = Duration::from_secs(5);
/// How often a bucket that stays missing is logged again at warn level.
const MISSING_BUCKET_WARN_EVERY: Duration = Duration::from_secs(60);
/// How often a creation waiting for the connection checks it.
const CONNECTION_POLL: Duration = Duration::from_millis(25);

/// A watch of one bucket: yields every matching entry in revision order, re-creating itself
/// after connection losses, server restarts and gaps without losing or repeating entries.
///
/// Get one with [`NatsBroker::kv_watch`](crate::broker::NatsBroker::kv_watch).
pub struct KvWatcher {
    jetstream: jetstream::Context,
    client: async_nats::Client,
    bucket: Arc<str>,
    stream_name: String,
    key_prefix: String,
    filter_subject: String,
    options: KvWatch,
    description: String,
    position: Position,
    active: Option<ActiveConsumer>,
    /// The consumer being created. A task of its own, so that a dropped `next()` (a `select!`
    /// losing the race, `get_one` timing out) neither abandons a half-made consumer nor starts
    /// another one.
    creating: Option<JoinHandle<Result<Created, CreateFailure>>>,
    /// Consumer names are this plus an attempt counter, so that an abandoned attempt can be
    /// found and deleted.
    name_prefix: String,
    attempts: u64,
    /// Names sent in create requests that got no answer: the consumer may exist (the request
    /// may have been queued during an outage, or a cluster may create it late).
    unconfirmed: Vec<String>,
    /// Pause before the next creation attempt (grows while attempts fail).
    delay: Duration,
    /// Since when the bucket has been missing, and when that was last logged at warn level.
    missing: Option<(Instant, Instant)>,
    /// The connection is closed for good: `next` returns `None`.
    closed: bool,
    /// `None` once the connection's owner is gone.
    reconnects: Option<ReconnectSignal>,
    /// Events to yield before reading on (a catch-up, a start over).
    events: VecDeque<WatchEvent>,
    /// Where the watch stands, for readers in other tasks.
    status: StatusWriter,
    /// The catch-up being counted: since when, and entries yielded so far.
    catch_up_started: Instant,
    catch_up_entries: u64,
    /// The last catch-up announced was for the current state (reset when starting over).
    caught_up_announced: bool,
    /// Looking up the head of the watched keys, to confirm a catch-up; `None` in the result:
    /// the lookup failed.
    head_check: Option<JoinHandle<Option<u64>>>,
    /// The head found by the last check, when the watch had not reached it yet.
    head_target: Option<u64>,
}

/// Where the watch stands: what a re-created consumer must start after.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// The revision of the last entry read from the server (delivered or skipped).
    last_revision: Option<u64>,
    /// For `updates_only`: where a watch re-created before any entry arrived starts.
    first_new_revision: Option<u64>,
    /// A consumer reported nothing pending: the initial snapshot was delivered.
    caught_up: bool,
    /// Creation time of the stream the revisions above belong to.
    stream_created: Option<OffsetDateTime>,
}

impl Position {
    /// Where a watch on a new stream starts, in the watch's own mode.
    fn fresh(start_at: StartAt, stream_created: OffsetDateTime) -> Self {
        Self {
            last_revision: None,
            // Everything the new stream holds arrived after the watch started.
            first_new_revision: (start_at == StartAt::NewOnly).then_some(1),
            caught_up: false,
            stream_created: Some(stream_created),
        }
    }

    fn deliver_policy(&self, start_at: StartAt) -> DeliverPolicy {
        // A latest-per-key watch re-created during its initial snapshot asks for the latest
        // value per key again (entries at or below `last_revision` are dropped on arrival);
        // by sequence it would deliver superseded values of keys not reached yet.
        if start_at == StartAt::LatestPerKey && !self.caught_up {
            return DeliverPolicy::LastPerSubject;
        }
        match (self.last_revision, self.first_new_revision) {
            (Some(last), _) => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            (None, Some(first)) => DeliverPolicy::ByStartSequence {
                start_sequence: first,
            },
            (None, None) => match start_at {
                StartAt::LatestPerKey => DeliverPolicy::LastPerSubject,
                StartAt::Beginning => DeliverPolicy::All,
                StartAt::NewOnly => DeliverPolicy::New,
            },
        }
    }
}

struct ActiveConsumer {
    name: String,
    subscriber: async_nats::Subscriber,
    consumer_sequence: u64,
    /// When the server was last heard from (an entry, a heartbeat, flow control).
    last_heard: tokio::time::Instant,
    /// Fires at the earliest moment the watch could have been silent for `timeout`. One timer
    /// for the consumer's life, pushed back only when it fires: arming one per wait would
    /// cost a timer-wheel insert and removal on every idle `next`.
    silence: Pin<Box<tokio::time::Sleep>>,
}

impl ActiveConsumer {
    fn new(created: Created, timeout: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            name: created.name,
            subscriber: created.subscriber,
            consumer_sequence: 0,
            last_heard: now,
            silence: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }
}

impl KvWatcher {
    /// Creates the server-side watch of the keys matching `filter` in `store`; `description`
    /// names the watcher on the server (consumer description) and in logs.
    pub(crate) async fn start(
        mut jetstream: jetstream::Context,
        mut reconnects: ReconnectSignal,
        store: &KeyValue,
        filter: &str,
        options: KvWatch,
        description: String,
    ) -> Result<Self, WatchError> {
        jetstream.set_timeout(options.timeout);
        reconnects.mark_unchanged();
        let store = store.store();
        let client = jetstream.client();
        // A unique token: the inbox generator's random suffix.
        let inbox = client.new_inbox();
        let unique = inbox.rsplit('.').next().unwrap_or(&inbox);
        let mut watcher = Self {
            name_prefix: format!("fsw_{unique}"),
            client,
            jetstream,
            bucket: Arc::from(store.name.as_str()),
            stream_name: store.stream_name.clone(),
            key_prefix: store.prefix.clone(),
            filter_subject: format!("{}{filter}", store.prefix),
            options,
            description,
            position: Position::default(),
            active: None,
            creating: None,
            attempts: 0,
            unconfirmed: Vec::new(),
            delay: Duration::ZERO,
            missing: None,
            closed: false,
            reconnects: Some(reconnects),
            events: VecDeque::new(),
            status: StatusWriter::new(),
            catch_up_started: Instant::now(),
            catch_up_entries: 0,
            caught_up_announced: false,
            head_check: None,
            head_target: None,
        };
        // Start-up fails rather than waiting without bound for a connection.
        let attempt = watcher.attempt(Some(watcher.options.timeout));
        match create(attempt).await {
            Ok(created) => {
                watcher.install(created);
                Ok(watcher)
            }
            // Dropping the watcher deletes a consumer the attempt may have made.
            Err(failure) => {
                if !failure.maybe_created {
                    watcher.unconfirmed.clear();
                }
                Err(failure.error)
            }
        }
    }

    /// The bucket watched.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The revision of the last entry read from the server, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.position.last_revision
    }

    /// Whether the watch has delivered the bucket's state as of its start: see
    /// [`WatchEvent::CaughtUp`]. True from the start on an empty bucket and with
    /// `updates_only`.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up_announced || self.position.caught_up
    }

    /// A handle on this watch's progress (caught up, lag, phase) for other tasks.
    pub fn status(&self) -> WatchStatus {
        self.status.reader()
    }

    /// The next entry; `None` only once the connection is closed for good.
    ///
    /// Cancel-safe: dropping the future before it completes loses no entry (an entry is taken
    /// from the connection only when it can be returned in the same poll), so it can be raced
    /// in `select!`; a consumer being created meanwhile goes on being created.
    pub async fn next(&mut self) -> Option<KvMessage> {
        loop {
            if let WatchEvent::Entry(entry) = self.next_event().await? {
                return Some(entry);
            }
        }
    }

    /// The next entry or change of state ([`WatchEvent::CaughtUp`], [`WatchEvent::StartedOver`]);
    /// `None` only once the connection is closed for good. Cancel-safe, like
    /// [`next`](Self::next).
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// use faststream_core::kv::WatchEvent;
    /// use faststream_core::KvWatch;
    ///
    /// let mut watcher = broker.kv_watch("routes.>", KvWatch::new("routing")).await?;
    /// let mut routes = std::collections::HashMap::new();
    /// while let Some(event) = watcher.next_event().await {
    ///     match event {
    ///         WatchEvent::Entry(entry) => {
    ///             routes.insert(entry.key().to_owned(), entry.into_value());
    ///         }
    ///         WatchEvent::CaughtUp(catch_up) => {
    ///             println!("{} routes loaded in {:?}", catch_up.entries, catch_up.elapsed);
    ///             break;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next_event(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if self
                .head_check
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                let head = finished_check(&mut self.head_check).await;
                self.head_checked(head);
                continue;
            }
            let Some(active) = self.active.as_mut() else {
                if !self.wait_for_consumer().await {
                    return None;
                }
                continue;
            };
            // Fast path: a message already buffered needs no select.
            let received = match active.subscriber.next().now_or_never() {
                Some(received) => received,
                None => {
                    tokio::select! {
                        biased;
                        received = active.subscriber.next() => received,
                        () = active.silence.as_mut() => {
                            let timeout = self.options.timeout;
                            let silent_from = active.last_heard + timeout;
                            if tokio::time::Instant::now() < silent_from {
                                // Heard from the server since the timer was set.
                                active.silence.as_mut().reset(silent_from);
                            } else {
                                self.rewatch(RecreateReason::Silence, format_args!(
                                    "nothing heard from the server for {timeout:?}"
                                ));
                            }
                            continue;
                        }
                        () = reconnected(&mut self.reconnects) => {
                            self.rewatch(
                                RecreateReason::Reconnected,
                                format_args!("the connection was re-established"),
                            );
                            continue;
                        }
                        head = finished_check(&mut self.head_check),
                            if self.head_check.is_some() => {
                            self.head_checked(head);
                            continue;
                        }
                    }
                }
            };
            match received {
                None => {
                    self.closed = true;
                    self.status.set_phase(WatchPhase::Closed);
                    return None;
                }
                Some(message) => {
                    active.last_heard = tokio::time::Instant::now();
                    let entry = self.read(message).await;
                    if let Some(entry) = entry {
                        if !self.caught_up_announced {
                            self.catch_up_entries += 1;
                        }
                        self.check_caught_up();
                        return Some(WatchEvent::Entry(entry));
                    }
                    self.check_caught_up();
                }
            }
        }
    }

    /// Looks up the head of the watched keys in the background (one at a time).
    fn start_head_check(&mut self) {
        if self.head_check.is_some() {
            return;
        }
        let jetstream = self.jetstream.clone();
        let stream = self.stream_name.clone();
        let filter = self.filter_subject.clone();
        self.head_check = Some(tokio::spawn(async move {
            head_revision(&jetstream, &stream, &filter).await
        }));
    }

    /// Caught up if the watch has read as far as the head found; a failed lookup trusts the
    /// server's count instead.
    fn head_checked(&mut self, head: Option<u64>) {
        let read = self.position.last_revision.unwrap_or(0);
        match head {
            Some(head) if head > read => {
                tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject, head, read,
                    "nothing pending, but the head is further: catching up on");
                self.head_target = Some(head);
            }
            Some(_) => self.position.caught_up = true,
            None => {
                tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject,
                    "could not look up the head of the watched keys; trusting the server's count");
                self.position.caught_up = true;
            }
        }
        self.check_caught_up();
    }

    /// Queues the catch-up event the first time the position says the state is delivered.
    fn check_caught_up(&mut self) {
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

    /// Drops the current consumer; the next call to `next` re-creates the watch after the last
    /// revision.
    fn rewatch(&mut self, why: RecreateReason, reason: std::fmt::Arguments<'_>) {
        self.status.recreated(why);
        tracing::warn!(
            bucket = %self.bucket,
            filter = %self.filter_subject,
            last_revision = ?self.position.last_revision,
            "{reason}; re-creating the watch"
        );
        self.retire_active();
    }

    /// The next entry if one arrives within `timeout` (FastStream's `get_one`).
    pub async fn get_one(&mut self, timeout: Duration) -> Option<KvMessage> {
        tokio::time::timeout(timeout, self.next())
            .await
            .ok()
            .flatten()
    }

    /// The watcher as a `Stream` of entries.
    pub fn into_stream(self) -> impl Stream<Item = KvMessage> + Send {
        futures_util::stream::unfold(self, |mut watcher| async move {
            let entry = watcher.next().await?;
            Some((entry, watcher))
        })
    }

    /// The next creation attempt, under a name of its own (recorded as unconfirmed until the
    /// server confirms it).
    fn attempt(&mut self, connection_wait: Option<Duration>) -> Attempt {
        self.attempts += 1;
        let name = format!("{}_{}", self.name_prefix, self.attempts);
        self.unconfirmed.push(name.clone());
        Attempt {
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

    /// Waits for the consumer being created (starting a creation if none is running), retrying
    /// with backoff until one is confirmed. `false` once the connection is closed for good.
    async fn wait_for_consumer(&mut self) -> bool {
        loop {
            if self.closed {
                return false;
            }
            let creating = match self.creating.as_mut() {
                Some(creating) => creating,
                None => {
                    let attempt = self.attempt(None);
                    self.creating.insert(tokio::spawn(create(attempt)))
                }
            };
            // Awaiting a `&mut JoinHandle` is cancel-safe: the task goes on without us.
            let outcome = creating.await;
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
                    return true;
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
    fn install(&mut self, created: Created) {
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
        if let Some(reconnects) = self.reconnects.as_mut() {
            reconnects.mark_unchanged();
        }
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

    fn retire_active(&mut self) {
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
    fn delete_consumers(&self, names: Vec<String>) {
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

    /// Turns one message of the consumer into an entry, or handles it as control traffic.
    async fn read(&mut self, message: async_nats::Message) -> Option<KvMessage> {
        if message.status.is_some() {
            self.control(message).await;
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
        let operation = operation(message.headers.as_ref());
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
    async fn control(&mut self, message: async_nats::Message) {
        if message.status != Some(StatusCode::IDLE_HEARTBEAT) {
            tracing::debug!(bucket = %self.bucket, status = ?message.status, "watch status message");
            return;
        }
        let headers = message.headers.as_ref();
        let stalled = headers
            .and_then(|headers| headers.get("Nats-Consumer-Stalled"))
            .map(|subject| subject.as_str().to_owned());
        for reply in message.reply.iter().map(|s| s.to_string()).chain(stalled) {
            if let Err(error) = self.client.publish(reply, Bytes::new()).await {
                tracing::debug!(bucket = %self.bucket, %error, "could not answer flow control");
            }
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

impl std::fmt::Debug for KvWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvWatcher")
            .field("bucket", &self.bucket)
            .field("filter", &self.filter_subject)
            .field("last_revision", &self.position.last_revision)
            .field("consumer", &self.active.as_ref().map(|active| &active.name))
            .finish_non_exhaustive()
    }
}

impl Drop for KvWatcher {
    fn drop(&mut self) {
        if let Some(creating) = self.creating.take() {
            creating.abort();
        }
        if let Some(check) = self.head_check.take() {
            check.abort();
        }
        self.retire_active();
        // An aborted or failed attempt's consumer may exist.
        if !self.unconfirmed.is_empty() {
            let names = std::mem::take(&mut self.unconfirmed);
            self.delete_consumers(names);
        }
    }
}

/// The result of the head check in `slot`, emptying it; never completes if there is none.
async fn finished_check(slot: &mut Option<JoinHandle<Option<u64>>>) -> Option<u64> {
    let Some(check) = slot.as_mut() else {
        return std::future::pending().await;
    };
    // Awaiting a `&mut JoinHandle` is cancel-safe: the check goes on without us.
    let head = check.await.ok().flatten();
    *slot = None;
    head
}

/// Completes when the connection has been re-established; never if the broker is gone.
async fn reconnected(reconnects: &mut Option<ReconnectSignal>) {
    match reconnects {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *reconnects = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_policies() {
        let created = OffsetDateTime::UNIX_EPOCH;
        let at = |last_revision, caught_up| Position {
            last_revision,
            caught_up,
            stream_created: Some(created),
            ..Position::default()
        };
        // Before the initial snapshot is through, a latest-per-key watch asks for the latest
        // value per key again; afterwards it resumes by sequence.
        assert_eq!(
            at(Some(7), false).deliver_policy(StartAt::LatestPerKey),
            DeliverPolicy::LastPerSubject
        );
        assert_eq!(
            at(Some(7), true).deliver_policy(StartAt::LatestPerKey),
            DeliverPolicy::ByStartSequence { start_sequence: 8 }
        );
        assert_eq!(
            at(Some(7), false).deliver_policy(StartAt::Beginning),
            DeliverPolicy::ByStartSequence { start_sequence: 8 }
        );
        // On a new stream: each mode from its own start; updates_only takes all of it.
        let fresh = |start_at| Position::fresh(start_at, created).deliver_policy(start_at);
        assert_eq!(fresh(StartAt::LatestPerKey), DeliverPolicy::LastPerSubject);
        assert_eq!(fresh(StartAt::Beginning), DeliverPolicy::All);
        assert_eq!(
            fresh(StartAt::NewOnly),
            DeliverPolicy::ByStartSequence { start_sequence: 1 }
        );
    }
}
