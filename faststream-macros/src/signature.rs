//! The function under an attribute: parsed with its body kept as raw tokens, checked, and
//! re-emitted unchanged next to the generated registration.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::ParseStream;
use syn::visit::Visit;
use syn::{Attribute, FnArg, Ident, ReturnType, Signature, Token, TypeImplTrait, Visibility};

use crate::options::Errors;

/// A function item. Its body is kept as raw tokens: it is never looked at, and half-typed code in
/// it must not stop the attribute from expanding (rust-analyzer expands on every keystroke).
pub(crate) struct HandlerFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) sig: Signature,
}

impl HandlerFn {
    /// Parses `item`; `attr` (e.g. `subscriber`) names the attribute in messages.
    pub(crate) fn parse(item: TokenStream, attr: &str) -> syn::Result<Self> {
        syn::parse::Parser::parse2(|input: ParseStream| Self::parse_with(input, attr), item)
    }

    fn parse_with(input: ParseStream, attr: &str) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let is_fn = input.peek(Token![fn])
            || input.peek(Token![async])
            || input.peek(Token![const])
            || input.peek(Token![unsafe])
            || input.peek(Token![extern]);
        if !is_fn {
            return Err(input.error(format!("`#[{attr}]` can only be used on an `async fn`")));
        }
        let sig: Signature = input.parse()?;
        let body;
        syn::braced!(body in input);
        body.parse::<TokenStream>()?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function"));
        }
        Ok(Self { attrs, sig })
    }

    /// The function's `#[cfg(..)]` attributes, to put on the registration as well: a handler
    /// compiled out must take its registration with it.
    pub(crate) fn cfg_attrs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }
}

/// Checks that `sig` can be registered: an `async fn` without `self`, generics, `impl Trait`,
/// `unsafe`, ABI or variadic. Each problem is reported at its tokens.
pub(crate) fn check(sig: &Signature, attr: &str, errors: &mut Errors) {
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

/// The most arguments a handler or hook may take (`handler0` to `handler12` in
/// `faststream_core::__private`).
use faststream_rules::MAX_HANDLER_ARGS as MAX_ARGS;

/// `::faststream_core::__private::<prefix>N::<A1, .., AN, Out, _, _>(ident)`: boxes the function,
/// with each argument type and the return type (`()` when there is none) spelled out as written.
///
/// Each type keeps its span and is a generic parameter of its own with its own bound, so an
/// unsupported type is reported by rustc once, at the argument or return type the user wrote,
/// and not a second time as "not a handler" at the function.
pub(crate) fn constructor(sig: &Signature, prefix: &str) -> TokenStream {
    let types: Vec<&syn::Type> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let output = match &sig.output {
        ReturnType::Type(_, ty) => quote!(#ty),
        ReturnType::Default => quote_spanned!(sig.ident.span()=> ()),
    };
    // The call carries the function name's span: a bound on the function itself (a future that
    // is not `Send`) is reported at the name rather than under the whole attribute.
    let ident = &sig.ident;
    let function = Ident::new(&format!("{prefix}{}", types.len()), ident.span());
    quote_spanned! {ident.span()=>
        ::faststream_core::__private::#function::<#(#types,)* #output, _, _>(#ident)
    }
}

/// The macro's output: the original item unchanged, followed by the generated tokens or by the
/// errors. Keeping the item on error lets the rest of the crate (and rust-analyzer) still see it.
pub(crate) fn emit(
    attr: &str,
    item: TokenStream,
    generated: syn::Result<TokenStream>,
) -> TokenStream {
    match generated {
        Ok(generated) => {
            let output = quote! { #item #generated };
            if debug_enabled() {
                eprintln!("#[{attr}] expansion:\n{output}\n");
            }
            output
        }
        Err(error) => {
            let error = error.to_compile_error();
            quote! { #item #error }
        }
    }
}

/// `FASTSTREAM_MACROS_DEBUG=1` prints every expansion to stderr (like `AXUM_MACROS_DEBUG`).
fn debug_enabled() -> bool {
    std::env::var_os("FASTSTREAM_MACROS_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The name a handler is registered under, relative to its module: `r#type` is `type`.
/// Registers `handler` with `inventory`: a `::faststream_core::__private::#registration` value
/// with its `name`, `file` and `line` plus `fields`, in an anonymous `const` under the
/// function's own `#[cfg]`s.
pub(crate) fn submit(
    handler: &HandlerFn,
    registration: TokenStream,
    fields: TokenStream,
) -> TokenStream {
    let name = fn_name(&handler.sig);
    let cfgs = handler.cfg_attrs();
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            ::faststream_core::__private::inventory::submit! {
                ::faststream_core::__private::#registration {
                    name: ::core::concat!(::core::module_path!(), "::", #name),
                    #fields
                    file: ::core::file!(),
                    line: ::core::line!(),
                }
            }
        };
    }
}

pub(crate) fn fn_name(sig: &Signature) -> syn::LitStr {
    use syn::ext::IdentExt;
    syn::LitStr::new(&sig.ident.unraw().to_string(), Span::call_site())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn messages(item: TokenStream) -> Vec<String> {
        let handler = HandlerFn::parse(item, "subscriber").expect("parses");
        let mut errors = Errors::default();
        check(&handler.sig, "subscriber", &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
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
    fn rejects_non_functions() {
        let err = HandlerFn::parse(
            quote!(
                pub struct S;
            ),
            "on_startup",
        )
        .err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("`#[on_startup]` can only be used on an `async fn`")
        );
    }

    #[test]
    fn names_every_type_in_the_constructor() {
        let handler = HandlerFn::parse(
            quote!(
                async fn f(a: A, (b, c): B) {}
            ),
            "x",
        )
        .expect("parses");
        assert_eq!(
            constructor(&handler.sig, "handler").to_string(),
            ":: faststream_core :: __private :: handler2 :: < A , B , () , _ , _ > (f)"
        );
        let handler = HandlerFn::parse(
            quote!(
                async fn g() -> anyhow::Result<()> {}
            ),
            "x",
        )
        .expect("parses");
        assert_eq!(
            constructor(&handler.sig, "hook").to_string(),
            ":: faststream_core :: __private :: hook0 :: < anyhow :: Result < () > , _ , _ > (g)"
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
