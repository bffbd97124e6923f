//! The connection itself: connecting with retries, following it as it drops and comes back,
//! and draining it at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::config::redact_url;
use super::settings::ConnectSettings;
use crate::error::{Error, Result};

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long queueing the close of an unreachable connection may take.
const CLOSE_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a flush at shutdown looks whether the connection has dropped meanwhile.
const STATE_POLL: Duration = Duration::from_millis(10);

/// An open connection: the client and its JetStream context.
pub(super) struct Connection {
    pub(super) client: async_nats::Client,
    pub(super) jetstream: jetstream::Context,
}

/// The connection as health checks and metrics see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionHealth {
    /// Connected now.
    pub(crate) connected: bool,
    /// How long the connection has been down, if it was up once and is down now.
    pub(crate) down_for: Option<Duration>,
    /// Times the connection was re-established after being lost.
    pub(crate) reconnects: u64,
    /// Messages dropped by the client because a subscription fell behind.
    pub(crate) slow_consumers: u64,
}

impl Connection {
    /// Connects, retrying with backoff until the connect timeout; a failure retrying cannot fix
    /// (credentials, TLS) ends it at once. Each (re)connection is counted in `connections`; the
    /// start of each outage is kept in `down_since`.
    pub(super) async fn open(
        settings: &ConnectSettings,
        connections: Arc<tokio::sync::watch::Sender<u64>>,
        down_since: Arc<Mutex<Option<Instant>>>,
        slow_consumers: Arc<AtomicU64>,
    ) -> Result<Self> {
        let url = redact_url(&settings.url);
        let (options, servers) = settings.connect_options().await?;
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = settings.connect_timeout.saturating_sub(started.elapsed());
            let connections = Arc::clone(&connections);
            let down_since = Arc::clone(&down_since);
            let slow_consumers = Arc::clone(&slow_consumers);
            let options = options
                .clone()
                .connection_timeout(remaining.clamp(Duration::from_millis(100), MAX_RETRY_DELAY))
                .reconnect_delay_callback(reconnect_delay)
                .event_callback(move |event| {
                    match event {
                        async_nats::Event::Connected => {
                            connections.send_modify(|count| *count += 1);
                            set_down_since(&down_since, None);
                        }
                        async_nats::Event::Disconnected => {
                            set_down_since(&down_since, Some(Instant::now()));
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            slow_consumers.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    async move { log_connection_event(event) }
                });
            match options.connect(servers.clone()).await {
                Ok(client) => {
                    tracing::info!(url = %url, attempts, "connected to NATS");
                    let jetstream = jetstream::new(client.clone());
                    return Ok(Self { client, jetstream });
                }
                Err(error) => {
                    // Retrying cannot fix these; retrying them would only hammer the server.
                    let permanent = matches!(
                        error.kind(),
                        async_nats::ConnectErrorKind::Authentication
                            | async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::ServerParse
                            | async_nats::ConnectErrorKind::Tls
                    ) || crate::error::is_certificate_error(&error);
                    if permanent || started.elapsed() + delay >= settings.connect_timeout {
                        return Err(Error::Connect {
                            url,
                            attempts,
                            elapsed: started.elapsed(),
                            tls_required: settings.tls_required(),
                            source: error,
                        });
                    }
                    tracing::warn!(url = %url, attempt = attempts, retry_in = ?delay,
                        error = %crate::error::chain(&error), "NATS not reachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// Flushes pending publishes and drains the connection (subscriptions stop after delivering
    /// what the server already sent), for at most `timeout`. A flush completes only once the
    /// server has answered, so with the server unreachable it is not tried at all, and one that
    /// takes longer than `timeout` is abandoned: either way with a log line.
    pub(super) async fn drain(&self, url: &str, timeout: Duration) {
        let client = &self.client;
        let unreachable = || async {
            tracing::warn!(url = %url,
                "NATS server unreachable at shutdown: not flushing; publishes not yet sent are \
                 abandoned and the connection is closed");
            // Only queues the close; bounded in case the client's command queue is full.
            let _ = tokio::time::timeout(CLOSE_REQUEST_TIMEOUT, client.drain()).await;
        };
        if !is_connected(client) {
            unreachable().await;
            return;
        }
        // A server that died just before the shutdown may not have been noticed yet: its
        // flush would never be answered, so the connection dropping ends the wait at once
        // rather than at the shutdown timeout. (Only the flush is raced: the drain itself
        // closes the connection.)
        let drained = tokio::time::timeout(timeout, async {
            tokio::select! {
                biased;
                flushed = client.flush() => {
                    if let Err(error) = flushed {
                        tracing::warn!(error = %error, "flushing the NATS connection failed");
                    }
                }
                () = disconnected(client) => return false,
            }
            if let Err(error) = client.drain().await {
                tracing::warn!(error = %error, "draining the NATS connection failed");
            }
            true
        })
        .await;
        if drained == Ok(false) {
            unreachable().await;
            return;
        }
        if drained.is_err() {
            tracing::warn!(url = %url, ?timeout,
                "the NATS connection did not flush within the shutdown timeout: publishes not \
                 yet sent are abandoned");
        }
    }
}

fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Resolves once the client is no longer connected, looking every [`STATE_POLL`].
async fn disconnected(client: &async_nats::Client) {
    while is_connected(client) {
        tokio::time::sleep(STATE_POLL).await;
    }
}

impl ConnectionHealth {
    pub(super) fn read(
        connection: Option<&Connection>,
        down_since: &Mutex<Option<Instant>>,
        connections: &tokio::sync::watch::Sender<u64>,
        slow_consumers: &AtomicU64,
    ) -> Self {
        let connected = connection.is_some_and(|connection| {
            connection.client.connection_state() == async_nats::connection::State::Connected
        });
        let down_for = match down_since.lock() {
            // The client's state turns before its `Disconnected` event reaches the callback:
            // an outage of an open connection seen here first starts now, so readiness keeps
            // its grace period instead of dropping at once.
            Ok(mut since) if !connected && connection.is_some() => {
                Some(since.get_or_insert_with(Instant::now).elapsed())
            }
            _ => None,
        };
        Self {
            connected,
            down_for,
            reconnects: connections.borrow().saturating_sub(1),
            slow_consumers: slow_consumers.load(Ordering::Relaxed),
        }
    }
}

/// Delay before reconnect attempt `attempts`: 0, then 2 ms doubling up to 1 s (async-nats's
/// default goes up to 4 s, which would delay resuming after a server restart).
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(10);
    Duration::from_millis(2u64.pow(exponent)).min(MAX_RECONNECT_DELAY)
}

/// Records when the connection went down (the first `Disconnected` of an outage), or that it
/// is up (`None`).
fn set_down_since(down_since: &Mutex<Option<Instant>>, now: Option<Instant>) {
    if let Ok(mut down_since) = down_since.lock() {
        match now {
            Some(now) => {
                down_since.get_or_insert(now);
            }
            None => *down_since = None,
        }
    }
}

fn log_connection_event(event: async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
        async_nats::Event::ClientError(error) => tracing::error!(%error, "NATS client error"),
        async_nats::Event::SlowConsumer(subscription) => {
            tracing::warn!(subscription,
            "a subscription fell behind and the client dropped a message for it (slow consumer)")
        }
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}
