//! The lifecycle of a running app: on_startup hooks -> connect -> declare buckets -> start the
//! views, then the subscribers -> (optionally) wait until every subscriber has handled its
//! bucket's state -> after_startup hooks -> run until the shutdown signal -> stop taking
//! entries (in-flight handlers finish, bounded) -> on_shutdown hooks -> drain the connection
//! (bounded) -> after_shutdown hooks. A signal during start-up stops it at the stage it
//! reached and shuts down the same way.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catch_up::wait_for_catch_up;
use super::checks::{Checked, CheckedSubscriber};
use super::running::{RunningApp, StartOutcome};
use super::subscribers::RunningSubscriber;
use super::views::ViewStart;
use crate::error::{chain, Error, Result};
use crate::kv::view::DEFAULT_VIEW_CATCH_UP_TIMEOUT;
use crate::observe::health::Stage;
use faststream_rules::HookStage;

/// The drain of the connection at shutdown gets what is left of the shutdown timeout, but at
/// least this long: a reachable server answers a flush in milliseconds.
const MIN_DRAIN_TIME: Duration = Duration::from_secs(1);

fn drain_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_DRAIN_TIME)
}

impl RunningApp {
    /// Starts, runs until `requested` fires, and shuts down. A start-up failure stops whatever
    /// had started and returns the error; a shutdown requested during start-up lets a running
    /// start-up hook finish (up to the shutdown timeout), starts nothing more, and shuts down
    /// like a running app.
    pub(super) async fn run(
        &self,
        subscribers: Checked,
        views: Vec<ViewStart>,
        requested: CancellationToken,
    ) -> Result<()> {
        let mut watches = Vec::new();
        let mut interrupted_hook = None;
        let deadline = match self
            .start(subscribers, views, &mut watches, &requested)
            .await
        {
            Ok(StartOutcome::Running) => {
                tracing::info!("application started; waiting for the shutdown signal");
                self.observer.health.set_stage(Stage::Running);
                requested.cancelled().await;
                self.observer.health.set_stage(Stage::Stopping);
                Instant::now() + self.timeouts.shutdown
            }
            Ok(StartOutcome::Interrupted {
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
                self.stop_subscribers(watches, deadline).await;
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
    async fn shutdown(&self, watches: Vec<RunningSubscriber>, deadline: Instant) -> Result<()> {
        self.stop_subscribers(watches, deadline).await;
        let on_shutdown = self.run_shutdown_hooks(HookStage::OnShutdown).await;
        self.app.broker.drain(drain_timeout(deadline)).await;
        let after_shutdown = self.run_shutdown_hooks(HookStage::AfterShutdown).await;
        tracing::info!("application stopped");
        on_shutdown.and(after_shutdown)
    }

    /// on_startup hooks -> connect -> declare buckets -> start watches -> after_startup hooks,
    /// each stage given up when `requested` fires. The subscribers started are pushed to `watches`
    /// as they start, so the caller stops them whatever happens.
    async fn start(
        &self,
        subscribers: Checked,
        views: Vec<ViewStart>,
        watches: &mut Vec<RunningSubscriber>,
        requested: &CancellationToken,
    ) -> Result<StartOutcome> {
        if let Some(interrupted) = self
            .run_startup_hooks(HookStage::OnStartup, requested)
            .await?
        {
            return Ok(interrupted);
        }
        let interrupted = |stage| StartOutcome::Interrupted {
            stage,
            deadline: Instant::now() + self.timeouts.shutdown,
            hook_error: None,
        };
        // `biased`: a request already made wins over a stage that is ready at once.
        tokio::select! {
            biased;
            () = requested.cancelled() => return Ok(interrupted("connecting")),
            connected = self.app.broker.ensure_connected() => connected?,
        }
        let Checked {
            watches: subscribers,
            subjects,
        } = subscribers;
        if subscribers
            .iter()
            .any(|subscriber| subscriber.kv_watch.group.is_some())
        {
            // Before anything is declared or started: an old server fails start-up cleanly.
            self.app.broker.require_groups()?;
        }
        let declared = async {
            self.declare_buckets(&subscribers).await?;
            self.declare_streams(&subjects).await?;
            self.start_views(views).await?;
            self.start_subscribers(subscribers, watches).await?;
            self.start_subjects(subjects, watches).await
        };
        tokio::select! {
            biased;
            () = requested.cancelled() => return Ok(interrupted("starting the subscribers")),
            declared = declared => declared?,
        }
        if let Some(timeout) = self.timeouts.catch_up {
            tokio::select! {
                biased;
                () = requested.cancelled() => {
                    return Ok(interrupted("waiting for the subscribers to catch up"))
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
        Ok(StartOutcome::Running)
    }

    /// Makes sure every watched bucket exists before any watch starts. Subscribers that
    /// declare go first, so a bucket is created if any of its subscribers declares it, and
    /// those that only look a bucket up then find it in the broker's cache.
    async fn declare_buckets(&self, subscribers: &[CheckedSubscriber]) -> Result<()> {
        let (declaring, looking_up): (Vec<_>, Vec<_>) = subscribers
            .iter()
            .partition(|subscriber| subscriber.kv_watch.declares());
        for subscriber in declaring.into_iter().chain(looking_up) {
            self.app.broker.watched_bucket(&subscriber.kv_watch).await?;
        }
        Ok(())
    }

    /// Starts the declared views and waits until each holds its bucket's state, each for its
    /// own catch-up timeout if it has one, else the app's, else 60 s; so that handlers and
    /// `after_startup` hooks find them caught up.
    async fn start_views(&self, views: Vec<ViewStart>) -> Result<()> {
        let app_timeout = self
            .timeouts
            .catch_up
            .unwrap_or(DEFAULT_VIEW_CATCH_UP_TIMEOUT);
        let mut started = Vec::with_capacity(views.len());
        for view in views {
            let timeout = view.catch_up_timeout.unwrap_or(app_timeout);
            started.push((timeout, (view.start)(self.app.broker.clone()).await?));
        }
        let waits = started
            .iter()
            .map(|(timeout, wait)| wait_for_catch_up(std::iter::once(wait), *timeout));
        let mut longest = Duration::ZERO;
        let mut behind = Vec::new();
        for (result, (timeout, _)) in futures_util::future::join_all(waits)
            .await
            .into_iter()
            .zip(&started)
        {
            match result {
                Ok(()) => {}
                Err(Error::CatchUpTimeout { behind: lines, .. }) => {
                    longest = longest.max(*timeout);
                    behind.extend(lines.into_iter().map(|line| (line, *timeout)));
                }
                Err(other) => return Err(other),
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        // The error names the longest wait; a view given a shorter one says so.
        let behind = behind
            .into_iter()
            .map(|(line, timeout)| {
                if timeout == longest {
                    line
                } else {
                    format!("{line}, within its {timeout:?}")
                }
            })
            .collect();
        Err(Error::CatchUpTimeout {
            timeout: longest,
            behind,
        })
    }

    /// Stops every watch loop: no new entry is started; the handlers in flight get until
    /// `deadline` to finish, and are abandoned after it with a log line naming the subscriber.
    async fn stop_subscribers(&self, watches: Vec<RunningSubscriber>, deadline: Instant) {
        self.cancel.cancel();
        let timeout = self.timeouts.shutdown;
        for RunningSubscriber {
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
