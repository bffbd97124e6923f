//! The registry the macros feed: `#[subscriber]` and hook registrations collected through
//! `inventory`, plus those added in code, sorted and checked for duplicates.
//!
//! `inventory` gathers registrations from every crate linked into the binary, in no particular
//! order. A library crate that the binary never names is not linked, and its registrations are
//! lost: name it once with `use my_handlers as _;` in the binary.

use std::borrow::Cow;

use faststream_rules::HookStage;

use crate::error::{Error, Result};
use crate::handler::describe::HandlerDoc;
use crate::handler::{BoxedHandler, BoxedHook};
use crate::kv::options::KvWatch;
use crate::nats::{Publisher, Subscription};

/// A `#[subscriber]` as registered by the macro. The fields are `const`: static strings and
/// function pointers; building the options and the handler happens when the app starts.
#[doc(hidden)]
#[derive(Debug)]
pub struct SubscriberRegistration {
    /// `module::path::fn_name`.
    pub name: &'static str,
    /// The key pattern as written (`>` for an object watch).
    pub key: &'static str,
    /// Builds the watch settings (of an object watch: see `__private::obj_watch`).
    pub kv_watch: fn() -> KvWatch,
    /// Builds the handler.
    pub handler: fn() -> BoxedHandler,
    /// What the AsyncAPI document says of it.
    pub doc: fn() -> HandlerDoc,
    /// Where the attribute was written.
    pub file: &'static str,
    /// Where the attribute was written.
    pub line: u32,
}

/// A lifecycle hook as registered by the macro.
#[doc(hidden)]
#[derive(Debug)]
pub struct HookRegistration {
    /// When it runs.
    pub stage: HookStage,
    /// `module::path::fn_name`.
    pub name: &'static str,
    /// Hooks of one stage run by ascending `order`, then by name.
    pub order: i32,
    /// Builds the hook.
    pub hook: fn() -> BoxedHook,
    /// Where the attribute was written.
    pub file: &'static str,
    /// Where the attribute was written.
    pub line: u32,
}

/// A `#[subscriber("subject", ..)]` of a core subject or a stream, as registered by the macro.
#[doc(hidden)]
#[derive(Debug)]
pub struct SubjectRegistration {
    /// `module::path::fn_name`.
    pub name: &'static str,
    /// The subject pattern as written.
    pub subject: &'static str,
    /// Builds the subscription settings.
    pub subscription: fn() -> Subscription,
    /// Builds the handler.
    pub handler: fn() -> BoxedHandler,
    /// What the AsyncAPI document says of it.
    pub doc: fn() -> HandlerDoc,
    /// Where the attribute was written.
    pub file: &'static str,
    /// Where the attribute was written.
    pub line: u32,
}

/// A `#[publisher("subject")]`, as registered by the macro: joined at start-up with the
/// subscribers of the same function.
#[doc(hidden)]
#[derive(Debug)]
pub struct PublisherRegistration {
    /// The handler's `module::path::fn_name`.
    pub handler: &'static str,
    /// The subject as written.
    pub subject: &'static str,
    /// Builds the publisher settings.
    pub publisher: fn() -> Publisher,
    /// What the AsyncAPI document says of it.
    pub doc: fn() -> HandlerDoc,
    /// Where the attribute was written.
    pub file: &'static str,
    /// Where the attribute was written.
    pub line: u32,
}

/// A `router!(prefix = "..")`, as registered by the macro: the prefix of every subject (and
/// key) registered in its module and below.
#[doc(hidden)]
#[derive(Debug)]
pub struct RouterRegistration {
    /// The module it was written in.
    pub module: &'static str,
    /// The prefix.
    pub prefix: &'static str,
    /// Where the macro was written.
    pub file: &'static str,
    /// Where the macro was written.
    pub line: u32,
}

inventory::collect!(SubscriberRegistration);
inventory::collect!(SubjectRegistration);
inventory::collect!(PublisherRegistration);
inventory::collect!(RouterRegistration);
inventory::collect!(HookRegistration);

/// A subscriber ready to be started.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberSpec {
    pub(crate) name: Cow<'static, str>,
    pub(crate) key: Cow<'static, str>,
    pub(crate) kv_watch: KvWatch,
    pub(crate) handler: BoxedHandler,
    /// Builds what the AsyncAPI document says of it (`HandlerDoc::unknown` when added in code).
    pub(crate) doc: fn() -> HandlerDoc,
    pub(crate) location: Option<(&'static str, u32)>,
}

