//! Checking: the parsed parts judged against the rules, giving a validated model per attribute
//! (or every problem found).
//!
//! Each check returns a `syn::Result` and depends on no other check, so one bad value never hides
//! another; the attribute's driver joins the results (see `errors`). Only what is checked here
//! reaches `emit`, which therefore has no error paths.

mod options;
mod signature;
mod values;

use proc_macro2::{Span, TokenStream};
use syn::{Expr, LitInt, LitStr};

use crate::parse::HandlerFn;

pub(crate) use options::{sort_options, Known, Sorted};
pub(crate) use values::{group, key_pattern, kv_watch, max_workers, order};
#[cfg(test)]
pub(crate) use values::{GROUP_NOT_LITERAL, KEY_NOT_LITERAL, ORDER_NOT_INTEGER};

/// A validated `#[subscriber("key", kv_watch = .., max_workers = .., group = ..)]`.
pub(crate) struct Subscriber {
    /// The watch pattern, a fresh literal with the span of the one written.
    pub(crate) key: LitStr,
    pub(crate) kv_watch: KvWatch,
    /// `max_workers = N` as a `usize` literal, applied on top of the `kv_watch` settings.
    pub(crate) max_workers: Option<LitInt>,
    /// `group = "name"`, a checked consumer-group name, applied on top of the `kv_watch`
    /// settings (after `max_workers`).
    pub(crate) group: Option<LitStr>,
}

/// The `kv_watch = ..` option: where the watch settings come from.
pub(crate) struct KvWatch {
    pub(crate) source: KvWatchSource,
    /// The span of the `kv_watch` name, where a value of the wrong type is reported.
    pub(crate) name_span: Span,
}

pub(crate) enum KvWatchSource {
    /// A bucket name written as a literal, already checked.
    Bucket(LitStr),
    /// Any other expression: the user's `KvWatch`, type-checked by rustc where it is written.
    Expression(Expr),
}

/// The function under an attribute, parsed and checked for being registrable.
pub(crate) fn handler(item: TokenStream, attr: &str) -> syn::Result<HandlerFn> {
    HandlerFn::parse(item, attr).and_then(|handler| signature::signature(handler, attr))
}

/// A validated lifecycle hook attribute.
pub(crate) struct Hook {
    pub(crate) stage: faststream_rules::HookStage,
    /// Sorts the hooks of one stage; `0` when not written.
    pub(crate) order: i32,
}
