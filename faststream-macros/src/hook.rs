//! The lifecycle hooks `#[on_startup]`, `#[after_startup]`, `#[on_shutdown]` and
//! `#[after_shutdown]`: one driver for the four stages, with the one option `order`; the work is
//! done by `parse`, `check` and `emit`.

use proc_macro2::TokenStream;
use syn::parse::Parser;

use faststream_rules::HookStage;

use crate::check::{self, Hook, Known, Sorted};
use crate::emit;
use crate::errors::join;
use crate::parse::{self, NameValue};

const KNOWN: [Known; 1] = [Known {
    name: "order",
    usage: "`order = 10`",
}];

pub(crate) fn expand(stage: HookStage, args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(stage, args, item.clone());
    emit::output(stage.as_str(), item, generated)
}

fn generate(stage: HookStage, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let hook = parse::options
        .parse2(args)
        .and_then(|options| check_args(stage, options));
    let (hook, handler) = join(hook, check::handler(item, stage.as_str()))?;
    Ok(emit::hook(&hook, &handler))
}

/// The options' problems first, then the value of `order` (`0` when not written).
fn check_args(stage: HookStage, options: Vec<NameValue>) -> syn::Result<Hook> {
    let Sorted {
        slots: [order],
        problems,
        ..
    } = check::sort_options(options, &KNOWN);
    let order = order.map_or(Ok(0), |(expr, _)| check::order(&expr));
    let ((), order) = join(problems, order)?;
    Ok(Hook { stage, order })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ORDER_NOT_INTEGER;
    use quote::quote;

    fn run(stage: HookStage, args: TokenStream, item: TokenStream) -> Result<String, Vec<String>> {
        generate(stage, args, item)
            .map(|tokens| tokens.to_string())
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn expands_with_default_and_explicit_order() {
        let item = quote!(
            async fn warm_up(ctx: Ctx) -> anyhow::Result<()> {}
        );
        let out = run(HookStage::AfterStartup, quote!(), item.clone()).expect("expands");
        assert!(out.contains("HookStage :: AfterStartup"), "{out}");
        assert!(out.contains("order : 0i32"), "{out}");
        assert!(
            out.contains(
                "hook : || :: faststream_core :: __private :: hook1 :: < Ctx , anyhow :: Result < () > , _ , _ > (warm_up)"
            ),
            "{out}"
        );
        let out = run(HookStage::OnShutdown, quote!(order = -2147483648), item).expect("expands");
        assert!(out.contains("HookStage :: OnShutdown"), "{out}");
        assert!(out.contains("order : - 2147483648i32"), "{out}");
    }

    #[test]
    fn order_errors() {
        let item = quote!(
            async fn f() {}
        );
        let err = |args| run(HookStage::OnStartup, args, item.clone()).unwrap_err();
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
            HookStage::AfterShutdown,
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
