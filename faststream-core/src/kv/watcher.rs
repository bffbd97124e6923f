//! `KvWatcher`: a resumable, in-order watch of the keys matching a pattern in one bucket.
//!
//! Built on a plain push consumer rather than async-nats's `kv::Watch` so that every `KvWatch`
//! option reaches the server (`headers_only`, `inactive_threshold`, the heartbeat interval) and
//! so that this crate, not the client library, decides where a re-created watch starts: after
//! the last revision it delivered. The client library's own recreation restarts from the
//! beginning when nothing had been delivered, replaying history.
//!
//! The consumer is what async-nats and nats.go use for watches: ephemeral, no acks, flow
//! control, idle heartbeats, memory storage, one replica. The watcher
//! - answers flow-control requests and stall notices, so the server never blocks on it;
//! - checks the consumer sequence of every message (and of every heartbeat) and re-creates the
//!   watch on a gap;
//! - re-creates the watch when nothing (not even a heartbeat) arrived for `timeout`;
//! - drops entries at or below the last delivered revision, so nothing is delivered twice;
//! - deletes the consumers it replaces, so none leak.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self};
use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};

use super::key_value::KeyValue;
use super::message::{KvMessage, MessageParts, Operation};
use super::options::{KvWatch, StartAt};
use crate::error::{chain, WatchError};

/// Changes each time the connection is (re)established; the watcher re-creates its consumer
/// then instead of waiting to notice the silence. Closed when the connection's owner is gone.
pub(crate) type ReconnectSignal = tokio::sync::watch::Receiver<u64>;

const FIRST_REWATCH_DELAY: Duration = Duration::from_millis(100);
const MAX_REWATCH_DELAY: Duration = Duration::from_secs(1);

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
    /// The revision of the last entry read from the server (delivered or skipped).
    last_revision: Option<u64>,
    /// For `updates_only`: where a watch re-created before any entry arrived starts.
    first_new_revision: Option<u64>,
    active: Option<ActiveConsumer>,
    /// `None` once the connection's owner is gone.
    reconnects: Option<ReconnectSignal>,
}

struct ActiveConsumer {
    name: String,
    subscriber: async_nats::Subscriber,
    consumer_sequence: u64,
}

/// What the server's reply subject says about one delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    stream_sequence: u64,
    consumer_sequence: u64,
    timestamp_nanos: i128,
    pending: u64,
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
        let mut watcher = Self {
            client: jetstream.client(),
            jetstream,
            bucket: Arc::from(store.name.as_str()),
            stream_name: store.stream_name.clone(),
            key_prefix: store.prefix.clone(),
            filter_subject: format!("{}{filter}", store.prefix),
            options,
            description,
            last_revision: None,
            first_new_revision: None,
            active: None,
            reconnects: Some(reconnects),
        };
        watcher.create().await?;
        Ok(watcher)
    }

    /// The bucket watched.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The revision of the last entry read from the server, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.last_revision
    }

    /// The next entry; `None` only once the connection is closed for good.
    ///
    /// Cancel-safe: dropping the future before it completes loses no entry (an entry is taken
    /// from the connection only when it can be returned in the same poll), so it can be raced
    /// in `select!`.
    pub async fn next(&mut self) -> Option<KvMessage> {
        loop {
            let Some(active) = self.active.as_mut() else {
                self.recreate().await;
                continue;
            };
            // Fast path: a message already buffered needs no timer and no select.
            let received = match active.subscriber.next().now_or_never() {
                Some(received) => received,
                None => {
                    let timeout = self.options.timeout;
                    tokio::select! {
                        received = tokio::time::timeout(timeout, active.subscriber.next()) => {
                            match received {
                                Ok(received) => received,
                                Err(_) => {
                                    self.rewatch(format_args!(
                                        "nothing heard from the server for {timeout:?}"
                                    ));
                                    continue;
                                }
                            }
                        }
                        () = reconnected(&mut self.reconnects) => {
                            self.rewatch(format_args!("the connection was re-established"));
                            continue;
                        }
                    }
                }
            };
            match received {
                None => return None,
                Some(message) => {
                    if let Some(entry) = self.read(message).await {
                        return Some(entry);
                    }
                }
            }
        }
    }

    /// Drops the current consumer; the next call to `next` re-creates the watch after the last
    /// revision.
    fn rewatch(&mut self, reason: std::fmt::Arguments<'_>) {
        tracing::warn!(
            bucket = %self.bucket,
            filter = %self.filter_subject,
            last_revision = ?self.last_revision,
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

    fn deliver_policy(&self) -> DeliverPolicy {
        match (self.last_revision, self.first_new_revision) {
            (Some(last), _) => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            (None, Some(first)) => DeliverPolicy::ByStartSequence {
                start_sequence: first,
            },
            (None, None) => match self.options.start_at() {
                StartAt::LatestPerKey => DeliverPolicy::LastPerSubject,
                StartAt::Beginning => DeliverPolicy::All,
                StartAt::NewOnly => DeliverPolicy::New,
            },
        }
    }

    /// Subscribes to a fresh inbox, then creates the consumer delivering to it (in that order,
    /// so nothing is pushed before anyone listens), replacing the previous one.
    async fn create(&mut self) -> Result<(), WatchError> {
        let inbox = self.client.new_inbox();
        let subscriber = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(WatchError::Subscribe)?;
        let config = push::Config {
            deliver_subject: inbox,
            description: Some(self.description.clone()),
            deliver_policy: self.deliver_policy(),
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
        };
        let consumer = self
            .jetstream
            .create_consumer_on_stream(config, &self.stream_name)
            .await
            .map_err(WatchError::CreateConsumer)?;
        let info = consumer.cached_info();
        if self.last_revision.is_none()
            && self.first_new_revision.is_none()
            && self.options.start_at() == StartAt::NewOnly
        {
            self.first_new_revision = Some(info.delivered.stream_sequence + 1);
        }
        let replaced = self.active.replace(ActiveConsumer {
            name: info.name.clone(),
            subscriber,
            consumer_sequence: 0,
        });
        if let Some(replaced) = replaced {
            self.retire(replaced);
        }
        Ok(())
    }

    /// Re-creates the watch, retrying with backoff (re-creating in a tight loop would leak
    /// consumers and load a recovering server).
    async fn recreate(&mut self) {
        let mut delay = FIRST_REWATCH_DELAY;
        loop {
            match self.create().await {
                Ok(()) => {
                    tracing::info!(
                        bucket = %self.bucket,
                        filter = %self.filter_subject,
                        after_revision = ?self.last_revision,
                        "watch re-created"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        bucket = %self.bucket,
                        filter = %self.filter_subject,
                        retry_in = ?delay,
                        error = %chain(&error),
                        "could not re-create the watch"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = reconnected(&mut self.reconnects) => {}
                    }
                    delay = (delay * 2).min(MAX_REWATCH_DELAY);
                }
            }
        }
    }

    fn retire_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.retire(active);
        }
    }

    /// Unsubscribes and deletes the consumer in the background (best effort: after a server
    /// restart it is already gone, and its inactive threshold removes it in any case).
    fn retire(&self, consumer: ActiveConsumer) {
        drop(consumer.subscriber);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let jetstream = self.jetstream.clone();
        let stream = self.stream_name.clone();
        runtime.spawn(async move {
            if let Err(error) = jetstream
                .delete_consumer_from_stream(&consumer.name, &stream)
                .await
            {
                tracing::debug!(consumer = %consumer.name, error = %chain(&error),
                    "could not delete a replaced watch consumer");
            }
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
            self.rewatch(format_args!(
                "gap in the watch: consumer sequence {} after {}",
                delivery.consumer_sequence,
                expected - 1
            ));
            return None;
        }
        active.consumer_sequence = delivery.consumer_sequence;
        if self
            .last_revision
            .is_some_and(|last| delivery.stream_sequence <= last)
        {
            return None;
        }
        self.last_revision = Some(delivery.stream_sequence);

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
                self.rewatch(format_args!(
                    "the server sent entries up to {last_sent} but only {received} arrived"
                ));
            }
        }
    }
}

