//! The values of the attributes: literals checked now, with the rules the runtime applies to the
//! same names (`faststream-rules`), so a name accepted here is never refused at start-up.

use proc_macro2::Span;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitBool, LitInt, LitStr, UnOp};

use faststream_rules::MAX_WORKERS;

use super::{KvWatch, KvWatchSource};

pub(crate) const KEY_NOT_LITERAL: &str =
    "the key to watch must be a string literal, e.g. `\"users.{id}\"` or `\"audit.>\"`";

pub(crate) const GROUP_NOT_LITERAL: &str =
    "`group` must be a string literal, e.g. `group = \"billing\"`; for a constant or a \
     `GroupSettings`, call `.group(..)` on the watch instead: \
     `kv_watch = KvWatch::new(\"bucket\").group(..)`";

pub(crate) const ORDER_NOT_INTEGER: &str =
    "`order` must be an integer literal, e.g. `order = 10` or `order = -1`";

/// The key must be a string literal holding a valid watch pattern.
pub(crate) fn key_pattern(expr: &Expr) -> syn::Result<LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let key = lit.value();
            faststream_rules::KeyPattern::parse(&key)
                .map_err(|error| syn::Error::new(lit.span(), error))?;
            // A fresh literal: same text and span, without a suffix or raw-string quirks.
            Ok(LitStr::new(&key, lit.span()))
        }
        other => Err(syn::Error::new_spanned(other, KEY_NOT_LITERAL)),
    }
}

/// `kv_watch = "bucket"` is a bucket name, checked now; any other expression is taken as the
/// user's `KvWatch`, checked by rustc. `name_span` is the span of the `kv_watch` name.
pub(crate) fn kv_watch(expr: Expr, name_span: Span) -> syn::Result<KvWatch> {
    let source = match peel(&expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => KvWatchSource::Bucket(bucket_name(lit)?),
        _ => KvWatchSource::Expression(expr),
    };
    Ok(KvWatch { source, name_span })
}

/// A bucket (or object store) name written as a literal, checked with the rule the runtime
/// applies: a fresh literal with the same text and span.
pub(super) fn bucket_name(lit: &LitStr) -> syn::Result<LitStr> {
    let bucket = lit.value();
    faststream_rules::validate_bucket(&bucket)
        .map_err(|error| syn::Error::new(lit.span(), error))?;
    Ok(LitStr::new(&bucket, lit.span()))
}

/// `max_workers = N`: an integer literal from 1 to [`MAX_WORKERS`], given back as `Nusize`.
pub(crate) fn max_workers(expr: &Expr) -> syn::Result<LitInt> {
    let invalid = || {
        syn::Error::new_spanned(
            expr,
            format!(
                "`max_workers` must be an integer literal from 1 to {MAX_WORKERS}, \
                 e.g. `max_workers = 8`"
            ),
        )
    };
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = peel(expr)
    else {
        return Err(invalid());
    };
    match lit.base10_parse::<usize>() {
        Ok(workers) if (1..=MAX_WORKERS).contains(&workers) && lit.suffix().is_empty() => {
            Ok(LitInt::new(&format!("{workers}usize"), lit.span()))
        }
        _ => Err(invalid()),
    }
}

/// `group = "billing"`: a string literal holding a valid consumer-group name, checked with the
/// rule `KvWatch::group` applies at start-up.
pub(crate) fn group(expr: &Expr) -> syn::Result<LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let group = lit.value();
            faststream_rules::validate_group(&group)
                .map_err(|error| syn::Error::new(lit.span(), error))?;
            Ok(LitStr::new(&group, lit.span()))
        }
        other => Err(syn::Error::new_spanned(other, GROUP_NOT_LITERAL)),
    }
}

/// `order = 10`, `order = -1` or `order = 5i32`; the error covers the whole value.
pub(crate) fn order(expr: &Expr) -> syn::Result<i32> {
    let not_integer = || syn::Error::new_spanned(expr, ORDER_NOT_INTEGER);
    let (negative, lit) = match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => (false, lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match peel(inner) {
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }) => (true, lit),
            _ => return Err(not_integer()),
        },
        _ => return Err(not_integer()),
    };
    if !matches!(lit.suffix(), "" | "i32") {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`order` is an `i32`; remove the `{}` suffix", lit.suffix()),
        ));
    }
    let sign = if negative { "-" } else { "" };
    let text = format!("{sign}{}", lit.base10_digits());
    text.parse::<i32>().map_err(|_| {
        syn::Error::new_spanned(
            expr,
            format!(
                "`order` must fit in an `i32` ({}..={}), found `{text}`",
                i32::MIN,
                i32::MAX
            ),
        )
    })
}

/// `true` or `false` as written, or `message` at anything else.
pub(super) fn bool_literal(expr: &Expr, message: &str) -> syn::Result<LitBool> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) => Ok(flag.clone()),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// Removes the invisible groups that `macro_rules!` puts around an `$x:expr`, so that a literal
/// passed through a declarative macro is still seen as a literal.
pub(super) fn peel(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}
