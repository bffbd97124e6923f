//! The lifecycle hooks `#[on_startup]`, `#[after_startup]`, `#[on_shutdown]` and
//! `#[after_shutdown]`: one implementation, four stages.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::Parser;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, UnOp};

use crate::options::{self, Errors, Known};
use crate::signature::{self, HandlerFn};

pub(crate) use faststream_rules::HookStage as Stage;

const KNOWN: [Known; 1] = [Known {
    name: "order",
    usage: "`order = 10`",
}];

const ORDER_NOT_INTEGER: &str =
    "`order` must be an integer literal, e.g. `order = 10` or `order = -1`";

pub(crate) fn expand(stage: Stage, args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(stage, args, item.clone());
    signature::emit(stage.as_str(), item, generated)
}

fn generate(stage: Stage, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let attr = stage.as_str();
    let mut errors = Errors::default();
    let order = errors
        .ok(options::parse_list.parse2(args))
        .and_then(|list| match options::check(list, &KNOWN, &mut errors) {
            [None] => Some(0),
            [Some((expr, _span))] => errors.ok(parse_order(&expr)),
        });
    let handler = errors.ok(HandlerFn::parse(item, attr));
    if let Some(handler) = &handler {
        signature::check(&handler.sig, attr, &mut errors);
    }
    match (order, handler, errors.finish()) {
        (Some(order), Some(handler), Ok(())) => Ok(registration(stage, order, &handler)),
        (_, _, Err(error)) => Err(error),
        // Not reached: every `None` above comes with an error.
        _ => Err(syn::Error::new(
            Span::call_site(),
            format!("invalid `#[{attr}]`"),
        )),
    }
}

/// `order = 10`, `order = -1` or `order = 5i32`; the error covers the whole value.
fn parse_order(expr: &Expr) -> syn::Result<i32> {
    let not_integer = || syn::Error::new_spanned(expr, ORDER_NOT_INTEGER);
    let (negative, lit) = match options::peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => (false, lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match options::peel(inner) {
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

fn registration(stage: Stage, order: i32, handler: &HandlerFn) -> TokenStream {
    let boxed = signature::constructor(&handler.sig, "hook");
    let variant = Ident::new(stage.variant_name(), Span::call_site());
    signature::submit(
        handler,
        quote!(HookRegistration),
        quote! {
            stage: ::faststream_core::__private::HookStage::#variant,
            order: #order,
            hook: || #boxed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stage: Stage, args: TokenStream, item: TokenStream) -> Result<String, Vec<String>> {
        generate(stage, args, item)
            .map(|tokens| tokens.to_string())
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn expands_with_default_and_explicit_order() {
        let item = quote!(
            async fn warm_up(ctx: Ctx) -> anyhow::Result<()> {}
        );
        let out = run(Stage::AfterStartup, quote!(), item.clone()).expect("expands");
        assert!(out.contains("HookStage :: AfterStartup"), "{out}");
        assert!(out.contains("order : 0i32"), "{out}");
        assert!(
            out.contains(
                "hook : || :: faststream_core :: __private :: hook1 :: < Ctx , anyhow :: Result < () > , _ , _ > (warm_up)"
            ),
            "{out}"
        );
        let out = run(Stage::OnShutdown, quote!(order = -2147483648), item).expect("expands");
        assert!(out.contains("HookStage :: OnShutdown"), "{out}");
        assert!(out.contains("order : - 2147483648i32"), "{out}");
    }

    #[test]
    fn order_errors() {
        let item = quote!(
            async fn f() {}
        );
        let err = |args| run(Stage::OnStartup, args, item.clone()).unwrap_err();
        assert_eq!(err(quote!(order = x)), [ORDER_NOT_INTEGER]);
        assert_eq!(err(quote!(order = 1.5)), [ORDER_NOT_INTEGER]);
        assert_eq!(
            err(quote!(order = 3000000000)),
            ["`order` must fit in an `i32` (-2147483648..=2147483647), found `3000000000`"]
        );
        assert_eq!(
            err(quote!(order = 1u8)),
            ["`order` is an `i32`; remove the `u8` suffix"]
        );
        assert_eq!(
            err(quote!(prio = 1, order = 1, order = 2)),
            [
                "unknown option `prio`; expected one of: `order`",
                "`order` is set more than once"
            ]
        );
    }

    #[test]
    fn function_errors_name_the_hook() {
        let errors = run(
            Stage::AfterShutdown,
            quote!(),
            quote!(
                fn f<T>() {}
            ),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "`#[after_shutdown]` handlers must be `async fn`",
                "`#[after_shutdown]` handlers cannot have generic parameters",
            ]
        );
    }
}
