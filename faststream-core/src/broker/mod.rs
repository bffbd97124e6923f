//! `NatsBroker`: the connection to NATS, and the cache of the buckets used through it.

mod bucket_cache;
mod settings;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use bucket_cache::{BucketCache, Declare};
use faststream_rules::KeyPattern;
use settings::ConnectSettings;

use crate::error::{BoxError, Error, Result};
use crate::kv::bucket::BucketConfig;
use crate::kv::features;
use crate::kv::group::declare::{self, DeclaredGroup, GroupSpec};
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::{GroupSettings, KvGroup};
use crate::kv::key_value::KeyValue;
use crate::kv::options::KvWatch;
use crate::kv::view::{self, Decode, KvView};
use crate::kv::watcher::{KvWatcher, ReconnectSignal};

/// The URL used when `NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long queueing the close of an unreachable connection may take.
const CLOSE_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// A handle to one NATS connection and its buckets. Cheap to clone: clones share the connection
/// and the bucket cache.
///
/// Configure it first, then clone or connect it: the builder methods (`user_and_password`,
/// `tls_root_certificate`, `connect_timeout`, ...) change this very broker, and panic on one
/// that has clones or is connected, where a change could not reach the clones (it would make
/// a second, unconnected broker). For other settings make another broker with
/// [`NatsBroker::new`].
///
/// The broker connects when the [`App`](crate::App) starts (after the `on_startup` hooks); handlers
/// and `after_startup` hooks receive it connected.
///
/// ```no_run
/// use faststream_core::NatsBroker;
///
/// # async fn demo() -> anyhow::Result<()> {
/// let broker = NatsBroker::from_env();
/// broker.connect().await?;
/// let settings = broker.key_value("settings").await?; // created if missing
/// settings.put("mode", "fast".into()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ConnectSettings,
    connection: OnceLock<Connection>,
    connecting: tokio::sync::Mutex<()>,
    buckets: BucketCache,
    /// Counts (re)connections, so watches re-create their consumers as soon as the connection
    /// is back instead of waiting to notice the silence.
    connections: Arc<tokio::sync::watch::Sender<u64>>,
    /// Since when the connection is down (`None` while up), for a readiness check that lets a
    /// blip pass.
    down_since: Arc<Mutex<Option<Instant>>>,
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
}

struct Connection {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl NatsBroker {
    /// A broker for the server(s) at `url` (`nats://host:port`, several separated by commas;
    /// `nats://user:password@host`, `nats://token@host` and `tls://host` work as NATS defines
    /// them).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_settings(ConnectSettings::new(url.into(), DEFAULT_CONNECT_TIMEOUT))
    }

    /// A broker configured from the environment, with the variables of the `nats` CLI:
    /// `NATS_URL` (default `nats://127.0.0.1:4222`), `NATS_USER` + `NATS_PASSWORD`,
    /// `NATS_TOKEN`, `NATS_NKEY` (a seed file), `NATS_CREDS` (a `.creds` file), `NATS_CA`,
    /// `NATS_CERT` + `NATS_KEY`.
    pub fn from_env() -> Self {
        Self::with_settings(ConnectSettings::from_vars(
            |name| std::env::var(name).ok(),
            DEFAULT_NATS_URL,
            DEFAULT_CONNECT_TIMEOUT,
        ))
    }

