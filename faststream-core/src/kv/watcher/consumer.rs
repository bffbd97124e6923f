//! Creating and deleting a watch's consumers: one creation attempt runs as a task of its own,
//! waits out outages, checks that the bucket's stream is still the one the watch is on, and
//! reports whether a consumer may exist when it fails, so that none is left behind.

use std::time::{Duration, Instant};

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::consumer::push;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{ConsumerErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::{self, ErrorCode};

use super::position::{one_message_per_key, Position};
use crate::error::{chain, BoxError, WatchError};
use crate::kv::features::{self, SEQUENTIAL_CATCH_UP_SINCE};
use crate::kv::start_at::StartAt;

/// The first pause before re-creating a watch; it doubles while attempts fail.
const FIRST_REWATCH_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to re-create a watch.
pub(super) const MAX_REWATCH_DELAY: Duration = Duration::from_secs(1);
/// A missing bucket is looked up less often: it may stay missing for long.
pub(super) const MAX_MISSING_BUCKET_DELAY: Duration = Duration::from_secs(5);
/// The longest pause between two lookups of the head after failed ones.
pub(super) const MAX_HEAD_CHECK_DELAY: Duration = Duration::from_secs(5);
/// How often a creation waiting for the connection checks it.
const CONNECTION_POLL: Duration = Duration::from_millis(25);

/// A request to create one consumer for a watch: everything the attempt needs, owned, so it
/// can run as a task.
pub(super) struct CreateConsumerRequest {
    pub(super) jetstream: jetstream::Context,
    pub(super) client: async_nats::Client,
    pub(super) stream_name: String,
    pub(super) name: String,
    pub(super) config: push::Config,
    pub(super) start_at: StartAt,
    pub(super) position: Position,
    pub(super) delay: Duration,
    /// How long to wait for the connection; `None`: as long as it takes.
    pub(super) connection_wait: Option<Duration>,
}

/// A consumer the server confirmed.
pub(super) struct Created {
    pub(super) name: String,
    pub(super) subscriber: async_nats::Subscriber,
    pub(super) position: Position,
    /// The stream is not the one the previous position belonged to.
    pub(super) new_stream: bool,
    /// Messages the consumer had to deliver when created.
    pub(super) initial_pending: u64,
}

pub(super) struct CreateFailure {
    pub(super) error: WatchError,
    /// The create request was sent and not answered: the consumer may exist.
    pub(super) maybe_created: bool,
    /// The connection is closed for good.
    pub(super) closed: bool,
}

impl CreateFailure {
    pub(super) fn before_sending(error: WatchError) -> Self {
        Self {
            error,
            maybe_created: false,
            closed: false,
        }
    }
}

/// Deletes one consumer; see `KvWatcher::delete_consumers`.
pub(super) async fn delete_consumer(
    jetstream: &jetstream::Context,
    stream: &str,
    name: &str,
    recheck_after: Duration,
    give_up_after: Duration,
) {
    let give_up = Instant::now() + give_up_after;
    let mut delay = Duration::ZERO;
    let mut rechecked = false;
    loop {
        let error = match jetstream.delete_consumer_from_stream(name, stream).await {
            Ok(_) => return,
            Err(error) => error,
        };
        let code = match error.kind() {
            ConsumerErrorKind::JetStream(error) => Some(error.error_code()),
            _ => None,
        };
        if code == Some(ErrorCode::CONSUMER_NOT_FOUND) && !rechecked {
            rechecked = true;
            tokio::time::sleep(recheck_after).await;
            continue;
        }
        let gone = matches!(
            code,
            Some(ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND)
        );
        if gone || Instant::now() >= give_up {
            tracing::debug!(consumer = %name, error = %chain(&error),
                "watch consumer not deleted (gone, or left to its inactive threshold)");
            return;
        }
        delay = next_delay(delay, MAX_REWATCH_DELAY);
        tokio::time::sleep(delay).await;
    }
}

/// The revision of the last entry of the keys `filter` matches (0 if there is none): the head
/// a catch-up must reach. One request to the stream's leader, so it is not behind the watch.
pub(super) async fn head_revision(
    jetstream: &jetstream::Context,
    stream_name: &str,
    filter: &str,
) -> Result<u64, BoxError> {
    let stream = jetstream.get_stream_no_info(stream_name).await?;
    match stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(message.sequence),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// The next backoff delay: 100 ms, doubling, up to `max`.
pub(super) fn next_delay(delay: Duration, max: Duration) -> Duration {
    if delay.is_zero() {
        FIRST_REWATCH_DELAY
    } else {
        (delay * 2).min(max)
    }
}

/// One creation attempt: waits out its delay and any outage (the client queues requests made
/// while disconnected and sends them all on reconnect, which would create consumers nobody
/// waits for), checks the stream is still the one the position belongs to, then subscribes to
/// a fresh inbox and creates the consumer delivering to it (in that order, so nothing is pushed
/// before anyone listens).
pub(super) async fn create(request: CreateConsumerRequest) -> Result<Created, CreateFailure> {
    let CreateConsumerRequest {
        jetstream,
        client,
        stream_name,
        name,
        mut config,
        start_at,
        mut position,
        delay,
        connection_wait,
    } = request;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let waiting_since = Instant::now();
    while client.connection_state() != ConnectionState::Connected {
        if let Some(limit) = connection_wait {
            if waiting_since.elapsed() >= limit {
                return Err(CreateFailure::before_sending(WatchError::Disconnected {
                    waited: waiting_since.elapsed(),
                }));
            }
        }
        tokio::time::sleep(CONNECTION_POLL).await;
    }
    let inbox = client.new_inbox();
    // An inbox is a valid subject: a failure means the connection is closed for good.
    let subscriber = client
        .subscribe(inbox.clone())
        .await
        .map_err(|error| CreateFailure {
            error: WatchError::Subscribe(error),
            maybe_created: false,
            closed: true,
        })?;
    let stream = match jetstream.get_stream(&stream_name).await {
        Ok(stream) => stream,
        Err(error) => {
            let missing = matches!(error.kind(),
                GetStreamErrorKind::JetStream(error) if error.error_code() == ErrorCode::STREAM_NOT_FOUND);
            return Err(CreateFailure::before_sending(if missing {
                WatchError::BucketMissing {
                    stream: stream_name,
                }
            } else {
                WatchError::StreamInfo(error)
            }));
        }
    };
    let info = stream.cached_info();
    // Another stream of the same name (deleted and created again), or the same one with its
    // sequence gone back (memory storage after a restart): the old revisions mean nothing there.
    let new_stream = position.stream_created.is_some_and(|created| {
        created != info.created
            || position
                .last_revision
                .is_some_and(|last| info.state.last_sequence < last)
    });
    if new_stream {
        position = Position::fresh(start_at, info.created);
    } else {
        position.stream_created = Some(info.created);
    }
    // A catch-up of the latest values not started yet, in a bucket holding one message per key:
    // every message in sequence order, which the server sends with less work.
    if start_at == StartAt::LatestPerKey
        && position.last_revision.is_none()
        && !position.caught_up
        && one_message_per_key(info)
        && features::at_least(&client.server_info().version, SEQUENTIAL_CATCH_UP_SINCE)
    {
        position.sequential = true;
    }
    config.deliver_subject = inbox;
    config.deliver_policy = position.deliver_policy(start_at);
    config.name = Some(name.clone());
    let consumer = jetstream
        .create_consumer_on_stream(config, &stream_name)
        .await
        .map_err(|error| CreateFailure {
            // Even an error answer may come from a cluster that goes on to create it; a
            // deletion of a name that does not exist costs one request.
            maybe_created: true,
            closed: false,
            error: WatchError::CreateConsumer(error),
        })?;
    let info = consumer.cached_info();
    if position.last_revision.is_none()
        && position.first_new_revision.is_none()
        && start_at == StartAt::NewOnly
    {
        position.first_new_revision = Some(info.delivered.stream_sequence + 1);
    }
    if info.num_pending == 0 {
        position.caught_up = true;
    }
    Ok(Created {
        name,
        subscriber,
        position,
        new_stream,
        initial_pending: info.num_pending,
    })
}
