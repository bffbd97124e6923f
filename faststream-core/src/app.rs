//! `App`: the lifecycle. on_startup hooks -> connect -> declare buckets -> start watches ->
//! (optionally) wait until every watch has handled its bucket's state -> after_startup hooks ->
//! run until the shutdown signal -> stop taking entries (in-flight handlers finish, bounded) ->
//! on_shutdown hooks -> drain the connection (bounded) -> after_shutdown hooks. A signal
//! during start-up stops it at the stage it reached and shuts down the same way.

use std::any::type_name;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faststream_rules::KeyPattern;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{NatsBroker, Watcher};
use crate::context::{AppContext, SubscriberContext};
use crate::dispatch::group_member::GroupMember;
use crate::dispatch::watch_loop::{HandledSignal, WatchLoop};
use crate::dispatch::Dispatcher;
use crate::error::{chain, Error, HandlerError, Result};
use crate::handler::{call_catching_panics, BoxedHandler, BoxedHook, Handler, Hook};
use crate::kv::group::GroupSettings;
use crate::kv::options::KvWatch;
use crate::kv::view::{self, Decode};
use crate::kv::watcher::WatchStatus;
use crate::observe::health::Stage;
use crate::observe::http::{Endpoints, HttpServer};
use crate::observe::metrics::{GroupMetrics, Source};
use crate::observe::prometheus::MetricsCollector;
use crate::observe::trace::EntrySampler;
use crate::observe::{Observer, SubscriberObserver, HTTP_ADDR_VAR};
use crate::registry::{HookSpec, HookStage, Registry, Scope, SubscriberSpec};
use crate::signal::ShutdownSignals;
use crate::state::StateMap;
use crate::views::ViewSlots;

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for the views to catch up unless `wait_for_catch_up` says.
const DEFAULT_VIEW_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A service: one broker, its subscribers and hooks, and their lifecycle.
///
/// By default it runs every `#[subscriber]` and hook linked into the binary.
///
/// ```no_run
/// use faststream_core::{App, NatsBroker};
///
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     App::new(NatsBroker::from_env()).run().await?;
///     Ok(())
/// }
/// ```
///
/// Hooks of one kind run by ascending `order` (`#[after_startup(order = -1)]`, default 0), then
/// by path (`crate::module::fn_name`), so the order is the same on every run.
#[derive(Debug)]
pub struct App {
    broker: NatsBroker,
    state: StateMap,
    scope: Scope,
    subscribers: Vec<SubscriberSpec>,
    hooks: Vec<HookSpec>,
    timeouts: Timeouts,
    default_logging: bool,
    views: ViewSlots,
    view_starters: Vec<ViewStarter>,
    observability: Observability,
    /// Problems found while building the app, reported with the others before connecting.
    problems: Vec<String>,
}

/// Where metrics, health and traces go.
#[derive(Debug, Default)]
struct Observability {
    /// The address of the HTTP endpoints, if set in code.
    http: Option<String>,
    /// How long a connection blip or a watch re-creation may last before readiness drops.
    readiness_grace: Option<Duration>,
    /// The service's own registry, served on `/metrics` with the app's metrics.
    registry: Option<prometheus_client::registry::Registry>,
    #[cfg(feature = "otlp")]
    otlp: Option<crate::otlp::Otlp>,
}

/// Starts one declared view and puts it in its slot.
struct ViewStarter {
    description: String,
    start: Box<
        dyn FnOnce(NatsBroker) -> futures_util::future::BoxFuture<'static, Result<CatchUpWait>>
            + Send,
    >,
}

impl std::fmt::Debug for ViewStarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// A watch or view that start-up may wait for: what it is, where it stands, and whether it
/// has caught up (for a subscriber: handled its bucket's state; for a view: holds it).
struct CatchUpWait {
    description: String,
    /// `None` for a group member, which waits only to join.
    status: Option<WatchStatus>,
    done: tokio::sync::watch::Receiver<bool>,
}

/// How long the parts of a running app may take.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// How long shutdown waits for in-flight handlers (and a failed start-up for the watches
    /// it had started).
    shutdown: Duration,
    /// How long one handler call may run; `None`: no limit.
    handler: Option<Duration>,
    /// How long start-up waits for the watches to catch up; `None`: it does not wait.
    catch_up: Option<Duration>,
}

