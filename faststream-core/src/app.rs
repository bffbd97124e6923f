//! `App`: the lifecycle. on_startup hooks -> connect -> declare buckets -> start watches ->
//! after_startup hooks -> run until the shutdown signal -> on_shutdown hooks -> stop watches
//! (in-flight handlers finish, bounded) -> drain the connection -> after_shutdown hooks.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use faststream_rules::KeyPattern;
use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::{AppContext, SubscriberContext};
use crate::error::{Error, Result};
use crate::handler::{BoxedHandler, BoxedHook, Handler, HandlerError, Hook};
use crate::kv::bucket::error_chain;
use crate::kv::watch::{panic_message, Dispatcher, WatchLoop};
use crate::kv::watcher::KvWatcher;
use crate::kv::{KeyValue, KvWatch};
use crate::registry::{HookSpec, HookStage, Registry, Scope, SubscriberSpec};
use crate::signal::ShutdownSignals;
use crate::state::StateMap;
use crate::NatsBroker;

const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

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
pub struct App {
    broker: NatsBroker,
    state: StateMap,
    scope: Scope,
    subscribers: Vec<SubscriberSpec>,
    hooks: Vec<HookSpec>,
    shutdown_timeout: Duration,
    handler_timeout: Option<Duration>,
    default_logging: bool,
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
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            handler_timeout: None,
            default_logging: true,
        }
    }

    /// Adds shared state, read by handlers and hooks with [`State<T>`](crate::State). One value
    /// per type; giving a type again replaces the earlier value.
    #[must_use]
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// How long shutdown waits for in-flight handlers before abandoning them (default 10 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long one handler call may run; past it the call is abandoned with an error log and
    /// the next entry is handled. Default: no limit.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
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
        if self.default_logging {
            crate::logging::init_default();
        }
        let registry = Registry::collect(&self.scope, self.subscribers, self.hooks)?;
        let app = AppContext {
            broker: self.broker,
            state: Arc::new(self.state),
        };
        let subscribers = prepare(&registry, &app)?;
        log_registry(&registry);

        // A shutdown requested while starting (say, during connect retries) is honoured at once.
        let cancel = CancellationToken::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let startup = start(
            &registry,
            &app,
            subscribers,
            self.handler_timeout,
            self.shutdown_timeout,
            &cancel,
        );
        let watches = tokio::select! {
            started = startup => started?,
            () = &mut shutdown => {
                tracing::info!("shutdown requested during start-up; stopping");
                cancel.cancel();
                app.broker.drain().await;
                return Ok(());
            }
        };
        tracing::info!("application started; waiting for the shutdown signal");

        shutdown.await;

        let on_shutdown = run_hooks(&registry, HookStage::OnShutdown, &app).await;
        stop_watches(watches, &cancel, self.shutdown_timeout).await;
        app.broker.drain().await;
        let after_shutdown = run_hooks(&registry, HookStage::AfterShutdown, &app).await;
        tracing::info!("application stopped");
        on_shutdown.and(after_shutdown)
    }
}