    fn with_settings(settings: ConnectSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                connection: OnceLock::new(),
                connecting: tokio::sync::Mutex::new(()),
                buckets: BucketCache::default(),
                connections: Arc::new(tokio::sync::watch::Sender::new(0)),
                down_since: Arc::default(),
            }),
        }
    }

    /// Changes the settings of this broker. Only a broker that is neither connected nor cloned
    /// can change: otherwise the change would silently make a second broker, unconnected, while
    /// the clones (an `App`'s, a handler's) keep the old settings.
    fn configure(
        mut self,
        method: &'static str,
        change: impl FnOnce(&mut ConnectSettings),
    ) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) if inner.connection.get().is_none() => {
                change(&mut inner.settings);
                self
            }
            _ => panic!(
                "NatsBroker::{method} called on a broker that is connected or has clones: \
                 configure a broker before cloning or connecting it (for different settings, \
                 make another with NatsBroker::new)"
            ),
        }
    }

    /// How long [`connect`](Self::connect) keeps retrying an unreachable server before it fails
    /// (default 10 s).
    #[must_use]
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.configure("connect_timeout", |settings| {
            settings.connect_timeout = timeout
        })
    }

    /// The connection name the server shows in its monitoring.
    #[must_use]
    pub fn connection_name(self, name: impl Into<String>) -> Self {
        self.configure("connection_name", |settings| {
            settings.name = Some(name.into())
        })
    }

    /// Authenticates with a user and password.
    #[must_use]
    pub fn user_and_password(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.configure("user_and_password", |settings| {
            settings.user_and_password(user.into(), password.into())
        })
    }

    /// Authenticates with a token.
    #[must_use]
    pub fn token(self, token: impl Into<String>) -> Self {
        self.configure("token", |settings| settings.token(token.into()))
    }

    /// Authenticates with an NKey seed (`SU...`).
    #[must_use]
    pub fn nkey(self, seed: impl Into<String>) -> Self {
        self.configure("nkey", |settings| settings.nkey_seed(seed.into()))
    }

    /// Authenticates with a `.creds` file (user JWT and seed), read when connecting.
    #[must_use]
    pub fn credentials_file(self, path: impl Into<PathBuf>) -> Self {
        self.configure("credentials_file", |settings| {
            settings.auth = settings::Auth::CredentialsFile(path.into())
        })
    }

    /// Trusts the CA certificate(s) in this PEM file for the server's TLS certificate; call it
    /// again to trust several files. Requires TLS: a server offering none is refused (before any
    /// credential is sent).
    #[must_use]
    pub fn tls_root_certificate(self, path: impl Into<PathBuf>) -> Self {
        self.configure("tls_root_certificate", |settings| {
            settings.tls.root_certificates.push(path.into())
        })
    }

    /// Presents this client certificate and key (PEM files) to servers that verify clients.
    /// Requires TLS, like [`tls_root_certificate`](Self::tls_root_certificate).
    #[must_use]
    pub fn tls_client_certificate(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.configure("tls_client_certificate", |settings| {
            settings.tls.client_certificate = Some((cert.into(), key.into()));
        })
    }

    /// Refuses to connect without TLS, even if the server does not require it. A CA or client
    /// certificate requires TLS whatever this says.
    #[must_use]
    pub fn require_tls(self, required: bool) -> Self {
        self.configure("require_tls", |settings| settings.tls.required = required)
    }

    /// The server URL, with any credentials replaced by `***`.
    pub fn url(&self) -> String {
        redact_url(&self.inner.settings.url)
    }

    /// Whether [`connect`](Self::connect) has succeeded.
    pub fn is_connected(&self) -> bool {
        self.inner.connection.get().is_some()
    }

    /// Connects, retrying with backoff (100 ms doubling up to 2 s) until the connect timeout.
    /// Each failed attempt is logged. Does nothing if already connected.
    pub async fn connect(&self) -> Result<()> {
        let _guard = self.inner.connecting.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        let url = self.url();
        let settings = &self.inner.settings;
        let (options, servers) = settings.connect_options().await?;
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = settings.connect_timeout.saturating_sub(started.elapsed());
            let connections = Arc::clone(&self.inner.connections);
            let down_since = Arc::clone(&self.inner.down_since);
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
                        _ => {}
                    }
                    async move { log_connection_event(event) }
                });
            match options.connect(servers.clone()).await {
                Ok(client) => {
                    tracing::info!(url = %url, attempts, "connected to NATS");
                    let jetstream = jetstream::new(client.clone());
                    // The mutex guard makes this the only initialisation.
                    let _ = self.inner.connection.set(Connection { client, jetstream });
                    return Ok(());
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

    fn connection(&self, operation: &'static str) -> Result<&Connection> {
        self.inner
            .connection
            .get()
            .ok_or(Error::NotConnected { operation })
    }

    /// The underlying async-nats client, for anything this crate does not wrap.
    pub fn client(&self) -> Result<async_nats::Client> {
        Ok(self.connection("client")?.client.clone())
    }

    /// The JetStream context of the connection.
    pub fn jetstream(&self) -> Result<jetstream::Context> {
        Ok(self.connection("jetstream")?.jetstream.clone())
    }

    /// Whether the connection is up, since when it is down, and how often it came back.
    pub(crate) fn connection_health(&self) -> ConnectionHealth {
        let connected = self.inner.connection.get().is_some_and(|connection| {
            connection.client.connection_state() == async_nats::connection::State::Connected
        });
        let down_for = match self.inner.down_since.lock() {
            Ok(down_since) if !connected => down_since.map(|since| since.elapsed()),
            _ => None,
        };
        ConnectionHealth {
            connected,
            down_for,
            reconnects: self.inner.connections.borrow().saturating_sub(1),
        }
    }

    /// Changes each time the connection is (re)established.
    fn reconnects(&self) -> ReconnectSignal {
        self.inner.connections.subscribe()
    }

    /// The bucket named `bucket`: used as it is if it exists (whatever its configuration, so it
    /// may have been made by another service), created with the default configuration if not.
    ///
    /// Cached per bucket: only the first call for a bucket makes requests.
    pub async fn key_value(&self, bucket: &str) -> Result<KeyValue> {
        self.declare(bucket, Declare::UseOrCreate).await
    }

    /// The bucket with exactly `config`: created with it if missing; if the bucket exists with
    /// another configuration, an error names every differing field. Out-of-range values are an
    /// error before any request.
    ///
    /// ```no_run
    /// use faststream_core::{kv::BucketConfig, NatsBroker};
    ///
    /// # async fn demo(broker: NatsBroker) -> anyhow::Result<()> {
    /// let audit = broker.key_value_with(BucketConfig::new("audit").history(64)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn key_value_with(&self, config: BucketConfig) -> Result<KeyValue> {
        let bucket = config.bucket().to_owned();
        self.declare(&bucket, Declare::Exactly(&config)).await
    }

    /// The existing bucket named `bucket`; a missing bucket is [`Error::BucketNotFound`].
    pub async fn lookup_key_value(&self, bucket: &str) -> Result<KeyValue> {
        self.declare(bucket, Declare::LookupOnly).await
    }

    /// Watches `pattern` in the bucket of `options` without a handler: FastStream's `get_one`
    /// and async iteration over a KV subscriber. The bucket is declared as `options` says, and
    /// the watch starts as a subscriber's would (latest value per key first, unless
    /// `include_history` or `updates_only`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use faststream_core::{KvWatch, NatsBroker};
    ///
    /// # async fn demo(broker: NatsBroker) -> anyhow::Result<()> {
    /// let mut watcher = broker.kv_watch("orders.*", KvWatch::new("shop")).await?;
    /// if let Some(order) = watcher.get_one(Duration::from_secs(1)).await {
    ///     println!("{} = {:?}", order.key(), order.text());
    /// }
    /// while let Some(change) = watcher.next().await {
    ///     println!("{} changed at revision {}", change.key(), change.revision());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn kv_watch(&self, pattern: &str, options: KvWatch) -> Result<KvWatcher> {
        let pattern = KeyPattern::parse(pattern)?;
        options.validate()?;
        self.watch(&pattern, options, Watcher::Direct).await
    }

    /// The consumer group `group` on `bucket`, to see its members, partitions, pending work
    /// and dead letters, or to delete it (see [`KvGroup`]). The group must exist: it is created
    /// by its first member (a subscriber with [`KvWatch::group`]).
    pub async fn kv_group(&self, bucket: &str, group: &str) -> Result<KvGroup> {
        faststream_rules::validate_bucket(bucket)?;
        faststream_rules::validate_group(group)?;
        KvGroup::open(self.jetstream()?, bucket, group).await
    }

    /// [`Error::ServerTooOld`] if the connected server cannot run consumer groups.
    pub(crate) fn require_groups(&self) -> Result<()> {
        features::require(
            "consumer groups (`KvWatch::group`)",
            features::GROUPS_SINCE,
            &self.client()?.server_info().version,
        )
    }

    /// Creates or joins the consumer group of a subscriber whose settings passed validation;
    /// refuses a server older than 2.11 before any request.
    pub(crate) async fn declare_group(
        &self,
        pattern: &KeyPattern,
        watch: &KvWatch,
        settings: &GroupSettings,
    ) -> Result<(GroupLayout, DeclaredGroup)> {
        self.require_groups()?;
        let jetstream = self.jetstream()?;
        let store = self.watched_bucket(watch).await?;
        let layout = GroupLayout::new(watch.bucket(), settings.name());
        let spec = GroupSpec {
            layout: layout.clone(),
            pattern: pattern.as_str().to_owned(),
            filter: pattern.filter().to_owned(),
            start: watch.start_at(),
            settings: settings.clone(),
        };
        let declared = declare::declare(&jetstream, &store.store().stream, &spec)
            .await
            .map_err(|source| Error::Group {
                bucket: watch.bucket().to_owned(),
                group: settings.name().to_owned(),
                source: Box::new(source),
            })?;
        Ok((layout, declared))
    }

    /// A live view of the keys matching `pattern` in a bucket, values decoded from JSON into
    /// `T`; returns once the view holds the bucket's state. `options` is the bucket's name or a
    /// [`KvViewOptions`](crate::kv::KvViewOptions) (for `declare(false)`, `timeout`,
    /// `inactive_threshold`). See [`KvView`] for what it holds.
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Route {
    ///     upstream: String,
    /// }
    ///
    /// let routes = broker.kv_view::<Route>("routing", "routes.>").await?;
    /// if let Some(route) = routes.get("routes.checkout") {
    ///     println!("checkout goes to {}", route.upstream);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn kv_view<T>(
        &self,
        options: impl Into<crate::kv::KvViewOptions>,
        pattern: &str,
    ) -> Result<KvView<T>>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.caught_up_view(options.into(), pattern, view::json())
            .await
    }

    /// A live view of raw values, like [`kv_view`](Self::kv_view) without decoding.
    pub async fn kv_view_raw(
        &self,
        options: impl Into<crate::kv::KvViewOptions>,
        pattern: &str,
    ) -> Result<KvView<bytes::Bytes>> {
        self.caught_up_view(options.into(), pattern, view::raw())
            .await
    }

    /// A live view whose values `decode` makes (text, protobuf, ...), like
    /// [`kv_view`](Self::kv_view). A value `decode` rejects leaves its key out of the view.
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// let names = broker
    ///     .kv_view_decoded("users", "names.*", |value| String::from_utf8(value.to_vec()))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn kv_view_decoded<T, E>(
        &self,
        options: impl Into<crate::kv::KvViewOptions>,
        pattern: &str,
        decode: impl Fn(&bytes::Bytes) -> std::result::Result<T, E> + Send + Sync + 'static,
    ) -> Result<KvView<T>>
    where
        T: Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let decode: Decode<T> = std::sync::Arc::new(move |value| decode(value).map_err(Into::into));
        self.caught_up_view(options.into(), pattern, decode).await
    }

    async fn caught_up_view<T: Send + Sync + 'static>(
        &self,
        options: crate::kv::KvViewOptions,
        pattern: &str,
        decode: Decode<T>,
    ) -> Result<KvView<T>> {
        let bucket = options.bucket().to_owned();
        let view = self.start_view(options, pattern, decode).await?;
        view.wait_caught_up().await.map_err(|source| Error::Watch {
            watcher: "view".to_owned(),
            bucket,
            key: pattern.to_owned(),
            source: Box::new(source),
        })?;
        Ok(view)
    }

    /// Starts a view; it is filled in the background (see `KvView::wait_caught_up`).
    pub(crate) async fn start_view<T: Send + Sync + 'static>(
        &self,
        options: crate::kv::KvViewOptions,
        pattern: &str,
        decode: Decode<T>,
    ) -> Result<KvView<T>> {
        let pattern = KeyPattern::parse(pattern)?;
        options.validate()?;
        let watch = options.to_watch();
        let store = self.watched_bucket(&watch).await?;
        // Without limit markers the server says nothing when a key ages out.
        let config = &store.store().stream.cached_info().config;
        let ttl = (!config.max_age.is_zero() && config.subject_delete_marker_ttl.is_none())
            .then_some(config.max_age);
        let bucket = watch.bucket().to_owned();
        let watcher = self.watch(&pattern, watch, Watcher::View).await?;
        KvView::start(watcher, pattern.as_str().to_owned(), decode, ttl).map_err(|source| {
            Error::Watch {
                watcher: "view".to_owned(),
                bucket,
                key: pattern.as_str().to_owned(),
                source: Box::new(source),
            }
        })
    }

    /// The bucket a watch is on, declared or only looked up as its settings say.
    pub(crate) async fn watched_bucket(&self, options: &KvWatch) -> Result<KeyValue> {
        self.declare(options.bucket(), Declare::for_watch(options))
            .await
    }

    /// Starts a watch of `pattern` (settings already validated) for `watcher`.
    pub(crate) async fn watch(
        &self,
        pattern: &KeyPattern,
        options: KvWatch,
        watcher: Watcher<'_>,
    ) -> Result<KvWatcher> {
        let store = self.watched_bucket(&options).await?;
        let bucket = options.bucket().to_owned();
        // The server shows the description with the consumer: name who is watching.
        let (watcher, description) = match watcher {
            Watcher::Subscriber(name) => (
                format!("subscriber `{name}`"),
                format!("faststream subscriber {name}"),
            ),
            Watcher::Direct => (
                "kv_watch".to_owned(),
                format!("faststream watch {}", pattern.as_str()),
            ),
            Watcher::View => (
                "view".to_owned(),
                format!("faststream view {}", pattern.as_str()),
            ),
        };
        KvWatcher::start(
            self.jetstream()?,
            self.reconnects(),
            &store,
            pattern.filter(),
            options,
            description,
        )
        .await
        .map_err(|source| Error::Watch {
            watcher,
            bucket,
            key: pattern.as_str().to_owned(),
            source: Box::new(source),
        })
    }

    async fn declare(&self, bucket: &str, declare: Declare<'_>) -> Result<KeyValue> {
        let connection = self.connection("key_value")?;
        self.inner
            .buckets
            .get_or_declare(&connection.jetstream, bucket, declare)
            .await
    }

    /// Flushes pending publishes and drains the connection (subscriptions stop after delivering
    /// what the server already sent), for at most `timeout`. A flush completes only once the
    /// server has answered, so with the server unreachable it is not tried at all, and one that
    /// takes longer than `timeout` is abandoned: either way with a log line.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let Ok(connection) = self.connection("drain") else {
            return;
        };
        let client = &connection.client;
        let url = self.url();
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(url = %url,
                "NATS server unreachable at shutdown: not flushing; publishes not yet sent are \
                 abandoned and the connection is closed");
            // Only queues the close; bounded in case the client's command queue is full.
            let _ = tokio::time::timeout(CLOSE_REQUEST_TIMEOUT, client.drain()).await;
            return;
        }
        let drained = tokio::time::timeout(timeout, async {
            if let Err(error) = client.flush().await {
                tracing::warn!(error = %error, "flushing the NATS connection failed");
            }
            if let Err(error) = client.drain().await {
                tracing::warn!(error = %error, "draining the NATS connection failed");
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(url = %url, ?timeout,
                "the NATS connection did not flush within the shutdown timeout: publishes not \
                 yet sent are abandoned");
        }
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        f.debug_struct("NatsBroker")
            .field("url", &self.url())
            .field("auth", &settings.auth)
            .field("tls", &settings.tls)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// Who a watch is for, as errors and the server's consumer description name it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Watcher<'a> {
    /// The subscriber of this name.
    Subscriber(&'a str),
    /// A [`NatsBroker::kv_watch`] caller.
    Direct,
    /// A [`KvView`].
    View,
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
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}

/// Replaces `user:password@` or `token@` in each URL of a comma-separated list with `***@`.
pub(crate) fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = match url.find("://") {
                Some(at) => url.split_at(at + 3),
                None => ("", url),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::{redact_url, NatsBroker};
    use std::sync::Arc;

    #[test]
    fn builder_methods_configure_the_broker_itself() {
        let broker = NatsBroker::new("nats://127.0.0.1:1")
            .connection_name("svc")
            .connect_timeout(std::time::Duration::from_secs(3));
        assert_eq!(Arc::strong_count(&broker.inner), 1);
        assert_eq!(broker.inner.settings.name.as_deref(), Some("svc"));
    }

    #[test]
    #[should_panic(expected = "configure a broker before cloning or connecting it")]
    fn builder_methods_on_a_shared_broker_panic() {
        let broker = NatsBroker::new("nats://127.0.0.1:1");
        let _given_to_the_app = broker.clone();
        let _ = broker.token("t0k");
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact_url("nats://alice:s3cret@host:4222, tls://tok@h2"),
            "nats://***@host:4222,tls://***@h2"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}
