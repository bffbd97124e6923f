//! Whether a function can be registered: the shape of its signature. The argument and return
//! types are left to rustc, which checks them against the handler traits where they are written.

use syn::visit::Visit;
use syn::{FnArg, ReturnType, TypeImplTrait};

use crate::errors::Errors;
use crate::parse::HandlerFn;

/// The most arguments a handler or hook may take (`handler0` to `handler12` in
/// `faststream_core::__private`).
use faststream_rules::MAX_HANDLER_ARGS as MAX_ARGS;

/// `handler` if it is an `async fn` without `self`, generics, `impl Trait`, `unsafe`, ABI or
/// variadic, with at most [`MAX_ARGS`] arguments. Each problem is reported at its tokens.
pub(super) fn signature(handler: HandlerFn, attr: &str) -> syn::Result<HandlerFn> {
    let sig = &handler.sig;
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            format!("`#[{attr}]` handlers must be `async fn`"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new(
            unsafety.span,
            format!("`#[{attr}]` handlers cannot be `unsafe fn`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            format!("`#[{attr}]` handlers cannot have an `extern` ABI"),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("`#[{attr}]` handlers cannot have generic parameters"),
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            format!("`#[{attr}]` handlers cannot have a `where` clause"),
        ));
    }
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                format!(
                    "`#[{attr}]` cannot be used on a method with `self`; write a free `async fn`"
                ),
            )),
            FnArg::Typed(typed) => {
                for found in impl_traits(&typed.ty) {
                    errors.push(syn::Error::new_spanned(
                        found,
                        format!(
                            "`#[{attr}]` handlers cannot take `impl Trait` arguments \
                             (they make the function generic); name a concrete type"
                        ),
                    ));
                }
            }
        }
    }
    if let Some(extra) = sig.inputs.iter().nth(MAX_ARGS) {
        errors.push(syn::Error::new_spanned(
            extra,
            format!("`#[{attr}]` handlers take at most {MAX_ARGS} arguments"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            format!("`#[{attr}]` handlers cannot be variadic"),
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        for found in impl_traits(ty) {
            errors.push(syn::Error::new_spanned(
                found,
                format!("`#[{attr}]` handlers cannot return `impl Trait`; name the return type"),
            ));
        }
    }
    errors.finish_with(handler)
}

/// Every `impl Trait` inside `ty`, however deeply nested.
fn impl_traits(ty: &syn::Type) -> Vec<&TypeImplTrait> {
    struct Finder<'ast>(Vec<&'ast TypeImplTrait>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type_impl_trait(&mut self, found: &'ast TypeImplTrait) {
            self.0.push(found);
        }
    }
    let mut finder = Finder(Vec::new());
    finder.visit_type(ty);
    finder.0
}

#[cfg(test)]
mod tests {
    use super::super::handler;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn messages(item: TokenStream) -> Vec<String> {
        match handler(item, "subscriber") {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_plain_async_fn() {
        let item = quote! {
            #[cfg(test)]
            /// docs
            pub(crate) async fn f(a: u32, (b, c): (u8, u8), _: &str) -> Result<(), E> { half typed + }
        };
        assert!(messages(item).is_empty());
    }

    #[test]
    fn reports_each_problem() {
        assert_eq!(
            messages(quote!(
                fn f() {}
            )),
            ["`#[subscriber]` handlers must be `async fn`"]
        );
        assert_eq!(
            messages(quote!(
                async fn f(&self, x: u8) {}
            )),
            ["`#[subscriber]` cannot be used on a method with `self`; write a free `async fn`"]
        );
        assert_eq!(
            messages(quote!(
                async fn f<T>(x: T) {}
            )),
            ["`#[subscriber]` handlers cannot have generic parameters"]
        );
        assert_eq!(
            messages(quote!(
                async fn f(x: Vec<impl Send>) -> impl Send {}
            )),
            [
                "`#[subscriber]` handlers cannot take `impl Trait` arguments (they make the \
                 function generic); name a concrete type",
                "`#[subscriber]` handlers cannot return `impl Trait`; name the return type",
            ]
        );
        assert_eq!(
            messages(quote!(
                unsafe fn f() {}
            ))
            .len(),
            2
        );
    }

    #[test]
    fn limits_the_number_of_arguments() {
        let args = (0..13).map(|i| quote::format_ident!("a{i}"));
        let item = quote!(async fn f(#(#args: u8),*) {});
        assert_eq!(
            messages(item),
            ["`#[subscriber]` handlers take at most 12 arguments"]
        );
    }
}
