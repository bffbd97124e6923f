//! Checking: the parsed parts judged against the rules, giving a validated model per attribute
//! (or every problem found).
//!
//! Each check returns a `syn::Result` and depends on no other check, so one bad value never hides
//! another; the attribute's driver joins the results (see `errors`). Only what is checked here
//! reaches `emit`, which therefore has no error paths.

mod docs;
mod objects;
mod options;
mod signature;
mod subjects;
mod values;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::{Expr, LitBool, LitInt, LitStr, ReturnType};

use crate::errors::join;
use crate::parse::HandlerFn;

pub(crate) use docs::{doc_comment, doc_options, DocOptions};
#[cfg(test)]
pub(crate) use docs::{
    DESCRIPTION_NOT_LITERAL, INCLUDE_NOT_BOOL, SCHEMA_NOT_TYPE, TITLE_NOT_LITERAL,
};
pub(crate) use objects::{obj_watch, object_bucket};
#[cfg(test)]
pub(crate) use objects::{BUCKET_NOT_LITERAL, OBJ_WATCH_FALSE};
pub(crate) use options::{sort_options, Known, Sorted};
pub(crate) use subjects::{
    durable, no_reply, ordered_by, publish_subject, pull_sub, queue, stream, subject_pattern,
    subject_prefix, typed,
};
#[cfg(test)]
pub(crate) use subjects::{
    DURABLE_NOT_LITERAL, NO_REPLY_NOT_BOOL, ORDERED_BY_NOT_LITERAL, PREFIX_NOT_LITERAL,
    PUBLISH_SUBJECT_NOT_LITERAL, PULL_SUB_FALSE, PULL_SUB_INVALID, QUEUE_NOT_LITERAL,
    SUBJECT_NOT_LITERAL,
};
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

/// A validated `#[subscriber("bucket", obj_watch = .., max_workers = ..)]`.
pub(crate) struct ObjSubscriber {
    /// The object store, a fresh literal with the span of the one written.
    pub(crate) bucket: LitStr,
    pub(crate) obj_watch: ObjWatch,
    /// `max_workers = N` as a `usize` literal, applied on top of the `obj_watch` settings.
    pub(crate) max_workers: Option<LitInt>,
}

/// The `obj_watch = ..` option.
pub(crate) struct ObjWatch {
    /// The user's `ObjWatch` expression; `None` for `obj_watch = true`.
    pub(crate) settings: Option<Expr>,
    /// The span of the `obj_watch` name, where a value of the wrong type is reported.
    pub(crate) name_span: Span,
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

/// A validated `#[subscriber("subject", ..)]` without `kv_watch`: a NATS subject subscriber.
pub(crate) struct SubjectSubscriber {
    /// The subject pattern, a fresh literal with the span of the one written.
    pub(crate) subject: LitStr,
    pub(crate) subscription: Subscription,
}

/// The settings of a subject subscriber, each `None` when not written; applied in this order.
#[derive(Default)]
pub(crate) struct Subscription {
    /// `queue = "workers"`, a checked queue group name.
    pub(crate) queue: Option<LitStr>,
    pub(crate) stream: Option<Stream>,
    /// `durable = "billing"`, a checked durable consumer name.
    pub(crate) durable: Option<LitStr>,
    pub(crate) pull_sub: Option<PullSub>,
    /// `deliver_policy = <expr>`, of type `faststream_core::DeliverPolicy`.
    pub(crate) deliver_policy: Option<Typed>,
    /// `ack_policy = <expr>`, of type `faststream_core::AckPolicy`.
    pub(crate) ack_policy: Option<Typed>,
    /// `max_workers = N` as a `usize` literal.
    pub(crate) max_workers: Option<LitInt>,
    /// `ordered_by = "id"`: a placeholder of the subject pattern, or `"subject"`.
    pub(crate) ordered_by: Option<LitStr>,
    /// `no_reply = true|false`.
    pub(crate) no_reply: Option<LitBool>,
    /// `subscription = <expr>`, of type `faststream_core::Subscription`: the settings the other
    /// options are applied on (`Subscription::new()` when not written).
    pub(crate) base: Option<Typed>,
}

/// `stream = ..` of a subscriber or publisher.
pub(crate) enum Stream {
    /// A stream name written as a literal, already checked.
    Name(LitStr),
    /// Any other expression, passed to a method taking `impl Into<JStream>`; the call carries
    /// the span of the option's name, where rustc points when the bound is not met.
    Expression(Typed),
}

/// `pull_sub = ..`: how a pull subscriber fetches.
pub(crate) enum PullSub {
    /// `pull_sub = 16`: a batch size, checked and given back as a `usize` literal.
    Batch(LitInt),
    /// `pull_sub = true`: the default settings.
    Default,
    /// Any other expression, of type `faststream_core::PullSub`.
    Expression(Typed),
}

/// An option's expression passed through to a method, with the span of the option's name: a
/// value of the wrong type is reported there, as for `kv_watch`.
pub(crate) struct Typed {
    pub(crate) expr: Expr,
    pub(crate) name_span: Span,
}

/// A validated `#[publisher("subject", stream = ..)]`.
pub(crate) struct Publisher {
    /// The concrete subject, a fresh literal with the span of the one written.
    pub(crate) subject: LitStr,
    pub(crate) stream: Option<Stream>,
    /// `publisher = <expr>`, of type `faststream_core::Publisher`: the settings `stream` is
    /// applied on (`Publisher::new()` when not written).
    pub(crate) base: Option<Typed>,
}

/// A validated `router!(prefix = "..")`.
pub(crate) struct Router {
    /// The subject prefix, a fresh literal with the span of the one written.
    pub(crate) prefix: LitStr,
}

/// The function under an attribute, parsed and checked for being registrable.
pub(crate) fn handler(item: TokenStream, attr: &str) -> syn::Result<HandlerFn> {
    HandlerFn::parse(item, attr).and_then(|handler| signature::signature(handler, attr))
}

/// The function under `#[publisher]`: registrable as a handler (see [`handler`]), and returning
/// the value to publish. Gives the function and its written return type; every problem of both
/// is reported.
pub(crate) fn publishing_handler(
    item: TokenStream,
    attr: &str,
) -> syn::Result<(HandlerFn, syn::Type)> {
    let handler = HandlerFn::parse(item, attr)?;
    let output = match &handler.sig.output {
        ReturnType::Type(_, ty) => Ok((**ty).clone()),
        ReturnType::Default => {
            let name = handler.sig.ident.unraw();
            Err(syn::Error::new(
                handler.sig.ident.span(),
                format!(
                    "`#[{attr}]` publishes what `{name}` returns, but it returns nothing: return \
                     the value to publish, for example `-> anyhow::Result<Json<Bill>>`"
                ),
            ))
        }
    };
    join(signature::signature(handler, attr), output)
}

/// A validated lifecycle hook attribute.
pub(crate) struct Hook {
    pub(crate) stage: faststream_rules::HookStage,
    /// Sorts the hooks of one stage; `0` when not written.
    pub(crate) order: i32,
}