/// A subject or stream subscriber ready to be started.
#[derive(Debug, Clone)]
pub(crate) struct SubjectSpec {
    /// Unique: the function's path, followed by `[subject]` when one function has several.
    pub(crate) name: Cow<'static, str>,
    /// The function's path, which its publishers name.
    pub(crate) function: Cow<'static, str>,
    /// The subject pattern, router prefix included.
    pub(crate) subject: Cow<'static, str>,
    pub(crate) subscription: Subscription,
    pub(crate) handler: BoxedHandler,
    /// Builds what the AsyncAPI document says of it.
    pub(crate) doc: fn() -> HandlerDoc,
    pub(crate) location: Option<(&'static str, u32)>,
}

/// A publisher ready to be joined with its handler's subscribers.
#[derive(Debug, Clone)]
pub(crate) struct PublisherSpec {
    /// The handler's path.
    pub(crate) handler: Cow<'static, str>,
    /// The subject, router prefix included.
    pub(crate) subject: Cow<'static, str>,
    pub(crate) publisher: Publisher,
    /// Builds what the AsyncAPI document says of it.
    pub(crate) doc: fn() -> HandlerDoc,
    pub(crate) location: Option<(&'static str, u32)>,
}

/// A hook ready to be run.
#[derive(Debug)]
pub(crate) struct HookSpec {
    pub(crate) stage: HookStage,
    pub(crate) name: Cow<'static, str>,
    pub(crate) order: i32,
    pub(crate) hook: BoxedHook,
}

/// Which registrations an app takes from `inventory`.
#[derive(Debug, Clone, Default)]
pub(crate) enum Scope {
    /// Every registration linked into the binary.
    #[default]
    All,
    /// Only those in this module or below.
    Module(String),
    /// None: only what is added in code.
    None,
}

impl Scope {
    fn includes(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Module(module) => name
                .strip_prefix(module.as_str())
                .is_some_and(|rest| rest.starts_with("::")),
            Scope::None => false,
        }
    }
}

/// Every subscriber and hook of one app, sorted.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) subscribers: Vec<SubscriberSpec>,
    pub(crate) subjects: Vec<SubjectSpec>,
    pub(crate) publishers: Vec<PublisherSpec>,
    pub(crate) hooks: Vec<HookSpec>,
}

