//! The checks made before connecting: every subscriber's settings, key pattern and handler
//! arguments, and every hook's arguments, with all problems reported together.

use std::sync::Arc;

use faststream_rules::KeyPattern;

use super::running::RunningApp;
use super::views::ViewStart;
use crate::context::SubscriberContext;
use crate::error::{Error, Result};
use crate::handler::BoxedHandler;
use crate::kv::group::GroupSettings;
use crate::kv::options::KvWatch;
use crate::observe::SubscriberObserver;

/// A subscriber whose settings passed every check.
pub(super) struct CheckedSubscriber {
    pub(super) kv_watch: KvWatch,
    pub(super) context: Arc<SubscriberContext>,
    pub(super) handler: BoxedHandler,
    pub(super) observer: SubscriberObserver,
}

impl RunningApp {
    /// Checks every subscriber and hook before connecting; all problems are reported together.
    pub(super) fn check_registry(
        &self,
        mut problems: Vec<String>,
    ) -> Result<Vec<CheckedSubscriber>> {
        let mut checked = Vec::new();
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
            checked.push(CheckedSubscriber {
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
            Ok(checked)
        } else {
            Err(Error::Setup { problems })
        }
    }

    pub(super) fn log_registry(&self, views: &[ViewStart]) {
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
}
