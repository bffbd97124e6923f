//! Code generation from the validated models: the original item, unchanged, followed by its
//! registration (or by the errors).
//!
//! Everything reaching this module has been checked, so nothing here can fail; the generated code
//! only names `::faststream_core::__private`, which keeps the runtime's internals in one place.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, LitInt, LitStr, ReturnType, Signature};

use crate::check::{DocOptions, Hook, KvWatch, KvWatchSource, ObjSubscriber, Subscriber};
use crate::parse::HandlerFn;

mod docs;
mod nats;

use docs::{doc_closure, Role};

pub(crate) use nats::{publisher, router, subject_subscriber};

/// The macro's output: the original item unchanged, followed by the generated tokens or by the
/// errors. Keeping the item on error lets the rest of the crate (and rust-analyzer) still see it.
pub(crate) fn output(
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

/// A `SubscriberRegistration` of `handler`.
pub(crate) fn subscriber(
    subscriber: &Subscriber,
    handler: &HandlerFn,
    docs: &DocOptions,
) -> TokenStream {
    let Subscriber {
        key,
        kv_watch,
        max_workers,
        group,
    } = subscriber;
    let kv_watch = kv_watch_closure(kv_watch, max_workers.as_ref(), group.as_ref());
    let boxed = constructor(&handler.sig, "handler");
    let doc = doc_closure(handler, docs, Role::Subscriber);
    registration(
        handler,
        quote!(SubscriberRegistration),
        quote! {
            key: #key,
            kv_watch: #kv_watch,
            handler: || #boxed,
            doc: #doc,
        },
    )
}

/// A `SubscriberRegistration` of `handler` watching an object store: the Key-Value watch of the
/// store's metadata that `__private::obj_watch` makes from the `ObjWatch` settings, with
/// `max_workers` applied on top of them.
pub(crate) fn obj_subscriber(
    subscriber: &ObjSubscriber,
    handler: &HandlerFn,
    docs: &DocOptions,
) -> TokenStream {
    let ObjSubscriber {
        bucket,
        obj_watch,
        max_workers,
    } = subscriber;
    let ty = quote_spanned!(obj_watch.name_span=> ::faststream_core::ObjWatch);
    let workers = max_workers
        .as_ref()
        .map(|workers| quote!(.max_workers(#workers)));
    let settings = match &obj_watch.settings {
        None => quote!(::faststream_core::ObjWatch::new()),
        // Bound to a typed variable: a value of another type is a mismatch at `obj_watch`.
        Some(expr) => {
            let watch = Ident::new("watch", Span::mixed_site());
            quote!({ let #watch: #ty = #expr; #watch })
        }
    };
    let boxed = constructor(&handler.sig, "handler");
    let doc = doc_closure(handler, docs, Role::Subscriber);
    registration(
        handler,
        quote!(SubscriberRegistration),
        quote! {
            key: ">",
            kv_watch: || -> ::faststream_core::KvWatch {
                ::faststream_core::__private::obj_watch(#bucket, #settings #workers)
            },
            handler: || #boxed,
            doc: #doc,
        },
    )
}

/// A `HookRegistration` of `handler`.
pub(crate) fn hook(hook: &Hook, handler: &HandlerFn) -> TokenStream {
    let Hook { stage, order } = hook;
    let variant = Ident::new(stage.variant_name(), Span::call_site());
    let boxed = constructor(&handler.sig, "hook");
    registration(
        handler,
        quote!(HookRegistration),
        quote! {
            stage: ::faststream_core::__private::HookStage::#variant,
            order: #order,
            hook: || #boxed,
        },
    )
}

/// The `|| -> KvWatch { .. }` closure that builds the watch settings, with `max_workers` and
/// `group` from the attribute applied on top of them (so they replace any set in a `kv_watch`
/// expression). The type carries the span of the `kv_watch` name, so a value of the wrong type
/// is reported at `kv_watch` ("expected `KvWatch` because of return type", or "expected due to
/// this" when options are applied), not under the whole attribute.
fn kv_watch_closure(
    kv_watch: &KvWatch,
    max_workers: Option<&LitInt>,
    group: Option<&LitStr>,
) -> TokenStream {
    let ty = quote_spanned!(kv_watch.name_span=> ::faststream_core::KvWatch);
    let mut options = TokenStream::new();
    if let Some(workers) = max_workers {
        options.extend(quote!(.max_workers(#workers)));
    }
    if let Some(group) = group {
        options.extend(quote!(.group(#group)));
    }
    let body = match &kv_watch.source {
        KvWatchSource::Bucket(bucket) => quote!(::faststream_core::KvWatch::new(#bucket) #options),
        KvWatchSource::Expression(expr) if options.is_empty() => quote!(#expr),
        // Bound to a typed variable first: a value of another type is then a mismatch at
        // `kv_watch`, rather than "no method named `max_workers`" under the whole attribute.
        KvWatchSource::Expression(expr) => {
            let watch = Ident::new("watch", Span::mixed_site());
            quote!(let #watch: #ty = #expr; #watch #options)
        }
    };
    quote!(|| -> #ty { #body })
}

/// `::faststream_core::__private::<prefix>N::<A1, .., AN, Out, _, _>(ident)`: boxes the function,
/// with each argument type and the return type (`()` when there is none) spelled out as written.
///
/// Each type keeps its span and is a generic parameter of its own with its own bound, so an
/// unsupported type is reported by rustc once, at the argument or return type the user wrote,
/// and not a second time as "not a handler" at the function.
fn constructor(sig: &Signature, prefix: &str) -> TokenStream {
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

/// Registers `handler` with `inventory`: a `::faststream_core::__private::#registration` value
/// with its `name`, `file` and `line` plus `fields`, in an anonymous `const` under the
/// function's own `#[cfg]`s (a handler compiled out takes its registration with it).
fn registration(
    handler: &HandlerFn,
    registration: TokenStream,
    fields: TokenStream,
) -> TokenStream {
    let name = path_of(handler);
    submit(
        handler,
        quote! {
            ::faststream_core::__private::#registration {
                name: #name,
                #fields
                file: ::core::file!(),
                line: ::core::line!(),
            }
        },
    )
}

/// `module::path::name` of `handler` as an expression: registered relative to its module, under
/// the name as called (`r#type` is `type`).
fn path_of(handler: &HandlerFn) -> TokenStream {
    let name = LitStr::new(&handler.sig.ident.unraw().to_string(), Span::call_site());
    quote!(::core::concat!(::core::module_path!(), "::", #name))
}

/// `tokens` under the `#[cfg]`s of `handler`, in an anonymous `const`: what is generated for a
/// function compiled out goes with it, and names nothing that does not exist.
fn with_cfgs(handler: &HandlerFn, tokens: TokenStream) -> TokenStream {
    let cfgs = handler.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            #tokens
        };
    }
}

/// Submits the registration `value` of `handler` to `inventory`, under its `#[cfg]`s.
fn submit(handler: &HandlerFn, value: TokenStream) -> TokenStream {
    with_cfgs(
        handler,
        quote! {
            ::faststream_core::__private::inventory::submit! {
                #value
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(item: TokenStream) -> Signature {
        HandlerFn::parse(item, "x").expect("parses").sig
    }

    #[test]
    fn names_every_type_in_the_constructor() {
        let sig = signature(quote!(
            async fn f(a: A, (b, c): B) {}
        ));
        assert_eq!(
            constructor(&sig, "handler").to_string(),
            ":: faststream_core :: __private :: handler2 :: < A , B , () , _ , _ > (f)"
        );
        let sig = signature(quote!(
            async fn g() -> anyhow::Result<()> {}
        ));
        assert_eq!(
            constructor(&sig, "hook").to_string(),
            ":: faststream_core :: __private :: hook0 :: < anyhow :: Result < () > , _ , _ > (g)"
        );
    }
}
