//! The checks made before connecting: every subscriber's settings, key pattern and handler
//! arguments, and every hook's arguments, with all problems reported together.

use std::sync::{Arc, OnceLock};

use faststream_rules::KeyPattern;

use super::running::RunningApp;
use super::views::ViewStart;
use crate::context::{MessageKind, SubscriberContext};
use crate::error::{Error, Result};
use crate::handler::BoxedHandler;
use crate::kv::group::GroupSettings;
use crate::kv::options::KvWatch;
use crate::nats::Subscription;
use crate::observe::SubscriberObserver;
use crate::registry::PublisherSpec;

/// What every checked subscriber has, whatever it receives: what its handler is called with
/// and where its calls are counted.
pub(super) struct CheckedHandler {
    pub(super) context: Arc<SubscriberContext>,
    pub(super) handler: BoxedHandler,
    pub(super) observer: SubscriberObserver,
    /// The `#[publisher]`s of its function.
    pub(super) publishers: Vec<PublisherSpec>,
    /// Whether a request is answered with the handler's return value.
    pub(super) replies: bool,
}

/// A Key-Value subscriber whose settings passed every check.
pub(super) struct CheckedSubscriber {
    pub(super) kv_watch: KvWatch,
    pub(super) called: CheckedHandler,
}

/// A subject or stream subscriber whose settings passed every check.
pub(super) struct CheckedSubject {
    pub(super) subscription: Arc<Subscription>,
    pub(super) called: CheckedHandler,
}

/// Every subscriber, checked.
pub(super) struct Checked {
    pub(super) watches: Vec<CheckedSubscriber>,
    pub(super) subjects: Vec<CheckedSubject>,
}

impl RunningApp {
    /// Checks every subscriber and hook before connecting; all problems are reported together.
    pub(super) fn check_registry(&self, mut problems: Vec<String>) -> Result<Checked> {
        let mut checked = Vec::new();
        for spec in &self.registry.subscribers {
            let at = written_at(spec.location);
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
                kind: if spec.kv_watch.is_objects() {
                    MessageKind::Object
                } else {
                    MessageKind::KeyValue
                },
                bucket: Some(Arc::from(spec.kv_watch.bucket())),
                key_value: OnceLock::new(),
                object_store: OnceLock::new(),
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
                called: CheckedHandler {
                    context: Arc::new(context),
                    handler: spec.handler.clone(),
                    observer,
                    publishers: self.publishers_of(&spec.name),
                    replies: false,
                },
            });
        }
        let subjects = self.check_subjects(&mut problems);
        self.check_publishers(&mut problems);
        for hook in &self.registry.hooks {
            for problem in hook.hook.check(&self.context_for(hook.stage)) {
                problems.push(format!("{} hook `{}`: {problem}", hook.stage, hook.name));
            }
        }
        if problems.is_empty() {
            Ok(Checked {
                watches: checked,
                subjects,
            })
        } else {
            Err(Error::Setup { problems })
        }
    }

    fn check_subjects(&self, problems: &mut Vec<String>) -> Vec<CheckedSubject> {
        let mut checked = Vec::new();
        for spec in &self.registry.subjects {
            let at = written_at(spec.location);
            let mut fail = |problem: String| {
                problems.push(format!("subscriber `{}`{at}: {problem}", spec.name));
            };
            let pattern = match KeyPattern::parse_subject(&spec.subject) {
                Ok(pattern) => pattern,
                Err(error) => {
                    fail(error.to_string());
                    continue;
                }
            };
            for problem in spec.subscription.problems(&pattern) {
                fail(problem);
            }
            let stream = spec.subscription.jstream();
            let context = SubscriberContext {
                app: self.app.clone(),
                name: Arc::from(&*spec.name),
                pattern,
                kind: if stream.is_some() {
                    MessageKind::Stream
                } else {
                    MessageKind::Subject
                },
                bucket: None,
                key_value: OnceLock::new(),
                object_store: OnceLock::new(),
            };
            for problem in spec.handler.check(&context) {
                fail(problem);
            }
            let observer = self.observer.subscriber(
                &spec.name,
                stream.map_or("", |stream| stream.name()),
                &spec.subject,
                spec.subscription
                    .durable_name()
                    .or(spec.subscription.queue.as_deref()),
            );
            checked.push(CheckedSubject {
                subscription: Arc::new(spec.subscription.clone()),
                called: CheckedHandler {
                    context: Arc::new(context),
                    handler: spec.handler.clone(),
                    observer,
                    publishers: self.publishers_of(&spec.function),
                    replies: !spec.subscription.no_reply,
                },
            });
        }
        checked
    }

    /// A publisher's subject (with its router's prefix) and stream are checked here, as the
    /// macro could check only what was written.
    fn check_publishers(&self, problems: &mut Vec<String>) {
        for publisher in &self.registry.publishers {
            let at = written_at(publisher.location);
            let stream = publisher.publisher.stream.as_deref();
            let checked = faststream_rules::validate_subject(&publisher.subject)
                .and_then(|()| stream.map_or(Ok(()), faststream_rules::validate_stream));
            if let Err(error) = checked {
                problems.push(format!(
                    "publisher `{}` of `{}`{at}: {error}",
                    publisher.subject, publisher.handler
                ));
            }
        }
    }

    fn publishers_of(&self, function: &str) -> Vec<PublisherSpec> {
        self.registry
            .publishers
            .iter()
            .filter(|publisher| publisher.handler == function)
            .cloned()
            .collect()
    }

    pub(super) fn log_registry(&self, views: &[ViewStart]) {
        for view in views {
            tracing::info!("{}", view.description);
        }
        let registry = &self.registry;
        let subscribers = registry.subscribers.len() + registry.subjects.len();
        tracing::info!(
            subscribers,
            hooks = registry.hooks.len(),
            "found {subscribers} subscriber(s) and {} hook(s)",
            registry.hooks.len()
        );
        for spec in registry
            .subscribers
            .iter()
            .filter(|spec| spec.kv_watch.is_objects())
        {
            tracing::info!(
                subscriber = %spec.name,
                bucket = spec.kv_watch.bucket(),
                declare = spec.kv_watch.declares(),
                "subscriber watches object store `{}`",
                spec.kv_watch.bucket()
            );
        }
        for spec in registry
            .subscribers
            .iter()
            .filter(|spec| !spec.kv_watch.is_objects())
        {
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
        for spec in &registry.subjects {
            let stream = spec.subscription.jstream().map(|stream| stream.name());
            tracing::info!(subscriber = %spec.name, subject = %spec.subject, stream,
                queue = spec.subscription.queue.as_deref(),
                "subscriber listens on `{}`{}", spec.subject,
                stream.map(|stream| format!(" in stream `{stream}`")).unwrap_or_default());
        }
        for publisher in &registry.publishers {
            tracing::info!(handler = %publisher.handler, subject = %publisher.subject,
                "`{}` publishes to `{}`", publisher.handler, publisher.subject);
        }
        for hook in &registry.hooks {
            tracing::info!(hook = %hook.name, stage = %hook.stage, order = hook.order, "hook");
        }
    }
}

/// Where a registration was written, as the problems name it: ` (src/main.rs:12)`, or nothing
/// for one added in code.
fn written_at(location: Option<(&'static str, u32)>) -> String {
    location
        .map(|(file, line)| format!(" ({file}:{line})"))
        .unwrap_or_default()
}