/// on_startup hooks -> connect -> declare buckets -> start watches -> after_startup hooks. On a
/// failure, whatever had started is stopped and the connection closed before the error returns.
async fn start(
    registry: &Registry,
    app: &AppContext,
    subscribers: Vec<Prepared>,
    handler_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<RunningWatch>> {
    run_hooks(registry, HookStage::OnStartup, app).await?;
    app.broker.connect().await?;
    let started = async {
        let buckets = declare_buckets(&app.broker, &subscribers).await?;
        start_watches(&app.broker, subscribers, &buckets, handler_timeout, cancel).await
    };
    let watches = match started.await {
        Ok(watches) => watches,
        Err(error) => {
            // Connected but not started: close the connection before reporting.
            app.broker.drain().await;
            return Err(error);
        }
    };
    if let Err(error) = run_hooks(registry, HookStage::AfterStartup, app).await {
        stop_watches(watches, cancel, shutdown_timeout).await;
        app.broker.drain().await;
        return Err(error);
    }
    Ok(watches)
}

/// A subscriber whose settings passed every check.
struct Prepared {
    kv_watch: KvWatch,
    context: Arc<SubscriberContext>,
    handler: BoxedHandler,
}

/// Checks every subscriber and hook before connecting; all problems are reported together.
fn prepare(registry: &Registry, app: &AppContext) -> Result<Vec<Prepared>> {
    let mut problems = Vec::new();
    let mut prepared = Vec::new();
    for spec in &registry.subscribers {
        let at = spec
            .location
            .map(|(file, line)| format!(" ({file}:{line})"))
            .unwrap_or_default();
        let mut fail = |problem: String| {
            problems.push(format!("subscriber `{}`{at}: {problem}", spec.name));
        };
        if let Err(error) = spec.kv_watch.validate() {
            fail(error.to_string());
        }
        let pattern = match KeyPattern::parse(&spec.key) {
            Ok(pattern) => pattern,
            Err(error) => {
                fail(error.to_string());
                continue;
            }
        };
        let context = SubscriberContext {
            app: app.clone(),
            name: Arc::from(&*spec.name),
            pattern,
        };
        for problem in spec.handler.check(&context) {
            fail(problem);
        }
        prepared.push(Prepared {
            kv_watch: spec.kv_watch.clone(),
            context: Arc::new(context),
            handler: spec.handler.clone(),
        });
    }
    for hook in &registry.hooks {
        for problem in hook.hook.check(app) {
            problems.push(format!("{} hook `{}`: {problem}", hook.stage, hook.name));
        }
    }
    if problems.is_empty() {
        Ok(prepared)
    } else {
        Err(Error::Setup { problems })
    }
}

fn log_registry(registry: &Registry) {
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

/// Runs the hooks of one stage in order. Start-up stages stop at the first failure; shutdown
/// stages run every hook and report the first failure.
async fn run_hooks(registry: &Registry, stage: HookStage, app: &AppContext) -> Result<()> {
    let stop_at_first = matches!(stage, HookStage::OnStartup | HookStage::AfterStartup);
    let mut first_error = None;
    for hook in registry.hooks(stage) {
        tracing::debug!(hook = %hook.name, "running {stage} hook");
        let reason = match AssertUnwindSafe(hook.hook.call(app.clone()))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => continue,
            Ok(Err(HandlerError::Rejected(rejection))) => rejection.to_string(),
            Ok(Err(HandlerError::Failed(error))) => format!("{error:#}"),
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        tracing::error!(hook = %hook.name, %reason, "{stage} hook failed");
        let error = Error::Hook {
            stage: stage.as_str(),
            hook: hook.name.to_string(),
            reason,
        };
        if stop_at_first {
            return Err(error);
        }
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}

/// Declares each bucket once: created if any of its subscribers declares it, else looked up.
async fn declare_buckets(
    broker: &NatsBroker,
    subscribers: &[Prepared],
) -> Result<BTreeMap<String, KeyValue>> {
    let mut declares: BTreeMap<&str, bool> = BTreeMap::new();
    for subscriber in subscribers {
        *declares.entry(subscriber.kv_watch.bucket()).or_default() |=
            subscriber.kv_watch.declares();
    }
    let mut buckets = BTreeMap::new();
    for (bucket, declare) in declares {
        let store = if declare {
            broker.key_value(bucket).await?
        } else {
            broker.lookup_key_value(bucket).await?
        };
        buckets.insert(bucket.to_owned(), store);
    }
    Ok(buckets)
}

type RunningWatch = (Arc<str>, JoinHandle<()>);

/// Creates every watch, then spawns its loop. If one cannot be created, the ones already
/// running are stopped and the error names the subscriber.
async fn start_watches(
    broker: &NatsBroker,
    subscribers: Vec<Prepared>,
    buckets: &BTreeMap<String, KeyValue>,
    handler_timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Vec<RunningWatch>> {
    let mut running = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let bucket = subscriber.kv_watch.bucket();
        let store = buckets.get(bucket).ok_or_else(|| Error::BucketNotFound {
            bucket: bucket.to_owned(),
        })?;
        let name = Arc::clone(&subscriber.context.name);
        let watcher = KvWatcher::start(
            broker,
            store,
            subscriber.context.pattern.filter(),
            subscriber.kv_watch.clone(),
            format!("faststream subscriber {name}"),
        )
        .await;
        let watcher = match watcher {
            Ok(watcher) => watcher,
            Err(reason) => {
                stop_watches(running, cancel, Duration::from_secs(1)).await;
                return Err(Error::Watch {
                    watcher: format!("subscriber `{name}`"),
                    bucket: bucket.to_owned(),
                    key: subscriber.context.pattern().to_owned(),
                    reason,
                });
            }
        };
        let watch_loop = WatchLoop {
            max_workers: subscriber.kv_watch.max_workers_value(),
            dispatcher: Dispatcher {
                context: subscriber.context,
                handler: subscriber.handler,
                handler_timeout,
            },
            watcher,
        };
        let handle = tokio::spawn(watch_loop.run(cancel.clone()));
        running.push((name, handle));
    }
    Ok(running)
}

/// Stops every watch loop: no new entry is started; the handlers in flight get until `timeout`
/// to finish, and are abandoned after it with a log line naming the subscriber.
async fn stop_watches(watches: Vec<RunningWatch>, cancel: &CancellationToken, timeout: Duration) {
    cancel.cancel();
    let deadline = tokio::time::Instant::now() + timeout;
    for (name, mut handle) in watches {
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(subscriber = %name, error = %error_chain(&error), "watch loop failed");
            }
            Err(_) => {
                tracing::warn!(subscriber = %name, ?timeout,
                    "handler still running at the shutdown timeout; abandoning it");
                handle.abort();
            }
        }
    }
}