impl App {
    /// An app on `broker` with every registered subscriber and hook.
    pub fn new(broker: NatsBroker) -> Self {
        Self {
            broker,
            state: StateMap::default(),
            scope: Scope::All,
            subscribers: Vec::new(),
            hooks: Vec::new(),
            timeouts: Timeouts {
                shutdown: DEFAULT_SHUTDOWN_TIMEOUT,
                handler: None,
                catch_up: None,
            },
            default_logging: true,
            views: ViewSlots::default(),
            view_starters: Vec::new(),
            observability: Observability::default(),
            problems: Vec::new(),
        }
    }

    /// Serves `GET /metrics` (Prometheus text), `GET /health/live` and `GET /health/ready` on
    /// `addr` (`host:port`; port 0 picks a free one) from the start of the lifecycle to its
    /// end. Without it, the address comes from the `FASTSTREAM_HTTP_ADDR` environment
    /// variable; with neither, nothing is served. An address that cannot be bound fails
    /// start-up with [`Error::HttpBind`] naming it.
    ///
    /// `/health/ready` answers 200 only while the app is started (its `after_startup` hooks
    /// done), connected to NATS and every subscriber live (caught up, its handler too; a
    /// consumer-group member joined, holding partitions or not); 503 otherwise, with a JSON
    /// body naming each subscriber's state. The README lists the metrics.
    ///
    /// ```no_run
    /// use faststream_core::{App, NatsBroker};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(NatsBroker::from_env())
    ///     .http("0.0.0.0:9464")
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.observability.http = Some(addr.into());
        self
    }

    /// How long the connection to NATS may be down, or a watch re-create its consumer, before
    /// `/health/ready` reports it (default 2 s), so a blip or a leader election does not take
    /// the service out of rotation.
    #[must_use]
    pub fn readiness_grace(mut self, grace: Duration) -> Self {
        self.observability.readiness_grace = Some(grace);
        self
    }

    /// Serves the metrics of `registry` on `/metrics` too, so a service's own metrics come
    /// from the same endpoint as the app's.
    ///
    /// ```no_run
    /// use faststream_core::prometheus_client::metrics::counter::Counter;
    /// use faststream_core::prometheus_client::registry::Registry;
    /// use faststream_core::{App, NatsBroker};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// let orders: Counter = Counter::default();
    /// let mut registry = Registry::default();
    /// registry.register("shop_orders", "Orders seen", orders.clone());
    /// App::new(NatsBroker::from_env())
    ///     .http("127.0.0.1:9464")
    ///     .prometheus_registry(registry)
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn prometheus_registry(mut self, registry: prometheus_client::registry::Registry) -> Self {
        self.observability.registry = Some(registry);
        self
    }

    /// Exports the per-entry spans and the metrics over OTLP (the `otlp` feature); see
    /// [`otlp`](crate::otlp).
    #[cfg(feature = "otlp")]
    #[must_use]
    pub fn otlp(mut self, otlp: crate::otlp::Otlp) -> Self {
        self.observability.otlp = Some(otlp);
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
    /// `watch` is the bucket's name or a [`KvWatch`], as for
    /// [`NatsBroker::kv_view`](crate::NatsBroker::kv_view).
    ///
    /// The views start after connecting and before the subscribers' watches, and start-up
    /// waits until each holds its bucket's state (up to the
    /// [`wait_for_catch_up`](Self::wait_for_catch_up) timeout, 60 s if none is set), so every
    /// handler call and `after_startup` hook finds them caught up. `on_startup` hooks run
    /// before connecting and cannot take one. One view per value type, as with `State<T>`:
    /// declaring a second view of the same `T` is a setup error (wrap the type in a newtype to
    /// hold two views of the same values).
    ///
    /// ```no_run
    /// use faststream_core::{subscriber, App, KvView, NatsBroker};
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
    /// App::new(NatsBroker::from_env())
    ///     .with_kv_view::<Flag>("flags", ">")
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_kv_view<T>(self, watch: impl Into<KvWatch>, pattern: impl Into<String>) -> Self
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.add_view(watch.into(), pattern.into(), view::json::<T>())
    }

    /// Declares a live view whose values `decode` makes, like
    /// [`with_kv_view`](Self::with_kv_view); raw bytes are `|value| Ok::<_, Infallible>(value.clone())`.
    #[must_use]
    pub fn with_kv_view_decoded<T, E>(
        self,
        watch: impl Into<KvWatch>,
        pattern: impl Into<String>,
        decode: impl Fn(&bytes::Bytes) -> std::result::Result<T, E> + Send + Sync + 'static,
    ) -> Self
    where
        T: Send + Sync + 'static,
        E: Into<crate::error::BoxError>,
    {
        let decode: Decode<T> = Arc::new(move |value| decode(value).map_err(Into::into));
        self.add_view(watch.into(), pattern.into(), decode)
    }

    fn add_view<T: Send + Sync + 'static>(
        mut self,
        watch: KvWatch,
        pattern: String,
        decode: Decode<T>,
    ) -> Self {
        let description = format!(
            "view `KvView<{}>` (`{pattern}` in bucket `{}`)",
            type_name::<T>(),
            watch.bucket()
        );
        let mut problems = Vec::new();
        if let Err(error) = KeyPattern::parse(&pattern) {
            problems.push(error.to_string());
        }
        if let Err(Error::InvalidWatch {
            problems: found, ..
        }) = watch.validate_for_view()
        {
            problems.extend(found);
        }
        let Some(slot) = self.views.declare::<T>() else {
            problems.push(format!(
                "a view of `{}` is declared already; an app holds one view per value type",
                type_name::<T>()
            ));
            self.problems
                .push(format!("{description}: {}", problems.join("; ")));
            return self;
        };
        if !problems.is_empty() {
            self.problems
                .push(format!("{description}: {}", problems.join("; ")));
            return self;
        }
        let starter_description = description.clone();
        self.view_starters.push(ViewStarter {
            description,
            start: Box::new(move |broker: NatsBroker| {
                Box::pin(async move {
                    let view = broker.start_view(watch, &pattern, decode).await?;
                    let started = CatchUpWait {
                        description: starter_description,
                        status: Some(view.status().clone()),
                        done: view.ready(),
                    };
                    // Declared once, started once: the slot is empty.
                    let _ = slot.set(view);
                    Ok(started)
                })
            }),
        });
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
    /// `timeout`, start-up fails with [`Error::CatchUpTimeout`] naming each one and how far
    /// behind it is.
    ///
    /// Without it, `after_startup` hooks run as soon as the watches are created. Either way
    /// the app logs each subscriber's catch-up (entries and time).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use faststream_core::{App, NatsBroker};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(NatsBroker::from_env())
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
        self.default_logging = false;
        self
    }

    /// Adds a subscriber in code: what `#[subscriber(key, kv_watch = ...)]` registers.
    ///
    /// ```no_run
    /// use faststream_core::{App, KvWatch, NatsBroker};
    ///
    /// async fn on_mode(mode: String) {
    ///     println!("mode is now {mode}");
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(NatsBroker::from_env())
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

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully and returns `Ok(())`.
    pub async fn run(self) -> Result<()> {
        let signals = ShutdownSignals::install()?;
        self.run_until(signals.wait()).await
    }

    /// Runs until `shutdown` completes, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let observability = self.observability;
        #[cfg(feature = "otlp")]
        let otlp = observability.otlp;
        if self.default_logging {
            #[cfg(feature = "otlp")]
            crate::logging::init_default(otlp.as_ref());
            #[cfg(not(feature = "otlp"))]
            crate::logging::init_default();
        }
        let registry = Registry::collect(&self.scope, self.subscribers, self.hooks)?;
        let http_addr = observability.http.or_else(|| {
            std::env::var(HTTP_ADDR_VAR)
                .ok()
                .filter(|addr| !addr.trim().is_empty())
        });
        #[cfg(feature = "otlp")]
        let exported = http_addr.is_some() || otlp.is_some();
        #[cfg(not(feature = "otlp"))]
        let exported = http_addr.is_some();
        let grace = observability
            .readiness_grace
            .unwrap_or(crate::observe::health::DEFAULT_GRACE);
        let observer = Observer::new(self.broker.clone(), exported, grace);
        // Before any subscriber is bound, which takes the OTLP histogram.
        #[cfg(feature = "otlp")]
        let _exported = otlp.as_ref().map(|otlp| otlp.export(&observer.metrics));
        let runtime = Runtime {
            app: AppContext {
                broker: self.broker,
                state: Arc::new(self.state),
                views: Arc::new(self.views),
                views_started: true,
            },
            registry,
            timeouts: self.timeouts,
            cancel: CancellationToken::new(),
            observer,
            #[cfg(feature = "otlp")]
            sampler: otlp.as_ref().map(crate::otlp::Otlp::sampler),
            #[cfg(not(feature = "otlp"))]
            sampler: None,
        };
        let subscribers = runtime.prepare(self.problems)?;
        runtime.log_registry(&self.view_starters);
        let server = match http_addr {
            Some(addr) => {
                let mut metrics_registry = observability.registry.unwrap_or_default();
                metrics_registry.register_collector(Box::new(MetricsCollector(
                    runtime.observer.metrics.clone(),
                )));
                let endpoints = Endpoints {
                    registry: Arc::new(metrics_registry),
                    health: runtime.observer.health.clone(),
                };
                Some(HttpServer::start(&addr, endpoints).await?)
            }
            None => None,
        };

        // The lifecycle polls `requested` at every stage, so a shutdown asked for while starting
        // stops what had started the documented way instead of dropping it mid-call.
        let requested = CancellationToken::new();
        let lifecycle = runtime.lifecycle(subscribers, self.view_starters, requested.clone());
        let mut lifecycle = std::pin::pin!(lifecycle);
        let result = tokio::select! {
            result = &mut lifecycle => result,
            () = shutdown => {
                requested.cancel();
                lifecycle.await
            }
        };
        if let Some(server) = server {
            server.stop().await;
        }
        #[cfg(feature = "otlp")]
        if let Some(otlp) = otlp {
            // Flushing waits on the exporters' threads: not on a runtime worker.
            let _ = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
        }
        result
    }
}

