//! The `doc` field of a registration: what the AsyncAPI document says of a handler, built
//! when the document is, from the attribute's doc options, the doc comment and the types as
//! written (asked by autoref dispatch; see `faststream_core::handler::describe`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, LitStr, ReturnType};

use crate::check::{doc_comment, DocOptions};
use crate::parse::HandlerFn;

/// What the handler is documented as: a subscriber (the payload it takes and what it returns),
/// or a publisher (what it sends: the return value).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Subscriber,
    Publisher,
}

/// `|| -> HandlerDoc { .. }`.
pub(crate) fn doc_closure(handler: &HandlerFn, options: &DocOptions, role: Role) -> TokenStream {
    let describe = quote!(::faststream_core::__private::describe);
    let optional = |lit: &Option<LitStr>| match lit {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let title = optional(&options.title);
    let description = optional(&options.description);
    let include = options
        .include_in_schema
        .as_ref()
        .map_or_else(|| quote!(true), |flag| quote!(#flag));
    let docs = doc_comment(handler);
    let schema_override = options.schema.as_ref().map(|ty| {
        quote_spanned!(ty.span()=> ::core::option::Option::Some(#describe::BodyDoc::json_of::<#ty>()))
    });
    let arguments: Vec<TokenStream> = handler
        .sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        })
        .map(|ty| quote!((&&&#describe::ArgProbe::<#ty>::new()).body()))
        .collect();
    let output = match &handler.sig.output {
        ReturnType::Type(_, ty) => quote!((&&&#describe::ReturnProbe::<#ty>::new()).body()),
        ReturnType::Default => quote!(::core::option::Option::None),
    };
    let (payload, output) = match role {
        Role::Subscriber => (
            schema_override.unwrap_or_else(
                || quote!(#describe::HandlerDoc::first_payload(&[#(#arguments),*])),
            ),
            output,
        ),
        Role::Publisher => (
            quote!(::core::option::Option::None),
            schema_override.unwrap_or(output),
        ),
    };
    quote! {
        || -> #describe::HandlerDoc {
            #[allow(unused_imports)]
            use #describe::{ViaNothing as _, ViaTyped as _, ViaUntyped as _};
            #describe::HandlerDoc {
                title: #title,
                description: #description,
                docs: #docs,
                include_in_schema: #include,
                payload: #payload,
                output: #output,
            }
        }
    }
}
