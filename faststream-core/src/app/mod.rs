//! `App`: the builder a service configures, and `run_until`, which sets up observability,
//! checks what is registered and drives the lifecycle (its stages: `lifecycle.rs`).

mod asyncapi;
mod catch_up;
mod checks;
mod hooks;
mod lifecycle;
mod running;
mod subjects;
mod subscribers;
mod views;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::asyncapi::AppInfo;
use crate::broker::{BrokerConfig, NatsBroker};
use crate::context::AppContext;
use crate::error::Result;
use crate::handler::describe::HandlerDoc;
use crate::handler::{BoxedHandler, BoxedHook, Handler, Hook};
use crate::kv::options::KvWatch;
use crate::kv::view::{self, Decode, KvViewOptions};
use crate::nats::Subscription;
use crate::observe::http::HttpBinding;
use crate::observe::setup::ObserveSettings;
use crate::registry::{self, HookSpec, Registry, Scope, SubjectSpec, SubscriberSpec};
use crate::signal::ShutdownSignals;
use crate::type_map::TypeMap;
use faststream_rules::HookStage;

use asyncapi::served_documents;
use running::{RunningApp, Timeouts};
use views::ViewStart;

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A service: one broker, its subscribers and hooks, and their lifecycle.
///
/// By default it runs every `#[subscriber]` and hook linked into the binary.
///
/// ```no_run
/// use faststream_core::{App, BrokerConfig};
///
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     App::new(BrokerConfig::from_env()).run().await?;
///     Ok(())
/// }
/// ```
///
/// Hooks of one kind run by ascending `order` (`#[after_startup(order = -1)]`, default 0), then
/// by path (`crate::module::fn_name`), so the order is the same on every run.
#[derive(Debug)]
pub struct App {
    broker: NatsBroker,
    state: TypeMap,
    scope: Scope,
    subscribers: Vec<SubscriberSpec>,
    subjects: Vec<SubjectSpec>,
    hooks: Vec<HookSpec>,
    timeouts: Timeouts,
    /// The declared views' slots, by value type.
    views: TypeMap,
    view_starts: Vec<ViewStart>,
    observe: ObserveSettings,
    /// The `info` of the AsyncAPI document.
    info: AppInfo,
    /// Problems found while building the app, reported with the others before connecting.
    problems: Vec<String>,
}