/// Everything a running app holds, built once by [`App::run_until`] and used by each stage.
struct Runtime {
    app: AppContext,
    registry: Registry,
    timeouts: Timeouts,
    /// Fired to stop the watch loops.
    cancel: CancellationToken,
    observer: Observer,
    /// Which entries get a span, when spans are exported.
    sampler: Option<EntrySampler>,
}

/// A subscriber whose settings passed every check.
struct Prepared {
    kv_watch: KvWatch,
    context: Arc<SubscriberContext>,
    handler: BoxedHandler,
    observer: SubscriberObserver,
}

/// A started watch loop.
struct RunningWatch {
    name: Arc<str>,
    handle: JoinHandle<()>,
    /// Set once the subscriber has handled its bucket's state.
    catch_up: CatchUpWait,
}

/// How far start-up got.
enum Started {
    /// Everything started; the app runs.
    Running,
    /// A shutdown was requested during `stage`; what had started is to be stopped by
    /// `deadline` (the shutdown timeout after the request).
    Interrupted {
        stage: &'static str,
        deadline: Instant,
        /// The error of a start-up hook that failed while finishing after the request.
        hook_error: Option<Error>,
    },
}

/// The drain of the connection at shutdown gets what is left of the shutdown timeout, but at
/// least this long: a reachable server answers a flush in milliseconds.
const MIN_DRAIN_TIME: Duration = Duration::from_secs(1);

