//! `#[subscriber("bucket", obj_watch = ..)]`: the object store's name and where the watch
//! settings come from.

use proc_macro2::Span;
use syn::{Expr, ExprLit, Lit, LitStr};

use super::values::{bucket_name, peel};
use super::ObjWatch;

pub(crate) const BUCKET_NOT_LITERAL: &str =
    "the object store to watch must be a string literal, e.g. `#[subscriber(\"reports\", \
     obj_watch = true)]`";

pub(crate) const OBJ_WATCH_FALSE: &str =
    "`obj_watch = false` watches nothing: remove the option, or write `obj_watch = true`";

/// The first argument of an object watch: a literal holding a valid object store name (the
/// rules of bucket names).
pub(crate) fn object_bucket(expr: &Expr) -> syn::Result<LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => bucket_name(lit),
        other => Err(syn::Error::new_spanned(other, BUCKET_NOT_LITERAL)),
    }
}

/// `obj_watch = true` is the default settings; `false` is refused; any other expression is the
/// user's `ObjWatch`, type-checked by rustc where it is written.
pub(crate) fn obj_watch(expr: Expr, name_span: Span) -> syn::Result<ObjWatch> {
    match peel(&expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) if flag.value => Ok(ObjWatch {
            settings: None,
            name_span,
        }),
        Expr::Lit(ExprLit {
            lit: Lit::Bool(flag),
            ..
        }) => Err(syn::Error::new(flag.span, OBJ_WATCH_FALSE)),
        _ => Ok(ObjWatch {
            settings: Some(expr),
            name_span,
        }),
    }
}
