//! `NatsBroker`: the handle to one NATS connection and the cache of the buckets used through
//! it; [`BrokerConfig`] says how to connect.

mod bucket_cache;
mod config;
mod connection;
mod messaging;
mod object_cache;
mod objects;
mod settings;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use bucket_cache::{BucketCache, Declare};
pub use config::{Authentication, BrokerConfig, DEFAULT_NATS_URL};
use connection::Connection;
pub(crate) use connection::ConnectionHealth;
use faststream_rules::KeyPattern;
pub use messaging::DEFAULT_REQUEST_TIMEOUT;
use object_cache::{DeclareStore, ObjectStoreCache};
pub use settings::DEFAULT_SUBSCRIPTION_CAPACITY;

use crate::error::{BoxError, Error, Result};
use crate::kv::bucket::BucketConfig;
use crate::kv::features;
use crate::kv::group::declare::{self, DeclaredGroup, GroupSpec};
use crate::kv::group::layout::GroupLayout;
use crate::kv::group::{GroupSettings, KvGroup};
use crate::kv::key_value::KeyValue;
use crate::kv::options::KvWatch;
use crate::kv::view::{self, Decode, KvView, DEFAULT_VIEW_CATCH_UP_TIMEOUT};
use crate::kv::watcher::{KvWatcher, ReconnectSignal};
use crate::object::config::ObjectStoreConfig;
use crate::object::store::ObjectStore;

/// A handle to one NATS connection and its buckets. Cheap to clone: clones share the connection
/// and the bucket cache. It has no settings of its own to change: they are the
/// [`BrokerConfig`] it was made from.
///
/// An [`App`](crate::App) makes its broker from the configuration it is given and connects it
/// when it starts (after the `on_startup` hooks, which receive it not yet connected); handlers
/// and `after_startup` hooks receive it connected. Outside an app, [`NatsBroker::connect`]
/// gives a connected broker.
///
/// ```no_run
/// use faststream_core::{BrokerConfig, NatsBroker};
///
/// # async fn demo() -> anyhow::Result<()> {
/// let broker = NatsBroker::connect(BrokerConfig::from_env()).await?;
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
    config: BrokerConfig,
    connection: OnceLock<Connection>,
    connecting: tokio::sync::Mutex<()>,
    buckets: BucketCache,
    object_stores: ObjectStoreCache,
    /// Counts (re)connections, so watches re-create their consumers as soon as the connection
    /// is back instead of waiting to notice the silence.
    connections: Arc<tokio::sync::watch::Sender<u64>>,
    /// Since when the connection is down (`None` while up), for a readiness check that lets a
    /// blip pass.
    down_since: Arc<Mutex<Option<Instant>>>,
    /// Messages the client dropped because a subscription fell behind (slow consumers).
    slow_consumers: Arc<std::sync::atomic::AtomicU64>,
}

impl NatsBroker {
    /// Connects to the servers of `config`, retrying with backoff (100 ms doubling up to 2 s)
    /// until its connect timeout, each failed attempt logged.
    pub async fn connect(config: BrokerConfig) -> Result<Self> {
        let broker = Self::new(config);
        broker.ensure_connected().await?;
        Ok(broker)
    }

