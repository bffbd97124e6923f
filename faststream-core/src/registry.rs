//! The registry the macros feed: `#[subscriber]` and hook registrations collected through
//! `inventory`, plus those added in code, sorted and checked for duplicates.
//!
//! `inventory` gathers registrations from every crate linked into the binary, in no particular
//! order. A library crate that the binary never names is not linked, and its registrations are
//! lost: name it once with `use my_handlers as _;` in the binary.

use std::borrow::Cow;

use faststream_rules::HookStage;

use crate::error::{Error, Result};
use crate::handler::{BoxedHandler, BoxedHook};
use crate::kv::options::KvWatch;

/// A `#[subscriber]` as registered by the macro. The fields are `const`: static strings and
/// function pointers; building the options and the handler happens when the app starts.
#[doc(hidden)]
#[derive(Debug)]
pub struct SubscriberRegistration {
    /// `module::path::fn_name`.
    pub name: &'static str,
    /// The key pattern as written.
    pub key: &'static str,
    /// Builds the watch settings.
    pub kv_watch: fn() -> KvWatch,
    /// Builds the handler.
    pub handler: fn() -> BoxedHandler,
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

inventory::collect!(SubscriberRegistration);
inventory::collect!(HookRegistration);

/// A subscriber ready to be started.
#[derive(Debug)]
pub(crate) struct SubscriberSpec {
    pub(crate) name: Cow<'static, str>,
    pub(crate) key: Cow<'static, str>,
    pub(crate) kv_watch: KvWatch,
    pub(crate) handler: BoxedHandler,
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
    pub(crate) hooks: Vec<HookSpec>,
}

impl Registry {
    /// Collects the registrations in `scope`, adds the ones given in code, sorts everything and
    /// rejects duplicate names.
    pub(crate) fn collect(
        scope: &Scope,
        mut subscribers: Vec<SubscriberSpec>,
        mut hooks: Vec<HookSpec>,
    ) -> Result<Self> {
        subscribers.extend(
            inventory::iter::<SubscriberRegistration>
                .into_iter()
                .filter(|registration| scope.includes(registration.name))
                .map(|registration| SubscriberSpec {
                    name: Cow::Borrowed(registration.name),
                    key: Cow::Borrowed(registration.key),
                    kv_watch: (registration.kv_watch)(),
                    handler: (registration.handler)(),
                    location: Some((registration.file, registration.line)),
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
        for pair in hooks.windows(2) {
            if pair[0].stage == pair[1].stage && pair[0].name == pair[1].name {
                problems.push(format!(
                    "{} hook `{}` is registered more than once",
                    pair[0].stage, pair[0].name
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self { subscribers, hooks })
        } else {
            Err(Error::Setup { problems })
        }
    }

    /// The hooks of one stage, in running order.
    pub(crate) fn hooks(&self, stage: HookStage) -> impl Iterator<Item = &HookSpec> {
        self.hooks.iter().filter(move |hook| hook.stage == stage)
    }
}

/// The names of every `#[subscriber]` linked into this binary, sorted: handy to check that a
/// library crate's handlers were linked.
pub(crate) fn registered_subscribers() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<SubscriberRegistration>
        .into_iter()
        .map(|registration| registration.name)
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
