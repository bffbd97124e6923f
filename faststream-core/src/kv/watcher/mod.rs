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
//! real. A lookup that fails (no permission for it, no answer in time) confirms nothing: it is
//! tried again (100 ms, doubling up to 5 s, logged at warn level), and the watch stays catching
//! up meanwhile, so a start-up waiting for it fails at its timeout rather than going on with a
//! state nothing confirmed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::Stream;
use tokio::task::JoinHandle;

mod batch;
mod consumer;
mod delivery;
mod head;
mod paged_catch_up;
mod position;
mod read;
mod reconnect;
mod recreate;
mod status;
#[cfg(test)]
mod stream_tests;

use consumer::{create, CreateFailure, Created};
pub(crate) use head::HeadLookup;
use paged_catch_up::PagedCatchUp;
use position::Position;
pub(crate) use reconnect::ReconnectSignal;
use reconnect::ReconnectWait;
use status::StatusWriter;
pub use status::{CatchUp, RecreateReason, WatchEvent, WatchPhase, WatchStatus};

use crate::error::{BoxError, WatchError};
use crate::kv::key_value::KeyValue;
use crate::kv::message::KvMessage;
use crate::kv::options::KvWatch;

/// A watch of one bucket: yields every matching entry in revision order, re-creating itself
/// after connection losses, server restarts and gaps without losing or repeating entries.
///
/// Read it with [`next`](Self::next) (entries), [`next_event`](Self::next_event) (entries and
/// changes of state) or as a [`Stream`] of entries; all three drive the same watch, and a
/// read dropped before it completes (a `select!` losing the race, a timeout) loses nothing.
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// use futures_util::StreamExt;
/// use faststream_core::KvWatch;
///
/// let watcher = broker.kv_watch("orders.*", KvWatch::new("shop")).await?;
/// let first_ten: Vec<_> = watcher.take(10).collect().await;
/// # Ok(())
/// # }
/// ```
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
    /// The catch-up being read through batched direct gets, before any consumer.
    paged: Option<PagedCatchUp>,
    /// The consumer being created. A task of its own, so that a dropped `next()` (a `select!`
    /// losing the race, `get_one` timing out) neither abandons a half-made consumer nor starts
    /// another one.
    creating: Option<JoinHandle<Result<Created, CreateFailure>>>,
    /// Consumer names are this plus a request counter, so that an abandoned attempt can be
    /// found and deleted.
    name_prefix: String,
    creation_requests: u64,
    /// Names sent in create requests that got no answer: the consumer may exist (the request
    /// may have been queued during an outage, or a cluster may create it late).
    unconfirmed: Vec<String>,
    /// Pause before the next creation attempt (grows while attempts fail).
    delay: Duration,
    /// Since when the bucket has been missing, and when that was last logged at warn level.
    missing: Option<(Instant, Instant)>,
    /// The connection is closed for good: `next` returns `None`.
    closed: bool,
    /// Completes when the connection is re-established while a consumer is active.
    reconnects: ReconnectWait,
    /// Events to yield before reading on (a catch-up, a start over).
    events: VecDeque<WatchEvent>,
    /// Where the watch stands, for readers in other tasks.
    status: StatusWriter,
    /// The catch-up being counted: since when, and entries yielded so far.
    catch_up_started: Instant,
    catch_up_entries: u64,
    /// The last catch-up announced was for the current state (reset when starting over).
    caught_up_announced: bool,
    /// Looking up the head of the watched keys, to confirm a catch-up.
    head_check: Option<JoinHandle<Result<u64, BoxError>>>,
    /// The lookups of the head that failed in a row, and the pause before the next one.
    head_check_failures: u32,
    head_check_delay: Duration,
    /// When a failed lookup of the head was last logged at warn level.
    head_check_warned: Option<Instant>,
    /// The head found by the last check, when the watch had not reached it yet.
    head_target: Option<u64>,
}

/// The consumer the watch reads, once the server confirmed it.
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
        reconnects: ReconnectSignal,
        store: &KeyValue,
        filter: &str,
        options: KvWatch,
        description: String,
    ) -> Result<Self, WatchError> {
        jetstream.set_timeout(options.timeout);
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
            paged: None,
            creating: None,
            creation_requests: 0,
            unconfirmed: Vec::new(),
            delay: Duration::ZERO,
            missing: None,
            closed: false,
            reconnects: ReconnectWait::new(reconnects),
            events: VecDeque::new(),
            status: StatusWriter::new(),
            catch_up_started: Instant::now(),
            catch_up_entries: 0,
            caught_up_announced: false,
            head_check: None,
            head_check_failures: 0,
            head_check_delay: Duration::ZERO,
            head_check_warned: None,
            head_target: None,
        };
        // Where the server and the bucket allow, the catch-up is read in pages and a consumer
        // made only after it; a stream that cannot be looked up leaves the error to the
        // consumer's creation below.
        if watcher.may_page_catch_up() {
            if let Ok(stream) = watcher.jetstream.get_stream(&watcher.stream_name).await {
                if watcher.start_paged_catch_up(stream.cached_info()) {
                    return Ok(watcher);
                }
            }
        }
        // Start-up fails rather than waiting without bound for a connection.
        let request = watcher.creation_request(Some(watcher.options.timeout));
        match create(request).await {
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

    /// How long the watch may go without hearing from the server ([`KvWatch::timeout`]).
    pub(crate) fn timeout(&self) -> Duration {
        self.options.timeout
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
        std::future::poll_fn(|cx| self.poll_entry(cx)).await
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
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next entry if one arrives within `timeout` (FastStream's `get_one`).
    pub async fn get_one(&mut self, timeout: Duration) -> Option<KvMessage> {
        tokio::time::timeout(timeout, self.next())
            .await
            .ok()
            .flatten()
    }

    /// Polls for the next entry, passing over changes of state.
    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Option<KvMessage>> {
        loop {
            match ready!(self.poll_event(cx)) {
                Some(WatchEvent::Entry(entry)) => return Poll::Ready(Some(entry)),
                Some(_) => {}
                None => return Poll::Ready(None),
            }
        }
    }
}

/// The watch's entries, as [`next`](KvWatcher::next) yields them: the stream ends only once
/// the connection is closed for good.
impl Stream for KvWatcher {
    type Item = KvMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KvMessage>> {
        self.get_mut().poll_entry(cx)
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