impl std::fmt::Debug for KvWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvWatcher")
            .field("bucket", &self.bucket)
            .field("filter", &self.filter_subject)
            .field("last_revision", &self.last_revision)
            .field("consumer", &self.active.as_ref().map(|active| &active.name))
            .finish_non_exhaustive()
    }
}

impl Drop for KvWatcher {
    fn drop(&mut self) {
        self.retire_active();
    }
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

/// `DEL` and `PURGE` as written by clients (`KV-Operation`) or by the server since 2.11
/// (`Nats-Marker-Reason`: `MaxAge` and `Purge` purge, `Remove` deletes).
fn operation(headers: Option<&HeaderMap>) -> Operation {
    let Some(headers) = headers else {
        return Operation::Put;
    };
    if let Some(operation) = headers.get("KV-Operation") {
        return match operation.as_str() {
            "DEL" => Operation::Delete,
            "PURGE" => Operation::Purge,
            _ => Operation::Put,
        };
    }
    match headers
        .get("Nats-Marker-Reason")
        .map(|reason| reason.as_str())
    {
        Some("MaxAge" | "Purge") => Operation::Purge,
        Some("Remove") => Operation::Delete,
        _ => Operation::Put,
    }
}

/// Parses a JetStream delivery reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` or, since 2.9,
/// `$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]`.
fn parse_reply(reply: &str) -> Option<Delivery> {
    // Up to 12 tokens, without allocating: this runs for every entry.
    let mut tokens = [""; 12];
    let mut count = 0;
    for token in reply.split('.') {
        *tokens.get_mut(count)? = token;
        count += 1;
    }
    if tokens[..2] != ["$JS", "ACK"] {
        return None;
    }
    let offset = match count {
        9 => 2,
        11 | 12 => 4,
        _ => return None,
    };
    let field = |index: usize| tokens[offset + index];
    Some(Delivery {
        stream_sequence: field(3).parse().ok()?,
        consumer_sequence: field(4).parse().ok()?,
        timestamp_nanos: field(5).parse().ok()?,
        pending: field(6).parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects() {
        let v1 = parse_reply("$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.3");
        assert_eq!(
            v1,
            Some(Delivery {
                stream_sequence: 42,
                consumer_sequence: 7,
                timestamp_nanos: 1_700_000_000_000_000_000,
                pending: 3
            })
        );
        let v2 = parse_reply("$JS.ACK.hub.ACCHASH.KV_b.cons.1.42.7.1700000000000000000.3.tok");
        assert_eq!(v2, v1);
        assert_eq!(parse_reply("_INBOX.x"), None);
        assert_eq!(parse_reply("$JS.ACK.KV_b.cons.1.x.7.1.3"), None);
        assert_eq!(parse_reply("$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m"), None);
    }

    #[test]
    fn operations() {
        assert_eq!(operation(None), Operation::Put);
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        assert_eq!(operation(Some(&headers)), Operation::Delete);
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        assert_eq!(operation(Some(&headers)), Operation::Purge);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Marker-Reason", "MaxAge");
        assert_eq!(operation(Some(&headers)), Operation::Purge);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Marker-Reason", "Remove");
        assert_eq!(operation(Some(&headers)), Operation::Delete);
    }
}