fn drain_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_DRAIN_TIME)
}

impl Runtime {
    /// Checks every subscriber and hook before connecting; all problems are reported together.
    fn prepare(&self, mut problems: Vec<String>) -> Result<Vec<Prepared>> {
        let mut prepared = Vec::new();
        for spec in &self.registry.subscribers {
            let at = spec
                .location
                .map(|(file, line)| format!(" ({file}:{line})"))
                .unwrap_or_default();
            let mut fail = |problem: String| {
                problems.push(format!("subscriber `{}`{at}: {problem}", spec.name));
            };
            let watch_problems = spec.kv_watch.problems();
            if !watch_problems.is_empty() {
                fail(watch_problems.join("; "));
            }
            let pattern = match KeyPattern::parse(&spec.key) {
                Ok(pattern) => pattern,
                Err(error) => {
                    fail(error.to_string());
                    continue;
                }
            };
            let context = SubscriberContext {
                app: self.app.clone(),
                name: Arc::from(&*spec.name),
                pattern,
            };
            for problem in spec.handler.check(&context) {
                fail(problem);
            }
            let observer = self.observer.subscriber(
                &spec.name,
                spec.kv_watch.bucket(),
                &spec.key,
                spec.kv_watch.group.as_ref().map(GroupSettings::name),
            );
            prepared.push(Prepared {
                kv_watch: spec.kv_watch.clone(),
                context: Arc::new(context),
                handler: spec.handler.clone(),
                observer,
            });
        }
        for hook in &self.registry.hooks {
            for problem in hook.hook.check(&self.context_for(hook.stage)) {
                problems.push(format!("{} hook `{}`: {problem}", hook.stage, hook.name));
            }
        }
        if problems.is_empty() {
            Ok(prepared)
        } else {
            Err(Error::Setup { problems })
        }
    }