impl Registry {
    /// Collects the registrations in `scope`, adds the ones given in code, sorts everything and
    /// rejects duplicate names.
    pub(crate) fn collect(
        scope: &Scope,
        mut subscribers: Vec<SubscriberSpec>,
        mut subjects: Vec<SubjectSpec>,
        mut hooks: Vec<HookSpec>,
    ) -> Result<Self> {
        let routers: Vec<&RouterRegistration> =
            inventory::iter::<RouterRegistration>.into_iter().collect();
        let prefixed = |name: &str, subject: &'static str| -> Cow<'static, str> {
            match router_prefix(&routers, name) {
                prefix if prefix.is_empty() => Cow::Borrowed(subject),
                prefix => Cow::Owned(format!("{prefix}{subject}")),
            }
        };
        subjects.extend(
            inventory::iter::<SubjectRegistration>
                .into_iter()
                .filter(|registration| scope.includes(registration.name))
                .map(|registration| SubjectSpec {
                    name: Cow::Borrowed(registration.name),
                    function: Cow::Borrowed(registration.name),
                    subject: prefixed(registration.name, registration.subject),
                    subscription: (registration.subscription)(),
                    handler: (registration.handler)(),
                    doc: registration.doc,
                    location: Some((registration.file, registration.line)),
                }),
        );
        let publishers: Vec<PublisherSpec> = inventory::iter::<PublisherRegistration>
            .into_iter()
            .filter(|registration| scope.includes(registration.handler))
            .map(|registration| PublisherSpec {
                handler: Cow::Borrowed(registration.handler),
                subject: prefixed(registration.handler, registration.subject),
                publisher: (registration.publisher)(),
                doc: registration.doc,
                location: Some((registration.file, registration.line)),
            })
            .collect();
        subscribers.extend(
            inventory::iter::<SubscriberRegistration>
                .into_iter()
                .filter(|registration| scope.includes(registration.name))
                .map(|registration| {
                    let kv_watch = (registration.kv_watch)();
                    SubscriberSpec {
                        name: Cow::Borrowed(registration.name),
                        // As in FastStream, a router's prefix applies to keys too; an object
                        // watch reads every object of its store, and a dotted prefix cannot
                        // be part of a store's name.
                        key: if kv_watch.is_objects() {
                            Cow::Borrowed(registration.key)
                        } else {
                            prefixed(registration.name, registration.key)
                        },
                        kv_watch,
                        handler: (registration.handler)(),
                        doc: registration.doc,
                        location: Some((registration.file, registration.line)),
                    }
                }),
        );
        hooks.extend(
            inventory::iter::<HookRegistration>
                .into_iter()
                .filter(|registration| scope.includes(registration.name))
                .map(|registration| HookSpec {
                    stage: registration.stage,
                    name: Cow::Borrowed(registration.name),
                    order: registration.order,
                    hook: (registration.hook)(),
                }),
        );
        subscribers.sort_by(|a, b| a.name.cmp(&b.name));
        subjects.sort_by(|a, b| (&a.name, &a.subject).cmp(&(&b.name, &b.subject)));
        name_each_subject(&mut subjects);
        hooks.sort_by(|a, b| (a.stage, a.order, &a.name).cmp(&(b.stage, b.order, &b.name)));

        let mut problems = Vec::new();
        for pair in subscribers.windows(2) {
            if pair[0].name == pair[1].name {
                problems.push(format!(
                    "subscriber name `{}` is registered more than once",
                    pair[0].name
                ));
            }
        }
        for pair in subjects.windows(2) {
            if pair[0].name == pair[1].name {
                problems.push(format!(
                    "subscriber `{}` is registered more than once on `{}`",
                    pair[0].function, pair[0].subject
                ));
            }
        }
        for spec in &subjects {
            if subscribers.iter().any(|kv| kv.name == spec.function) {
                problems.push(format!(
                    "`{}` subscribes both to a subject and to a Key-Value bucket: one function \
                     takes one kind of message (its arguments are built from it)",
                    spec.function
                ));
            }
        }
        for publisher in &publishers {
            let subscribed = subjects
                .iter()
                .any(|spec| spec.function == publisher.handler)
                || subscribers
                    .iter()
                    .any(|spec| spec.name == publisher.handler);
            if !subscribed {
                let at = publisher
                    .location
                    .map(|(file, line)| format!(" ({file}:{line})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "`#[publisher(\"{}\")]` on `{}`{at} has no `#[subscriber]`: a publisher \
                     sends what its handler returns, so the function needs a `#[subscriber]` too",
                    publisher.subject, publisher.handler
                ));
            }
        }
        for pair in hooks.windows(2) {
            if pair[0].stage == pair[1].stage && pair[0].name == pair[1].name {
                problems.push(format!(
                    "{} hook `{}` is registered more than once",
                    pair[0].stage, pair[0].name
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self {
                subscribers,
                subjects,
                publishers,
                hooks,
            })
        } else {
            Err(Error::Setup { problems })
        }
    }

    /// The hooks of one stage, in running order.
    pub(crate) fn hooks(&self, stage: HookStage) -> impl Iterator<Item = &HookSpec> {
        self.hooks.iter().filter(move |hook| hook.stage == stage)
    }
}

/// The prefix of the routers whose module holds `name`, outermost first (FastStream joins
/// nested routers' prefixes the same way).
fn router_prefix(routers: &[&RouterRegistration], name: &str) -> String {
    let mut holding: Vec<&&RouterRegistration> = routers
        .iter()
        .filter(|router| {
            name.strip_prefix(router.module)
                .is_some_and(|rest| rest.starts_with("::"))
        })
        .collect();
    holding.sort_by_key(|router| router.module.len());
    holding.iter().map(|router| router.prefix).collect()
}

/// A function with several `#[subscriber]`s (allowed, as in FastStream) gets one name per
/// subject: `path::to::f[subject]`.
fn name_each_subject(subjects: &mut [SubjectSpec]) {
    let mut start = 0;
    while start < subjects.len() {
        let end = subjects[start..]
            .iter()
            .position(|spec| spec.function != subjects[start].function)
            .map_or(subjects.len(), |len| start + len);
        let distinct = subjects[start..end]
            .windows(2)
            .all(|pair| pair[0].subject != pair[1].subject);
        if end - start > 1 && distinct {
            for spec in &mut subjects[start..end] {
                spec.name = Cow::Owned(format!("{}[{}]", spec.function, spec.subject));
            }
        }
        start = end;
    }
}

/// The names of every `#[subscriber]` linked into this binary, sorted: handy to check that a
/// library crate's handlers were linked.
pub(crate) fn registered_subscribers() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<SubscriberRegistration>
        .into_iter()
        .map(|registration| registration.name)
        .chain(
            inventory::iter::<SubjectRegistration>
                .into_iter()
                .map(|registration| registration.name),
        )
        .collect();
    names.sort_unstable();
    names
}

/// The names of every lifecycle hook linked into this binary, sorted.
pub(crate) fn registered_hooks() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<HookRegistration>
        .into_iter()
        .map(|registration| registration.name)
        .collect();
    names.sort_unstable();
    names
}