impl App {
    /// An app connecting with `config`, with every registered subscriber and hook.
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            broker: NatsBroker::new(config),
            state: TypeMap::default(),
            scope: Scope::All,
            subscribers: Vec::new(),
            subjects: Vec::new(),
            hooks: Vec::new(),
            timeouts: Timeouts {
                shutdown: DEFAULT_SHUTDOWN_TIMEOUT,
                handler: None,
                catch_up: None,
            },
            views: TypeMap::default(),
            view_starts: Vec::new(),
            observe: ObserveSettings::default(),
            info: AppInfo::default(),
            problems: Vec::new(),
        }
    }

    /// The app's broker: not connected until the app connects it when it starts (after the
    /// `on_startup` hooks), and usable by the caller from then on, as by handlers and hooks.
    pub fn broker(&self) -> NatsBroker {
        self.broker.clone()
    }

    /// Serves `GET /metrics` (Prometheus text), `GET /health/live` and `GET /health/ready` on
    /// `addr` (`host:port`; port 0 picks a free one) from the start of the lifecycle to its
    /// end. Without it, the address comes from the `FASTSTREAM_HTTP_ADDR` environment
    /// variable; with neither, nothing is served. An address that cannot be bound fails
    /// start-up with [`Error::HttpBind`](crate::Error::HttpBind) naming it.
    ///
    /// `/health/ready` answers 200 only while the app is started (its `after_startup` hooks
    /// done), connected to NATS and every subscriber live (caught up, its handler too; a
    /// consumer-group member joined, holding partitions or not); 503 otherwise, with a JSON
    /// body naming each subscriber's state. The README lists the metrics.
    ///
    /// ```no_run
    /// use faststream_core::{App, BrokerConfig};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .http("0.0.0.0:9464")
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.observe.http = Some(HttpBinding::Addr(addr.into()));
        self
    }

    /// Serves the endpoints of [`http`](Self::http) on a listener bound by the caller, who then
    /// knows its address before the app starts (port 0 picks a free port race-free).
    ///
    /// ```no_run
    /// use faststream_core::{App, BrokerConfig};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let metrics_url = format!("http://{}/metrics", listener.local_addr()?);
    /// let app = App::new(BrokerConfig::from_env()).http_listener(listener);
    /// # drop(metrics_url);
    /// app.run().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn http_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.observe.http = Some(HttpBinding::Listener(listener));
        self
    }

    /// How long a client of the HTTP endpoints has to send a request's headers (default 30 s,
    /// hyper's figure), counted from when its connection is accepted or its previous response
    /// was sent; a connection that sends nothing, or too slowly (slowloris), is closed after
    /// it. An orchestrator's probe sends its request at once, and a scraper keeping its
    /// connection open between scrapes reconnects when it was closed.
    #[must_use]
    pub fn http_header_timeout(mut self, timeout: Duration) -> Self {
        self.observe.http_limits.header_timeout = timeout;
        self
    }

    /// The most connections the HTTP endpoints hold at once (default 256: their clients are a
    /// scraper and some probes, and each connection is an open file). At the limit the server
    /// stops accepting, and new connections wait in the listen queue until one closes (at the
    /// latest after [`http_header_timeout`](Self::http_header_timeout)): a request arriving
    /// then is answered late rather than refused.
    #[must_use]
    pub fn http_max_connections(mut self, max: usize) -> Self {
        self.observe.http_limits.max_connections = max;
        self
    }

    /// How long the connection to NATS may be down, or a watch re-create its consumer, before
    /// `/health/ready` reports it (default 2 s), so a blip or a leader election does not take
    /// the service out of rotation.
    #[must_use]
    pub fn readiness_grace(mut self, grace: Duration) -> Self {
        self.observe.readiness_grace = Some(grace);
        self
    }

    /// Serves the metrics of `registry` on `/metrics` too, so a service's own metrics come
    /// from the same endpoint as the app's.
    ///
    /// ```no_run
    /// use faststream_core::prometheus_client::metrics::counter::Counter;
    /// use faststream_core::prometheus_client::registry::Registry;
    /// use faststream_core::{App, BrokerConfig};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// let orders: Counter = Counter::default();
    /// let mut registry = Registry::default();
    /// registry.register("shop_orders", "Orders seen", orders.clone());
    /// App::new(BrokerConfig::from_env())
    ///     .http("127.0.0.1:9464")
    ///     .prometheus_registry(registry)
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn prometheus_registry(mut self, registry: prometheus_client::registry::Registry) -> Self {
        self.observe.registry = Some(registry);
        self
    }

    /// Exports the per-entry spans and the metrics over OTLP (the `otlp` feature); see
    /// [`otlp`](crate::otlp).
    #[cfg(feature = "otlp")]
    #[must_use]
    pub fn otlp(mut self, otlp: crate::observe::otlp::Otlp) -> Self {
        self.observe.otlp = Some(otlp);
        self
    }

    /// Adds shared state, read by handlers and hooks with [`State<T>`](crate::State). One value
    /// per type; giving a type again replaces the earlier value.
    #[must_use]
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// Declares a live view of the keys matching `pattern` in a bucket, values decoded from JSON
    /// into `T`, for handlers and hooks to take as a [`KvView<T>`](crate::KvView) argument.
    /// `options` is the bucket's name or a [`KvViewOptions`], as for
    /// [`NatsBroker::kv_view`](crate::NatsBroker::kv_view).
    ///
    /// The views start after connecting and before the subscribers' watches, and start-up
    /// waits until each holds its bucket's state (up to the view's
    /// [`catch_up_timeout`](KvViewOptions::catch_up_timeout) if set, else the
    /// [`wait_for_catch_up`](Self::wait_for_catch_up) timeout, else 60 s), so every
    /// handler call and `after_startup` hook finds them caught up. `on_startup` hooks run
    /// before connecting and cannot take one. One view per value type, as with `State<T>`:
    /// declaring a second view of the same `T` is a setup error (wrap the type in a newtype to
    /// hold two views of the same values).
    ///
    /// ```no_run
    /// use faststream_core::{subscriber, App, BrokerConfig, KvView};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Flag {
    ///     enabled: bool,
    /// }
    ///
    /// #[subscriber("orders.*", kv_watch = "shop")]
    /// async fn on_order(order: String, flags: KvView<Flag>) {
    ///     if flags.get("orders.audit").is_some_and(|flag| flag.enabled) {
    ///         println!("audit: {order}");
    ///     }
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .with_kv_view::<Flag>("flags", ">")
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_kv_view<T>(
        self,
        options: impl Into<KvViewOptions>,
        pattern: impl Into<String>,
    ) -> Self
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.add_view(options.into(), pattern.into(), view::json::<T>())
    }

    /// Declares a live view whose values `decode` makes, like
    /// [`with_kv_view`](Self::with_kv_view); raw bytes are `|value| Ok::<_, Infallible>(value.clone())`.
    #[must_use]
    pub fn with_kv_view_decoded<T, E>(
        self,
        options: impl Into<KvViewOptions>,
        pattern: impl Into<String>,
        decode: impl Fn(&bytes::Bytes) -> std::result::Result<T, E> + Send + Sync + 'static,
    ) -> Self
    where
        T: Send + Sync + 'static,
        E: Into<crate::error::BoxError>,
    {
        let decode: Decode<T> = Arc::new(move |value| decode(value).map_err(Into::into));
        self.add_view(options.into(), pattern.into(), decode)
    }

    fn add_view<T: Send + Sync + 'static>(
        mut self,
        options: KvViewOptions,
        pattern: String,
        decode: Decode<T>,
    ) -> Self {
        match ViewStart::declare(&mut self.views, options, pattern, decode) {
            Ok(start) => self.view_starts.push(start),
            Err(problem) => self.problems.push(problem),
        }
        self
    }

    /// How long shutdown waits for in-flight handlers before abandoning them (default 10 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.shutdown = timeout;
        self
    }

    /// How long one handler call may run; past it the call is abandoned with an error log and
    /// the next entry is handled. Default: no limit.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.handler = Some(timeout);
        self
    }

    /// Runs the `after_startup` hooks only once every subscriber has handled its bucket's state
    /// as of start-up (the latest value of every matching key; every retained revision with
    /// `include_history`; nothing to wait for with `updates_only`), so a service that holds
    /// state in its handlers never serves on half of it. If a watch is still behind after
    /// `timeout`, start-up fails with [`Error::CatchUpTimeout`](crate::Error::CatchUpTimeout) naming each one and how far
    /// behind it is.
    ///
    /// Without it, `after_startup` hooks run as soon as the watches are created. Either way
    /// the app logs each subscriber's catch-up (entries and time).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use faststream_core::{App, BrokerConfig};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .wait_for_catch_up(Duration::from_secs(30))
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn wait_for_catch_up(mut self, timeout: Duration) -> Self {
        self.timeouts.catch_up = Some(timeout);
        self
    }

    /// Takes only the registered subscribers and hooks of `module` and its submodules (as
    /// `module_path!()` names them). For tests, and for binaries hosting several apps.
    #[must_use]
    pub fn only_module(mut self, module: impl Into<String>) -> Self {
        self.scope = Scope::Module(module.into());
        self
    }

    /// Takes none of the registered subscribers and hooks: only those added with
    /// [`subscriber`](Self::subscriber) and [`hook`](Self::hook).
    #[must_use]
    pub fn without_registered(mut self) -> Self {
        self.scope = Scope::None;
        self
    }

    /// Does not install the default log output (stderr, `RUST_LOG`, default `info`); by default
    /// it is installed unless the program set a `tracing` subscriber itself.
    #[must_use]
    pub fn without_default_logging(mut self) -> Self {
        self.observe.default_logging = false;
        self
    }

    /// Adds a subscriber in code: what `#[subscriber(key, kv_watch = ...)]` registers.
    ///
    /// ```no_run
    /// use faststream_core::{App, BrokerConfig, KvWatch};
    ///
    /// async fn on_mode(mode: String) {
    ///     println!("mode is now {mode}");
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .subscriber("on_mode", "mode", KvWatch::new("settings"), on_mode)
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn subscriber<H: Handler<Args>, Args: 'static>(
        mut self,
        name: impl Into<Cow<'static, str>>,
        key: impl Into<Cow<'static, str>>,
        kv_watch: KvWatch,
        handler: H,
    ) -> Self {
        self.subscribers.push(SubscriberSpec {
            name: name.into(),
            key: key.into(),
            kv_watch,
            handler: BoxedHandler::new(handler),
            doc: HandlerDoc::unknown,
            location: None,
        });
        self
    }

    /// Adds an object store subscriber in code: what `#[subscriber("bucket", obj_watch = ..)]`
    /// registers.
    ///
    /// ```no_run
    /// use faststream_core::{App, BrokerConfig, ObjWatch};
    ///
    /// async fn on_report(name: String) {
    ///     println!("report {name} changed");
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .obj_subscriber("on_report", "reports", ObjWatch::new(), on_report)
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn obj_subscriber<H: Handler<Args>, Args: 'static>(
        mut self,
        name: impl Into<Cow<'static, str>>,
        bucket: impl Into<Cow<'static, str>>,
        obj_watch: crate::ObjWatch,
        handler: H,
    ) -> Self {
        self.subscribers.push(SubscriberSpec {
            name: name.into(),
            key: Cow::Borrowed(">"),
            kv_watch: obj_watch.watch_of(bucket.into()),
            handler: BoxedHandler::new(handler),
            doc: HandlerDoc::unknown,
            location: None,
        });
        self
    }

    /// Adds a subject subscriber in code: what `#[subscriber("subject", ..)]` registers.
    ///
    /// ```no_run
    /// use faststream_core::{App, BrokerConfig, Subscription};
    ///
    /// async fn ping() -> &'static str {
    ///     "pong"
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .subject_subscriber("ping", "svc.ping", Subscription::new().queue("svc"), ping)
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn subject_subscriber<H: Handler<Args>, Args: 'static>(
        mut self,
        name: impl Into<Cow<'static, str>>,
        subject: impl Into<Cow<'static, str>>,
        subscription: Subscription,
        handler: H,
    ) -> Self {
        let name = name.into();
        self.subjects.push(SubjectSpec {
            function: name.clone(),
            name,
            subject: subject.into(),
            subscription,
            handler: BoxedHandler::new(handler),
            doc: HandlerDoc::unknown,
            location: None,
        });
        self
    }

    /// Adds a lifecycle hook in code, with order 0.
    #[must_use]
    pub fn hook<H: Hook<Args>, Args: 'static>(
        mut self,
        stage: HookStage,
        name: impl Into<Cow<'static, str>>,
        hook: H,
    ) -> Self {
        self.hooks.push(HookSpec {
            stage,
            name: name.into(),
            order: 0,
            hook: BoxedHook::new(hook),
        });
        self
    }

    /// The names of every `#[subscriber]` linked into this binary, sorted: handy to check that
    /// a library crate's handlers were linked (see the crate docs).
    pub fn registered_subscribers() -> Vec<&'static str> {
        registry::registered_subscribers()
    }

    /// The names of every lifecycle hook linked into this binary, sorted.
    pub fn registered_hooks() -> Vec<&'static str> {
        registry::registered_hooks()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully and returns `Ok(())`.
    pub async fn run(self) -> Result<()> {
        let signals = ShutdownSignals::install()?;
        self.run_until(signals.wait()).await
    }

    /// Runs until `shutdown` completes, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.observe.install_logging();
        // Before any hook runs: a URL connecting would refuse after the `on_startup` hooks.
        self.broker.config().validate()?;
        let registry = Registry::collect(&self.scope, self.subscribers, self.subjects, self.hooks)?;
        let mut problems = self.problems;
        problems.extend(self.observe.problems());
        let mut observing = self.observe.begin(self.broker.clone());
        let documents = observing.serves_http().then(|| {
            let views: Vec<_> = self
                .view_starts
                .iter()
                .map(|view| view.doc.clone())
                .collect();
            served_documents(&self.info, self.broker.config(), &registry, &views)
        });
        let running = RunningApp {
            app: AppContext {
                broker: self.broker,
                state: Arc::new(self.state),
                views: Arc::new(self.views),
                views_started: true,
            },
            registry,
            timeouts: self.timeouts,
            cancel: CancellationToken::new(),
            observer: observing.observer.clone(),
            entry_tracing: observing.entry_tracing,
        };
        let subscribers = running.check_registry(problems)?;
        running.log_registry(&self.view_starts);
        let server = observing.serve_http(documents).await?;

        // The lifecycle polls `requested` at every stage, so a shutdown asked for while starting
        // stops what had started the documented way instead of dropping it mid-call.
        let requested = CancellationToken::new();
        let run = running.run(subscribers, self.view_starts, requested.clone());
        let mut run = std::pin::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = shutdown => {
                requested.cancel();
                run.await
            }
        };
        if let Some(server) = server {
            server.stop().await;
        }
        observing.finish().await;
        result
    }
}