    /// What hooks of `stage` get: `on_startup` hooks run before the views start.
    fn context_for(&self, stage: HookStage) -> AppContext {
        AppContext {
            views_started: stage != HookStage::OnStartup,
            ..self.app.clone()
        }
    }

    fn log_registry(&self, views: &[ViewStarter]) {
        for view in views {
            tracing::info!("{}", view.description);
        }
        let registry = &self.registry;
        tracing::info!(
            subscribers = registry.subscribers.len(),
            hooks = registry.hooks.len(),
            "found {} subscriber(s) and {} hook(s)",
            registry.subscribers.len(),
            registry.hooks.len()
        );
        for spec in &registry.subscribers {
            tracing::info!(
                subscriber = %spec.name,
                bucket = spec.kv_watch.bucket(),
                key = %spec.key,
                declare = spec.kv_watch.declares(),
                "subscriber watches `{}` in bucket `{}`",
                spec.key,
                spec.kv_watch.bucket()
            );
        }
        for hook in &registry.hooks {
            tracing::info!(hook = %hook.name, stage = %hook.stage, order = hook.order, "hook");
        }
    }

    /// Starts, runs until `requested` fires, and shuts down. A start-up failure stops whatever
    /// had started and returns the error; a shutdown requested during start-up lets a running
    /// start-up hook finish (up to the shutdown timeout), starts nothing more, and shuts down
    /// like a running app.
    async fn lifecycle(
        &self,
        subscribers: Vec<Prepared>,
        views: Vec<ViewStarter>,
        requested: CancellationToken,
    ) -> Result<()> {
        let mut watches = Vec::new();
        let mut interrupted_hook = None;
        let deadline = match self
            .start(subscribers, views, &mut watches, &requested)
            .await
        {
            Ok(Started::Running) => {
                tracing::info!("application started; waiting for the shutdown signal");
                self.observer.health.set_stage(Stage::Running);
                requested.cancelled().await;
                self.observer.health.set_stage(Stage::Stopping);
                Instant::now() + self.timeouts.shutdown
            }
            Ok(Started::Interrupted {
                stage,
                deadline,
                hook_error,
            }) => {
                tracing::info!(
                    "shutdown requested during start-up ({stage}); stopping what started"
                );
                self.observer.health.set_stage(Stage::Stopping);
                interrupted_hook = hook_error;
                deadline
            }
            Err(error) => {
                self.observer.health.set_stage(Stage::Stopping);
                let deadline = Instant::now() + self.timeouts.shutdown;
                self.stop_watches(watches, deadline).await;
                self.app.broker.drain(drain_timeout(deadline)).await;
                return Err(error);
            }
        };
        let shutdown = self.shutdown(watches, deadline).await;
        interrupted_hook.map_or(shutdown, Err)
    }

