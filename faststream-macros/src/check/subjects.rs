//! The values of the NATS subject options (subscribers, publishers and routers): literals checked
//! now with the rules of `faststream-rules`, other expressions passed through to rustc.

use proc_macro2::Span;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitBool, LitInt, LitStr, UnOp};

use faststream_rules::{KeyPattern, NameError, MAX_PULL_BATCH};

use super::values::{bool_literal, peel};
use super::{PullSub, Stream, Typed};

pub(crate) const SUBJECT_NOT_LITERAL: &str =
    "the subject must be a string literal, e.g. `\"orders.{id}\"` or `\"orders.>\"`";

pub(crate) const PUBLISH_SUBJECT_NOT_LITERAL: &str =
    "the subject to publish to must be a string literal, e.g. `\"billing.done\"`";

pub(crate) const QUEUE_NOT_LITERAL: &str =
    "`queue` must be a string literal, e.g. `queue = \"workers\"`";

pub(crate) const DURABLE_NOT_LITERAL: &str =
    "`durable` must be a string literal, e.g. `durable = \"billing\"`";

pub(crate) const ORDERED_BY_NOT_LITERAL: &str =
    "`ordered_by` must be a string literal naming a `{placeholder}` of the subject, e.g. \
     `ordered_by = \"id\"`, or `ordered_by = \"subject\"` for the whole subject";

pub(crate) const NO_REPLY_NOT_BOOL: &str = "`no_reply` must be `true` or `false`";

pub(crate) const PULL_SUB_INVALID: &str =
    "`pull_sub` takes a batch size from 1 to 10000 (`pull_sub = 16`), `true` for the default \
     settings, or an expression of type `PullSub`";

pub(crate) const PULL_SUB_FALSE: &str =
    "`pull_sub = false` is what leaving `pull_sub` out does: remove it";

pub(crate) const PREFIX_NOT_LITERAL: &str =
    "`prefix` must be a string literal, e.g. `prefix = \"orders.\"`";

// The message quotes the bound; this keeps the two from drifting apart.
const _: () = assert!(MAX_PULL_BATCH == 10_000);

/// What `ordered_by` names to order by the whole subject rather than one placeholder.
const WHOLE_SUBJECT: &str = "subject";

/// A checked subject pattern: the literal to emit, and its parts for `ordered_by`.
pub(crate) struct SubjectPattern {
    pub(crate) literal: LitStr,
    pub(crate) pattern: KeyPattern,
}

/// The subject of a subscriber: a string literal holding a valid subject pattern.
pub(crate) fn subject_pattern(expr: &Expr) -> syn::Result<SubjectPattern> {
    let Some(lit) = string_literal(expr) else {
        return Err(syn::Error::new_spanned(peel(expr), SUBJECT_NOT_LITERAL));
    };
    let pattern =
        KeyPattern::parse_subject(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok(SubjectPattern {
        literal: LitStr::new(pattern.as_str(), lit.span()),
        pattern,
    })
}

/// The subject of a publisher: a string literal holding a concrete subject.
pub(crate) fn publish_subject(expr: &Expr) -> syn::Result<LitStr> {
    checked_literal(
        expr,
        faststream_rules::validate_subject,
        PUBLISH_SUBJECT_NOT_LITERAL,
    )
}

/// `router!(prefix = "orders.")`: a string literal holding a valid subject prefix.
pub(crate) fn subject_prefix(expr: &Expr) -> syn::Result<LitStr> {
    checked_literal(
        expr,
        faststream_rules::validate_subject_prefix,
        PREFIX_NOT_LITERAL,
    )
}

/// `queue = "workers"`: a string literal holding a valid queue group name.
pub(crate) fn queue(expr: &Expr) -> syn::Result<LitStr> {
    checked_literal(expr, faststream_rules::validate_queue, QUEUE_NOT_LITERAL)
}

/// `durable = "billing"`: a string literal holding a valid durable consumer name.
pub(crate) fn durable(expr: &Expr) -> syn::Result<LitStr> {
    checked_literal(
        expr,
        faststream_rules::validate_durable,
        DURABLE_NOT_LITERAL,
    )
}

/// `stream = "ORDERS"` is a stream name, checked now; any other expression is passed to a
/// method taking `impl Into<JStream>`, checked by rustc. `name_span` is the span of `stream`.
pub(crate) fn stream(expr: Expr, name_span: Span) -> syn::Result<Stream> {
    match string_literal(&expr) {
        Some(lit) => {
            let name = lit.value();
            faststream_rules::validate_stream(&name)
                .map_err(|error| syn::Error::new(lit.span(), error))?;
            Ok(Stream::Name(LitStr::new(&name, lit.span())))
        }
        None => Ok(Stream::Expression(typed(expr, name_span))),
    }
}

/// `pull_sub = 16` (a batch size from 1 to [`MAX_PULL_BATCH`]), `pull_sub = true` (the default
/// settings) or any expression of type `PullSub`. Other literals cannot be a `PullSub`, so they
/// are refused here rather than left to a type error.
pub(crate) fn pull_sub(expr: Expr, name_span: Span) -> syn::Result<PullSub> {
    let invalid = |expr: &Expr| Err(syn::Error::new_spanned(expr, PULL_SUB_INVALID));
    match peel(&expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) if flag.value => Ok(PullSub::Default),
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) => Err(syn::Error::new(flag.span, PULL_SUB_FALSE)),
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => match lit.base10_parse::<usize>() {
            Ok(batch) if (1..=MAX_PULL_BATCH).contains(&batch) && lit.suffix().is_empty() => Ok(
                PullSub::Batch(LitInt::new(&format!("{batch}usize"), lit.span())),
            ),
            _ => invalid(&expr),
        },
        Expr::Lit(_) => invalid(&expr),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) if matches!(peel(inner), Expr::Lit(_)) => invalid(&expr),
        _ => Ok(PullSub::Expression(typed(expr, name_span))),
    }
}

