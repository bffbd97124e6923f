//! Starting each subscriber: a watch feeding its handler, or a consumer-group member.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::catch_up::CatchUpWait;
use super::checks::{CheckedHandler, CheckedSubscriber};
use super::running::RunningApp;
use crate::broker::WatchOwner;
use crate::dispatch::group_member::GroupMember;
use crate::dispatch::watch_loop::{HandledSignal, WatchLoop};
use crate::dispatch::watched::Watched;
use crate::dispatch::{Dispatcher, Publication};
use crate::error::Result;
use crate::kv::group::GroupSettings;
use crate::observe::metrics::{GroupMetrics, Progress};

/// A started watch loop.
pub(super) struct RunningSubscriber {
    pub(super) name: Arc<str>,
    pub(super) handle: JoinHandle<()>,
    /// Set once the subscriber has handled its bucket's state.
    pub(super) catch_up: CatchUpWait,
}

impl RunningApp {
    /// Starts every subscriber, pushing each to `running` as it starts (the caller stops them).
    /// If one cannot be created, the error names the subscriber.
    pub(super) async fn start_subscribers(
        &self,
        subscribers: Vec<CheckedSubscriber>,
        running: &mut Vec<RunningSubscriber>,
    ) -> Result<()> {
        for subscriber in subscribers {
            // What the `KeyValue` or `ObjectStore` argument gives: cached by the broker, so
            // the watch below makes no request for it again.
            let context = &subscriber.called.context;
            if subscriber.kv_watch.is_objects() {
                let store = self
                    .app
                    .broker
                    .watched_object_store(&subscriber.kv_watch)
                    .await?;
                let _ = context.object_store.set(store);
            } else {
                let bucket = self.app.broker.watched_bucket(&subscriber.kv_watch).await?;
                let _ = context.key_value.set(bucket);
            }
            let started = match subscriber.kv_watch.group.clone() {
                Some(settings) => self.join_group(subscriber, settings).await?,
                None => self.start_watch(subscriber).await?,
            };
            running.push(started);
        }
        Ok(())
    }

    /// Creates a subscriber's watch and spawns the loop feeding its handler.
    async fn start_watch(&self, subscriber: CheckedSubscriber) -> Result<RunningSubscriber> {
        let name = Arc::clone(&subscriber.called.context.name);
        let watcher = self
            .app
            .broker
            .watch(
                &subscriber.called.context.pattern,
                subscriber.kv_watch.clone(),
                WatchOwner::Subscriber(&name),
            )
            .await?;
        let description = if subscriber.kv_watch.is_objects() {
            format!(
                "subscriber `{name}` (object store `{}`)",
                subscriber.kv_watch.bucket()
            )
        } else {
            format!(
                "subscriber `{name}` (`{}` in bucket `{}`)",
                subscriber.called.context.pattern(),
                subscriber.kv_watch.bucket()
            )
        };
        let status = watcher.status();
        let handled = Arc::new(HandledSignal::new(false));
        let progress = Progress::Watch(status.clone());
        let publications = self
            .resolve_publishers(&subscriber.called.publishers)
            .await?;
        let watch_loop = WatchLoop {
            max_workers: subscriber.kv_watch.max_workers,
            dispatcher: self.dispatcher(&subscriber.called, None, publications),
            watched: Watched::of(&subscriber.kv_watch),
            watcher,
            handled: Arc::clone(&handled),
        };
        let catch_up = CatchUpWait {
            description,
            status: Some(status),
            done: handled.subscribe(),
        };
        Ok(
            self.spawn(&subscriber.called, progress, catch_up, |cancel| {
                watch_loop.run(cancel)
            }),
        )
    }

    /// Creates or joins a subscriber's consumer group and spawns the member. Start-up may wait
    /// for it to join, not for the group's backlog: that is shared with the other members.
    async fn join_group(
        &self,
        subscriber: CheckedSubscriber,
        settings: GroupSettings,
    ) -> Result<RunningSubscriber> {
        let watch = &subscriber.kv_watch;
        let (layout, declared) = self
            .app
            .broker
            .declare_group(&subscriber.called.context.pattern, watch, &settings)
            .await?;
        let description = format!(
            "subscriber `{}` (group `{}` on `{}` in bucket `{}`)",
            subscriber.called.context.name,
            settings.name(),
            subscriber.called.context.pattern(),
            watch.bucket()
        );
        let joined = Arc::new(HandledSignal::new(false));
        let metrics = Arc::new(GroupMetrics::new(settings.partitions));
        let progress = Progress::Group(Arc::clone(&metrics));
        let publications = self
            .resolve_publishers(&subscriber.called.publishers)
            .await?;
        let member = GroupMember {
            max_workers: watch.max_workers,
            without_values: watch.without_values(),
            ignore_deletes: watch.ignore_deletes,
            dispatcher: self.dispatcher(
                &subscriber.called,
                Some(Arc::from(settings.name())),
                publications,
            ),
            metrics,
            jetstream: self.app.broker.jetstream()?,
            layout,
            settings,
            declared,
            joined: Arc::clone(&joined),
        };
        let catch_up = CatchUpWait {
            description,
            status: None,
            done: joined.subscribe(),
        };
        Ok(
            self.spawn(&subscriber.called, progress, catch_up, |cancel| {
                member.run(cancel)
            }),
        )
    }

    /// What calls the subscriber's handler; `group` for a member's calls (or the queue group
    /// or consumer of a subject subscriber's).
    pub(super) fn dispatcher(
        &self,
        called: &CheckedHandler,
        group: Option<Arc<str>>,
        publications: Arc<[Publication]>,
    ) -> Dispatcher {
        Dispatcher {
            context: Arc::clone(&called.context),
            handler: called.handler.clone(),
            handler_timeout: self.timeouts.handler,
            metrics: called.observer.recorder.clone(),
            group,
            entry_tracing: self.entry_tracing,
            publishers: publications,
            replies: called.replies,
        }
    }

    /// Spawns a subscriber's loop, seen by readiness and metrics through `progress`, and marked
    /// failed by readiness if it ends before the app stops.
    pub(super) fn spawn<F: Future<Output = ()> + Send + 'static>(
        &self,
        called: &CheckedHandler,
        progress: Progress,
        catch_up: CatchUpWait,
        run: impl FnOnce(CancellationToken) -> F,
    ) -> RunningSubscriber {
        let ended = called.observer.started(progress, catch_up.done.clone());
        let run = run(self.cancel.clone());
        let handle = tokio::spawn(async move {
            let _ended = ended;
            run.await;
        });
        RunningSubscriber {
            name: Arc::clone(&called.context.name),
            handle,
            catch_up,
        }
    }
}
