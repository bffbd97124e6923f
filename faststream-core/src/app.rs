//! `App`: the lifecycle. on_startup hooks -> connect -> declare buckets -> start watches ->
//! after_startup hooks -> run until the shutdown signal -> on_shutdown hooks -> stop watches
//! (in-flight handlers finish, bounded) -> drain the connection -> after_shutdown hooks.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faststream_rules::KeyPattern;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{NatsBroker, Watcher};
use crate::context::{AppContext, SubscriberContext};
use crate::dispatch::{Dispatcher, WatchLoop};
use crate::error::{chain, Error, Result};
use crate::handler::{call_catching_panics, BoxedHandler, BoxedHook, Handler, Hook};
use crate::kv::options::KvWatch;
use crate::registry::{HookSpec, HookStage, Registry, Scope, SubscriberSpec};
use crate::signal::ShutdownSignals;
use crate::state::StateMap;

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
#[derive(Debug)]
pub struct App {
    broker: NatsBroker,
    state: StateMap,
    scope: Scope,
    subscribers: Vec<SubscriberSpec>,
    hooks: Vec<HookSpec>,
    timeouts: Timeouts,
    default_logging: bool,
}

/// How long the parts of a running app may take.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// How long shutdown waits for in-flight handlers (and a failed start-up for the watches
    /// it had started).
    shutdown: Duration,
    /// How long one handler call may run; `None`: no limit.
    handler: Option<Duration>,
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
            },
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
        let runtime = Runtime {
            app: AppContext {
                broker: self.broker,
                state: Arc::new(self.state),
            },
            registry,
            timeouts: self.timeouts,
            cancel: CancellationToken::new(),
        };
        let subscribers = runtime.prepare()?;
        runtime.log_registry();

        // A shutdown requested while starting (say, during connect retries) is honoured at once.
        let mut shutdown = std::pin::pin!(shutdown);
        let watches = tokio::select! {
            started = runtime.start(subscribers) => started?,
            () = &mut shutdown => {
                tracing::info!("shutdown requested during start-up; stopping");
                runtime.cancel.cancel();
                runtime.app.broker.drain().await;
                return Ok(());
            }
        };
        tracing::info!("application started; waiting for the shutdown signal");

        shutdown.await;

        let on_shutdown = runtime.run_hooks(HookStage::OnShutdown).await;
        runtime.stop_watches(watches).await;
        runtime.app.broker.drain().await;
        let after_shutdown = runtime.run_hooks(HookStage::AfterShutdown).await;
        tracing::info!("application stopped");
        on_shutdown.and(after_shutdown)
    }
}

/// Everything a running app holds, built once by [`App::run_until`] and used by each stage.
struct Runtime {
    app: AppContext,
    registry: Registry,
    timeouts: Timeouts,
    /// Fired to stop the watch loops.
    cancel: CancellationToken,
}

/// A subscriber whose settings passed every check.
struct Prepared {
    kv_watch: KvWatch,
    context: Arc<SubscriberContext>,
    handler: BoxedHandler,
}

/// A started watch loop, by subscriber name.
type RunningWatch = (Arc<str>, JoinHandle<()>);

impl Runtime {
    /// Checks every subscriber and hook before connecting; all problems are reported together.
    fn prepare(&self) -> Result<Vec<Prepared>> {
        let mut problems = Vec::new();
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
            prepared.push(Prepared {
                kv_watch: spec.kv_watch.clone(),
                context: Arc::new(context),
                handler: spec.handler.clone(),
            });
        }
        for hook in &self.registry.hooks {
            for problem in hook.hook.check(&self.app) {
                problems.push(format!("{} hook `{}`: {problem}", hook.stage, hook.name));
            }
        }
        if problems.is_empty() {
            Ok(prepared)
        } else {
            Err(Error::Setup { problems })
        }
    }

    fn log_registry(&self) {
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

    /// on_startup hooks -> connect -> declare buckets -> start watches -> after_startup hooks.
    /// On a failure, whatever had started is stopped and the connection closed before the
    /// error returns.
    async fn start(&self, subscribers: Vec<Prepared>) -> Result<Vec<RunningWatch>> {
        self.run_hooks(HookStage::OnStartup).await?;
        self.app.broker.connect().await?;
        let started = async {
            self.declare_buckets(&subscribers).await?;
            self.start_watches(subscribers).await
        };
        let watches = match started.await {
            Ok(watches) => watches,
            Err(error) => {
                // Connected but not started: close the connection before reporting.
                self.app.broker.drain().await;
                return Err(error);
            }
        };
        if let Err(error) = self.run_hooks(HookStage::AfterStartup).await {
            self.stop_watches(watches).await;
            self.app.broker.drain().await;
            return Err(error);
        }
        Ok(watches)
    }

    /// Runs the hooks of one stage in order. Start-up stages stop at the first failure;
    /// shutdown stages run every hook and report the first failure.
    async fn run_hooks(&self, stage: HookStage) -> Result<()> {
        let mut first_error = None;
        for hook in self.registry.hooks(stage) {
            tracing::debug!(hook = %hook.name, "running {stage} hook");
            let Err(source) = call_catching_panics(|| hook.hook.call(self.app.clone())).await
            else {
                continue;
            };
            let error = Error::Hook {
                stage,
                hook: hook.name.to_string(),
                source,
            };
            tracing::error!(hook = %hook.name, error = %chain(&error), "{stage} hook failed");
            if stage.is_startup() {
                return Err(error);
            }
            first_error.get_or_insert(error);
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

    /// Creates every watch, then spawns its loop. If one cannot be created, the ones already
    /// running are stopped and the error names the subscriber.
    async fn start_watches(&self, subscribers: Vec<Prepared>) -> Result<Vec<RunningWatch>> {
        let mut running = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
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
            let watcher = match watcher {
                Ok(watcher) => watcher,
                Err(error) => {
                    self.stop_watches(running).await;
                    return Err(error);
                }
            };
            let watch_loop = WatchLoop {
                max_workers: subscriber.kv_watch.max_workers,
                dispatcher: Dispatcher {
                    context: subscriber.context,
                    handler: subscriber.handler,
                    handler_timeout: self.timeouts.handler,
                },
                watcher,
            };
            let handle = tokio::spawn(watch_loop.run(self.cancel.clone()));
            running.push((name, handle));
        }
        Ok(running)
    }

    /// Stops every watch loop: no new entry is started; the handlers in flight get until the
    /// shutdown timeout to finish, and are abandoned after it with a log line naming the
    /// subscriber.
    async fn stop_watches(&self, watches: Vec<RunningWatch>) {
        self.cancel.cancel();
        let timeout = self.timeouts.shutdown;
        let deadline = tokio::time::Instant::now() + timeout;
        for (name, mut handle) in watches {
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
