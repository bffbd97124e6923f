//! Code generation for NATS subjects: the registrations of subject subscribers, publishers and
//! routers, which the runtime collects at start-up.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::docs::{doc_closure, Role};
use crate::check::{
    DocOptions, Publisher, PullSub, Router, Stream, SubjectSubscriber, Subscription, Typed,
};
use crate::parse::HandlerFn;

/// A `SubjectRegistration` of `handler`.
pub(crate) fn subject_subscriber(
    subscriber: &SubjectSubscriber,
    handler: &HandlerFn,
    docs: &DocOptions,
) -> TokenStream {
    let SubjectSubscriber {
        subject,
        subscription,
    } = subscriber;
    let subscription = subscription_closure(subscription);
    let boxed = super::constructor(&handler.sig, "handler");
    let doc = doc_closure(handler, docs, Role::Subscriber);
    super::registration(
        handler,
        quote!(SubjectRegistration),
        quote! {
            subject: #subject,
            subscription: #subscription,
            handler: || #boxed,
            doc: #doc,
        },
    )
}

/// A `PublisherRegistration` for `handler`, keyed by its path (the subscriber registered under
/// the same function publishes what it returns), and the check that `output`, the written
/// return type, is something to publish. The check carries the span of `output`, so `()` is
/// reported there with the runtime's explanation.
pub(crate) fn publisher(
    publisher: &Publisher,
    handler: &HandlerFn,
    output: &syn::Type,
    docs: &DocOptions,
) -> TokenStream {
    let Publisher {
        subject,
        stream,
        base,
    } = publisher;
    let path = super::path_of(handler);
    let stream = stream.as_ref().map(stream_call);
    let mut bindings = TokenStream::new();
    let base = match base {
        Some(typed) => bind(&mut bindings, "publisher", "Publisher", typed),
        None => quote!(::faststream_core::Publisher::new()),
    };
    let doc = doc_closure(handler, docs, Role::Publisher);
    let registration = super::submit(
        handler,
        quote! {
            ::faststream_core::__private::PublisherRegistration {
                handler: #path,
                subject: #subject,
                publisher: || -> ::faststream_core::Publisher {
                    #bindings
                    #base #stream
                },
                doc: #doc,
                file: ::core::file!(),
                line: ::core::line!(),
            }
        },
    );
    let publishes = quote_spanned! {output.span()=>
        ::faststream_core::__private::publishes::<#output>();
    };
    // Never called: the bound is checked where the body is type-checked.
    let check = super::with_cfgs(
        handler,
        quote! {
            #[allow(dead_code)]
            fn __check() {
                #publishes
            }
        },
    );
    quote!(#registration #check)
}

/// The `RouterRegistration` of `router!(prefix = ..)`, for the module it is written in.
pub(crate) fn router(router: &Router) -> TokenStream {
    let prefix = &router.prefix;
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            ::faststream_core::__private::inventory::submit! {
                ::faststream_core::__private::RouterRegistration {
                    module: ::core::module_path!(),
                    prefix: #prefix,
                    file: ::core::file!(),
                    line: ::core::line!(),
                }
            }
        };
    }
}

/// The `|| -> Subscription { .. }` closure that builds the settings: `Subscription::new()` (or
/// the `subscription = ..` expression) with one call per option written, in a fixed order. The expressions of `pull_sub`,
/// `deliver_policy` and `ack_policy` are first bound to variables of their types (see [`bind`]).
fn subscription_closure(subscription: &Subscription) -> TokenStream {
    let Subscription {
        queue,
        stream,
        durable,
        pull_sub,
        deliver_policy,
        ack_policy,
        max_workers,
        ordered_by,
        no_reply,
        base,
    } = subscription;
    let mut bindings = TokenStream::new();
    let mut calls = TokenStream::new();
    if let Some(queue) = queue {
        calls.extend(quote!(.queue(#queue)));
    }
    if let Some(stream) = stream {
        calls.extend(stream_call(stream));
    }
    if let Some(durable) = durable {
        calls.extend(quote!(.durable(#durable)));
    }
    if let Some(pull_sub) = pull_sub {
        let pull_sub = match pull_sub {
            PullSub::Batch(batch) => quote!(::faststream_core::PullSub::new(#batch)),
            PullSub::Default => quote!(::faststream_core::PullSub::default()),
            PullSub::Expression(typed) => bind(&mut bindings, "pull_sub", "PullSub", typed),
        };
        calls.extend(quote!(.pull_sub(#pull_sub)));
    }
    if let Some(typed) = deliver_policy {
        let policy = bind(&mut bindings, "deliver_policy", "DeliverPolicy", typed);
        calls.extend(quote!(.deliver_policy(#policy)));
    }
    if let Some(typed) = ack_policy {
        let policy = bind(&mut bindings, "ack_policy", "AckPolicy", typed);
        calls.extend(quote!(.ack_policy(#policy)));
    }
    if let Some(workers) = max_workers {
        calls.extend(quote!(.max_workers(#workers)));
    }
    if let Some(ordered_by) = ordered_by {
        calls.extend(quote!(.ordered_by(#ordered_by)));
    }
    if let Some(no_reply) = no_reply {
        calls.extend(quote!(.no_reply(#no_reply)));
    }
    let base = match base {
        Some(typed) => bind(&mut bindings, "subscription", "Subscription", typed),
        None => quote!(::faststream_core::Subscription::new()),
    };
    quote! {
        || -> ::faststream_core::Subscription {
            #bindings
            #base #calls
        }
    }
}

/// `.stream(..)` with the checked name, or with the expression as written: the method takes
/// `impl Into<JStream>`, so rustc reports a wrong type at the expression, and (the call
/// carrying its span) "required by a bound introduced by this call" at the option's name.
fn stream_call(stream: &Stream) -> TokenStream {
    match stream {
        Stream::Name(name) => quote!(.stream(#name)),
        Stream::Expression(Typed { expr, name_span }) => {
            let method = Ident::new("stream", *name_span);
            quote_spanned!(*name_span=> .#method(#expr))
        }
    }
}

/// Adds `let <name>: ::faststream_core::<ty> = <expr>;` to `bindings` and gives the variable.
///
/// The type carries the span of the option's name, so a value of another type is reported at
/// the option ("expected due to this"), not as a bad method argument under the whole attribute.
/// The variable is hygienic: it cannot capture or shadow a name in the user's expressions.
fn bind(bindings: &mut TokenStream, name: &str, ty: &str, typed: &Typed) -> TokenStream {
    let variable = Ident::new(name, Span::mixed_site());
    let ty = Ident::new(ty, typed.name_span);
    let ty = quote_spanned!(typed.name_span=> ::faststream_core::#ty);
    let expr = &typed.expr;
    bindings.extend(quote!(let #variable: #ty = #expr;));
    quote!(#variable)
}