    /// Stop taking entries -> calls in flight finish (until `deadline`: the shutdown timeout
    /// after the request) -> `on_shutdown` hooks (connection still up) -> drain the connection
    /// (bounded by what is left until `deadline`, at least [`MIN_DRAIN_TIME`]) ->
    /// `after_shutdown` hooks.
    async fn shutdown(&self, watches: Vec<RunningWatch>, deadline: Instant) -> Result<()> {
        self.stop_watches(watches, deadline).await;
        let on_shutdown = self.run_shutdown_hooks(HookStage::OnShutdown).await;
        self.app.broker.drain(drain_timeout(deadline)).await;
        let after_shutdown = self.run_shutdown_hooks(HookStage::AfterShutdown).await;
        tracing::info!("application stopped");
        on_shutdown.and(after_shutdown)
    }

    /// on_startup hooks -> connect -> declare buckets -> start watches -> after_startup hooks,
    /// each stage given up when `requested` fires. The watches started are pushed to `watches`
    /// as they start, so the caller stops them whatever happens.
    async fn start(
        &self,
        subscribers: Vec<Prepared>,
        views: Vec<ViewStarter>,
        watches: &mut Vec<RunningWatch>,
        requested: &CancellationToken,
    ) -> Result<Started> {
        if let Some(interrupted) = self
            .run_startup_hooks(HookStage::OnStartup, requested)
            .await?
        {
            return Ok(interrupted);
        }
        let interrupted = |stage| Started::Interrupted {
            stage,
            deadline: Instant::now() + self.timeouts.shutdown,
            hook_error: None,
        };
        // `biased`: a request already made wins over a stage that is ready at once.
        tokio::select! {
            biased;
            () = requested.cancelled() => return Ok(interrupted("connecting")),
            connected = self.app.broker.connect() => connected?,
        }
        if subscribers
            .iter()
            .any(|subscriber| subscriber.kv_watch.group.is_some())
        {
            // Before anything is declared or started: an old server fails start-up cleanly.
            self.app.broker.require_groups()?;
        }
        let declared = async {
            self.declare_buckets(&subscribers).await?;
            self.start_views(views).await?;
            self.start_watches(subscribers, watches).await
        };
        tokio::select! {
            biased;
            () = requested.cancelled() => return Ok(interrupted("starting the watches")),
            declared = declared => declared?,
        }
        if let Some(timeout) = self.timeouts.catch_up {
            tokio::select! {
                biased;
                () = requested.cancelled() => {
                    return Ok(interrupted("waiting for the watches to catch up"))
                }
                caught_up = wait_for_catch_up(
                    watches.iter().map(|watch| &watch.catch_up),
                    timeout,
                ) => {
                    caught_up?;
                    tracing::info!(watches = watches.len(), "every watch has caught up");
                }
            }
        }
        if let Some(interrupted) = self
            .run_startup_hooks(HookStage::AfterStartup, requested)
            .await?
        {
            return Ok(interrupted);
        }
        Ok(Started::Running)
    }

    /// Runs the start-up hooks of `stage` in order, stopping at the first failure. When
    /// `requested` fires, the hook running may finish (up to the shutdown timeout; abandoned
    /// after it, with a log line) and the later ones do not run.
    async fn run_startup_hooks(
        &self,
        stage: HookStage,
        requested: &CancellationToken,
    ) -> Result<Option<Started>> {
        for hook in self.registry.hooks(stage) {
            let interrupted = |deadline, hook_error| {
                Ok(Some(Started::Interrupted {
                    stage: stage.as_str(),
                    deadline,
                    hook_error,
                }))
            };
            if requested.is_cancelled() {
                return interrupted(Instant::now() + self.timeouts.shutdown, None);
            }
            tracing::debug!(hook = %hook.name, "running {stage} hook");
            let call = call_catching_panics(|| hook.hook.call(self.context_for(stage)));
            let mut call = std::pin::pin!(call);
            let outcome = tokio::select! {
                outcome = &mut call => outcome,
                () = requested.cancelled() => {
                    // One shutdown timeout for the hook and then the calls in flight.
                    let timeout = self.timeouts.shutdown;
                    let deadline = Instant::now() + timeout;
                    match tokio::time::timeout_at(deadline, call).await {
                        Ok(outcome) => {
                            let error = outcome.err().map(|source| self.hook_failed(stage, hook, source));
                            return interrupted(deadline, error);
                        }
                        Err(_) => {
                            tracing::warn!(hook = %hook.name, ?timeout,
                                "{stage} hook still running at the shutdown timeout; abandoning it");
                            return interrupted(deadline, None);
                        }
                    }
                }
            };
            if let Err(source) = outcome {
                return Err(self.hook_failed(stage, hook, source));
            }
        }
        Ok(None)
    }