/// An expression passed through as it is (`deliver_policy`, `ack_policy`), to be bound to its
/// type at `name_span`.
pub(crate) fn typed(expr: Expr, name_span: Span) -> Typed {
    Typed { expr, name_span }
}

/// `ordered_by = "id"`: a string literal naming a `{placeholder}` of `subject`, or `"subject"`
/// for the whole subject. Without a valid subject (`None`, already reported), only the shape is
/// checked.
pub(crate) fn ordered_by(expr: &Expr, subject: Option<&KeyPattern>) -> syn::Result<LitStr> {
    let Some(lit) = string_literal(expr) else {
        return Err(syn::Error::new_spanned(peel(expr), ORDERED_BY_NOT_LITERAL));
    };
    let name = lit.value();
    let checked = LitStr::new(&name, lit.span());
    let Some(subject) = subject else {
        return Ok(checked);
    };
    let params = subject.params();
    let has = |name: &str| params.iter().any(|param| param.name == name);
    let written = subject.as_str();
    let problem = if name == WHOLE_SUBJECT {
        if !has(WHOLE_SUBJECT) {
            return Ok(checked);
        }
        format!(
            "`ordered_by = \"subject\"` is ambiguous: `{written}` has a `{{subject}}` \
             placeholder, and `\"subject\"` also means the whole subject; rename the placeholder"
        )
    } else if has(&name) {
        return Ok(checked);
    } else if params.is_empty() {
        format!(
            "`ordered_by = \"{name}\"` names no placeholder of `{written}`, which has none: \
             write `ordered_by = \"subject\"` to order by the whole subject, or make a token a \
             `{{placeholder}}` and name it"
        )
    } else {
        let names: Vec<String> = params
            .iter()
            .map(|param| format!("`\"{}\"`", param.name))
            .collect();
        format!(
            "`ordered_by = \"{name}\"` names no placeholder of `{written}`: write one of {}, or \
             `\"subject\"` for the whole subject",
            names.join(", ")
        )
    };
    Err(syn::Error::new(lit.span(), problem))
}

/// `no_reply = true` or `no_reply = false`.
pub(crate) fn no_reply(expr: &Expr) -> syn::Result<LitBool> {
    bool_literal(expr, NO_REPLY_NOT_BOOL)
}

/// A string literal checked by `rule`: a fresh literal with the same text and span (without a
/// suffix or raw-string quirks), or the rule's message at the literal, or `not_literal` at any
/// other expression.
fn checked_literal(
    expr: &Expr,
    rule: fn(&str) -> Result<(), NameError>,
    not_literal: &str,
) -> syn::Result<LitStr> {
    let Some(lit) = string_literal(expr) else {
        return Err(syn::Error::new_spanned(peel(expr), not_literal));
    };
    let text = lit.value();
    rule(&text).map_err(|error| syn::Error::new(lit.span(), error))?;
    Ok(LitStr::new(&text, lit.span()))
}

/// The string literal `expr` is, through the invisible groups of `macro_rules!`.
fn string_literal(expr: &Expr) -> Option<&LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        _ => None,
    }
}