    /// A broker for `config`, not connected yet: what an app holds before it starts.
    pub(crate) fn new(config: BrokerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                connection: OnceLock::new(),
                connecting: tokio::sync::Mutex::new(()),
                buckets: BucketCache::default(),
                object_stores: ObjectStoreCache::default(),
                connections: Arc::new(tokio::sync::watch::Sender::new(0)),
                down_since: Arc::default(),
                slow_consumers: Arc::default(),
            }),
        }
    }

    /// The configuration this broker connects with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The server URL, with any credentials replaced by `***`.
    pub fn url(&self) -> String {
        self.inner.config.url()
    }

    /// Whether the broker has connected (in `on_startup` hooks, not yet).
    pub fn is_connected(&self) -> bool {
        self.inner.connection.get().is_some()
    }

    /// Connects now unless connected already, as [`connect`](Self::connect) does: for an
    /// `on_startup` hook that needs the app's connection before the app makes it. Changes no
    /// setting.
    pub async fn ensure_connected(&self) -> Result<()> {
        let _guard = self.inner.connecting.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        // A bad URL is named with the variable it came from.
        self.inner.config.validate()?;
        let connection = Connection::open(
            &self.inner.config.settings,
            Arc::clone(&self.inner.connections),
            Arc::clone(&self.inner.down_since),
            Arc::clone(&self.inner.slow_consumers),
        )
        .await?;
        // The mutex guard makes this the only initialisation.
        let _ = self.inner.connection.set(connection);
        Ok(())
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
        ConnectionHealth::read(
            self.inner.connection.get(),
            &self.inner.down_since,
            &self.inner.connections,
            &self.inner.slow_consumers,
        )
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
        self.watch(&pattern, options, WatchOwner::Direct).await
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
    /// `T`; returns once the view holds the bucket's state, or fails with
    /// [`Error::CatchUpTimeout`] naming the bucket if it does not within its
    /// [`catch_up_timeout`](crate::kv::KvViewOptions::catch_up_timeout) (default 60 s).
    /// `options` is the bucket's name or a [`KvViewOptions`](crate::kv::KvViewOptions) (for
    /// `declare(false)`, `timeout`, `inactive_threshold`, `catch_up_timeout`). See [`KvView`]
    /// for what it holds.
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
        let timeout = options
            .chosen_catch_up_timeout()
            .unwrap_or(DEFAULT_VIEW_CATCH_UP_TIMEOUT);
        let view = self.start_view(options, pattern, decode).await?;
        let Ok(caught_up) = tokio::time::timeout(timeout, view.wait_caught_up()).await else {
            // Dropping the view stops its watch.
            return Err(Error::CatchUpTimeout {
                timeout,
                behind: vec![format!(
                    "view of `{pattern}` in bucket `{bucket}`: {}",
                    view.status().behind()
                )],
            });
        };
        caught_up.map_err(|source| Error::Watch {
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
        let watcher = self.watch(&pattern, watch, WatchOwner::View).await?;
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
        if options.is_objects() {
            return self.object_meta_bucket(options).await;
        }
        self.declare(options.bucket(), Declare::for_watch(options))
            .await
    }

    /// Starts a watch of `pattern` (settings already validated) for `watcher`.
    pub(crate) async fn watch(
        &self,
        pattern: &KeyPattern,
        options: KvWatch,
        watcher: WatchOwner<'_>,
    ) -> Result<KvWatcher> {
        let store = self.watched_bucket(&options).await?;
        let bucket = options.bucket().to_owned();
        // The server shows the description with the consumer: name who is watching.
        let (watcher, description) = match watcher {
            WatchOwner::Subscriber(name) => (
                format!("subscriber `{name}`"),
                format!("faststream subscriber {name}"),
            ),
            WatchOwner::Direct => (
                "kv_watch".to_owned(),
                format!("faststream watch {}", pattern.as_str()),
            ),
            WatchOwner::Objects => ("obj_watch".to_owned(), "faststream object watch".to_owned()),
            WatchOwner::View => (
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

    /// The object store named `bucket`: used as it is if it exists (whatever its
    /// configuration), created with the default configuration if not. FastStream's
    /// `broker.object_storage(bucket)`.
    ///
    /// Cached per store: only the first call for a store makes requests.
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// let files = broker.object_storage("files").await?;
    /// files.put_bytes("hello.txt", "Hello!".into()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn object_storage(&self, bucket: &str) -> Result<ObjectStore> {
        self.declare_object_store(bucket, DeclareStore::UseOrCreate)
            .await
    }

    /// The object store with exactly `config`: created with it if missing; if the store exists
    /// with another configuration, [`Error::ObjectStoreConfigConflict`] names every differing
    /// field. Out-of-range values are an error before any request.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use faststream_core::object::ObjectStoreConfig;
    ///
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// let config = ObjectStoreConfig::new("reports").ttl(Duration::from_secs(30 * 24 * 3600));
    /// let reports = broker.object_storage_with(config).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn object_storage_with(&self, config: ObjectStoreConfig) -> Result<ObjectStore> {
        let bucket = config.bucket().to_owned();
        self.declare_object_store(&bucket, DeclareStore::Exactly(&config))
            .await
    }

    /// The existing object store named `bucket`, never created (FastStream's
    /// `object_storage(bucket, declare=False)`); a missing store is
    /// [`Error::ObjectStoreNotFound`].
    pub async fn lookup_object_storage(&self, bucket: &str) -> Result<ObjectStore> {
        self.declare_object_store(bucket, DeclareStore::LookupOnly)
            .await
    }

    async fn declare_object_store(
        &self,
        bucket: &str,
        declare: DeclareStore<'_>,
    ) -> Result<ObjectStore> {
        let connection = self.connection("object_storage")?;
        self.inner
            .object_stores
            .get_or_declare(&connection.jetstream, bucket, declare)
            .await
    }

    /// Flushes pending publishes and drains the connection, for at most `timeout`; see
    /// [`Connection::drain`].
    pub(crate) async fn drain(&self, timeout: Duration) {
        if let Some(connection) = self.inner.connection.get() {
            connection.drain(&self.url(), timeout).await;
        }
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.inner.config)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// Who a watch is for, as errors and the server's consumer description name it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WatchOwner<'a> {
    /// The subscriber of this name.
    Subscriber(&'a str),
    /// A [`NatsBroker::kv_watch`] caller.
    Direct,
    /// A [`NatsBroker::obj_watch`] caller.
    Objects,
    /// A [`KvView`].
    View,
}