    /// The error of a failed hook, logged.
    fn hook_failed(&self, stage: HookStage, hook: &HookSpec, source: HandlerError) -> Error {
        let error = Error::Hook {
            stage,
            hook: hook.name.to_string(),
            source,
        };
        tracing::error!(hook = %hook.name, error = %chain(&error), "{stage} hook failed");
        error
    }

    /// Runs the shutdown hooks of `stage` in order: every one runs, the first failure is
    /// reported.
    async fn run_shutdown_hooks(&self, stage: HookStage) -> Result<()> {
        let mut first_error = None;
        for hook in self.registry.hooks(stage) {
            tracing::debug!(hook = %hook.name, "running {stage} hook");
            if let Err(source) = call_catching_panics(|| hook.hook.call(self.app.clone())).await {
                first_error.get_or_insert(self.hook_failed(stage, hook, source));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes sure every watched bucket exists before any watch starts. Subscribers that
    /// declare go first, so a bucket is created if any of its subscribers declares it, and
    /// those that only look a bucket up then find it in the broker's cache.
    async fn declare_buckets(&self, subscribers: &[Prepared]) -> Result<()> {
        let (declaring, looking_up): (Vec<_>, Vec<_>) = subscribers
            .iter()
            .partition(|subscriber| subscriber.kv_watch.declares());
        for subscriber in declaring.into_iter().chain(looking_up) {
            self.app.broker.watched_bucket(&subscriber.kv_watch).await?;
        }
        Ok(())
    }

    /// Starts the declared views and waits until each holds its bucket's state (bounded by the
    /// catch-up timeout), so that handlers and `after_startup` hooks find them caught up.
    async fn start_views(&self, views: Vec<ViewStarter>) -> Result<()> {
        if views.is_empty() {
            return Ok(());
        }
        let mut started = Vec::with_capacity(views.len());
        for view in views {
            started.push((view.start)(self.app.broker.clone()).await?);
        }
        let timeout = self
            .timeouts
            .catch_up
            .unwrap_or(DEFAULT_VIEW_CATCH_UP_TIMEOUT);
        wait_for_catch_up(started.iter(), timeout).await
    }

    /// Creates every watch, then spawns its loop, pushing each to `running` as it starts (the
    /// caller stops them). If one cannot be created, the error names the subscriber.
    async fn start_watches(
        &self,
        subscribers: Vec<Prepared>,
        running: &mut Vec<RunningWatch>,
    ) -> Result<()> {
        for subscriber in subscribers {
            if let Some(settings) = subscriber.kv_watch.group.clone() {
                running.push(self.join_group(subscriber, settings).await?);
                continue;
            }
            let name = Arc::clone(&subscriber.context.name);
            let watcher = self
                .app
                .broker
                .watch(
                    &subscriber.context.pattern,
                    subscriber.kv_watch.clone(),
                    Watcher::Subscriber(&name),
                )
                .await;
            let watcher = watcher?;
            let description = format!(
                "subscriber `{name}` (`{}` in bucket `{}`)",
                subscriber.context.pattern(),
                subscriber.kv_watch.bucket()
            );
            let status = watcher.status();
            let handled = Arc::new(HandledSignal::new(false));
            let ended = subscriber
                .observer
                .started(Source::Watch(status.clone()), handled.subscribe());
            let watch_loop = WatchLoop {
                max_workers: subscriber.kv_watch.max_workers,
                dispatcher: Dispatcher {
                    context: subscriber.context,
                    handler: subscriber.handler,
                    handler_timeout: self.timeouts.handler,
                    metrics: subscriber.observer.recorder.clone(),
                    group: None,
                    sampler: self.sampler,
                },
                watcher,
                handled: Arc::clone(&handled),
            };
            let cancel = self.cancel.clone();
            let handle = tokio::spawn(async move {
                let _ended = ended;
                watch_loop.run(cancel).await;
            });
            running.push(RunningWatch {
                name,
                handle,
                catch_up: CatchUpWait {
                    description,
                    status: Some(status),
                    done: handled.subscribe(),
                },
            });
        }
        Ok(())
    }

    /// Creates or joins a subscriber's consumer group and spawns the member. Start-up may wait
    /// for it to join, not for the group's backlog: that is shared with the other members.
    async fn join_group(
        &self,
        subscriber: Prepared,
        settings: GroupSettings,
    ) -> Result<RunningWatch> {
        let name = Arc::clone(&subscriber.context.name);
        let watch = &subscriber.kv_watch;
        let (layout, declared) = self
            .app
            .broker
            .declare_group(&subscriber.context.pattern, watch, &settings)
            .await?;
        let description = format!(
            "subscriber `{name}` (group `{}` on `{}` in bucket `{}`)",
            settings.name(),
            subscriber.context.pattern(),
            watch.bucket()
        );
        let joined = Arc::new(HandledSignal::new(false));
        let metrics = Arc::new(GroupMetrics::new(settings.partitions));
        let ended = subscriber
            .observer
            .started(Source::Group(Arc::clone(&metrics)), joined.subscribe());
        let member = GroupMember {
            max_workers: watch.max_workers,
            without_values: watch.without_values(),
            ignore_deletes: watch.ignore_deletes,
            dispatcher: Dispatcher {
                context: subscriber.context,
                handler: subscriber.handler,
                handler_timeout: self.timeouts.handler,
                metrics: subscriber.observer.recorder.clone(),
                group: Some(Arc::from(settings.name())),
                sampler: self.sampler,
            },
            metrics,
            context: self.app.broker.jetstream()?,
            layout,
            settings,
            declared,
            joined: Arc::clone(&joined),
        };
        let cancel = self.cancel.clone();
        let handle = tokio::spawn(async move {
            let _ended = ended;
            member.run(cancel).await;
        });
        Ok(RunningWatch {
            name,
            handle,
            catch_up: CatchUpWait {
                description,
                status: None,
                done: joined.subscribe(),
            },
        })
    }

    /// Stops every watch loop: no new entry is started; the handlers in flight get until
    /// `deadline` to finish, and are abandoned after it with a log line naming the subscriber.
    async fn stop_watches(&self, watches: Vec<RunningWatch>, deadline: Instant) {
        self.cancel.cancel();
        let timeout = self.timeouts.shutdown;
        for RunningWatch {
            name, mut handle, ..
        } in watches
        {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(subscriber = %name, error = %chain(&error), "watch loop failed");
                }
                Err(_) => {
                    tracing::warn!(subscriber = %name, ?timeout,
                        "handler still running at the shutdown timeout; abandoning it");
                    handle.abort();
                }
            }
        }
    }
}

/// Waits until every one of `waits` has caught up, up to `timeout`; the error names each one
/// still behind and how far.
async fn wait_for_catch_up<'a>(
    waits: impl Iterator<Item = &'a CatchUpWait> + Clone,
    timeout: Duration,
) -> Result<()> {
    let all_done = futures_util::future::join_all(waits.clone().map(|wait| {
        let mut done = wait.done.clone();
        async move {
            // An error means the watch ended (connection closed for good): nothing to wait for.
            let _ = done.wait_for(|done| *done).await;
        }
    }));
    if tokio::time::timeout(timeout, all_done).await.is_ok() {
        return Ok(());
    }
    let behind = waits
        .filter(|wait| !*wait.done.borrow())
        .map(|wait| {
            let Some(status) = &wait.status else {
                return format!("{}: has not joined its group", wait.description);
            };
            let read = if status.is_caught_up() {
                "read its bucket's state, still handling it".to_owned()
            } else {
                format!("{} entries still pending on the server", status.pending())
            };
            format!("{}: {read} ({:?})", wait.description, status.phase())
        })
        .collect();
    Err(Error::CatchUpTimeout { timeout, behind })
}
