//! `#[publisher]`: its registration, the check of the return type, and its errors.

use super::*;
use crate::check::PUBLISH_SUBJECT_NOT_LITERAL;
use quote::quote;

fn run(args: TokenStream, item: TokenStream) -> Result<String, Vec<String>> {
    generate(args, item)
        .map(|tokens| tokens.to_string())
        .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}

fn bill() -> TokenStream {
    quote!(
        async fn bill(order: Json<Order>) -> anyhow::Result<Json<Bill>> {}
    )
}

#[test]
fn registers_the_publisher_and_checks_the_return_type() {
    let out = run(quote!("billing.done"), bill()).expect("expands");
    let expected = quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            ::faststream_core::__private::inventory::submit! {
                ::faststream_core::__private::PublisherRegistration {
                    handler: ::core::concat!(::core::module_path!(), "::", "bill"),
                    subject: "billing.done",
                    publisher: || -> ::faststream_core::Publisher {
                        ::faststream_core::Publisher::new()
                    },
                    doc: || -> ::faststream_core::__private::describe::HandlerDoc {
                        #[allow(unused_imports)]
                        use ::faststream_core::__private::describe::{
                            ViaNothing as _, ViaTyped as _, ViaUntyped as _
                        };
                        ::faststream_core::__private::describe::HandlerDoc {
                            title: ::core::option::Option::None,
                            description: ::core::option::Option::None,
                            docs: "",
                            include_in_schema: true,
                            payload: ::core::option::Option::None,
                            // What it sends: the return value, asked about by autoref.
                            output: (&&&::faststream_core::__private::describe::ReturnProbe::<
                                anyhow::Result<Json<Bill> >
                            >::new()).body(),
                        }
                    },
                    file: ::core::file!(),
                    line: ::core::line!(),
                }
            }
        };
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            #[allow(dead_code)]
            fn __check() {
                // Separate `>` tokens, as parsed from the function.
                ::faststream_core::__private::publishes::<anyhow::Result<Json<Bill> > >();
            }
        };
    };
    assert_eq!(out, expected.to_string());
}

#[test]
fn applies_the_stream() {
    let out = run(quote!("billing.done", stream = "BILLING"), bill()).expect("expands");
    assert!(
        out.contains("{ :: faststream_core :: Publisher :: new () . stream (\"BILLING\") }"),
        "{out}"
    );
    let out = run(quote!("billing.done", stream = JStream::new(S),), bill()).expect("expands");
    assert!(out.contains(". stream (JStream :: new (S)) }"), "{out}");
    let errors = run(quote!("billing.done", stream = "bill/ing"), bill()).unwrap_err();
    assert!(
        errors[0].starts_with("invalid stream name `bill/ing`: character `/` is not allowed"),
        "{errors:?}"
    );
}

#[test]
fn a_unit_return_type_is_left_to_the_check() {
    // `()` and `Result<(), E>` are written types: the runtime's bound refuses them, at them.
    let out = run(
        quote!("billing.done"),
        quote!(
            async fn bill() -> () {}
        ),
    )
    .expect("expands");
    assert!(
        out.contains(":: faststream_core :: __private :: publishes :: < () > ()"),
        "{out}"
    );
}

#[test]
fn a_function_that_returns_nothing_is_refused() {
    let errors = run(
        quote!("billing.done"),
        quote!(
            async fn r#bill(order: String) {}
        ),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "`#[publisher]` publishes what `bill` returns, but it returns nothing: return the \
          value to publish, for example `-> anyhow::Result<Json<Bill>>`"
        ]
    );
}

#[test]
fn checks_the_subject() {
    let error = |args: TokenStream| run(args, bill()).unwrap_err();
    assert_eq!(
        error(quote!("billing.*")),
        [
            "invalid subject `billing.*`: `*` in token 2 is a wildcard; a message is published to \
          one concrete subject (wildcards are for subscribing)"
        ]
    );
    assert_eq!(
        error(quote!("bills.{id}")),
        [
            "invalid subject `bills.{id}`: `{id}` in token 2 is a placeholder; a message is \
          published to one concrete subject (placeholders are for subscribing)"
        ]
    );
    assert!(error(quote!("billing."))[0].contains("token 2 is empty"));
    assert_eq!(error(quote!(SUBJECT)), [PUBLISH_SUBJECT_NOT_LITERAL]);
    assert_eq!(error(quote!(stream = "S")), [MISSING_SUBJECT]);
}

#[test]
fn every_error_together_in_order() {
    let errors = run(
        quote!("billing.>", queue = "q", stream = "a.b", stream = "c"),
        quote!(
            fn bill<T>(&self) {}
        ),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "invalid subject `billing.>`: `>` in token 2 is a wildcard; a message is published \
             to one concrete subject (wildcards are for subscribing)",
            "unknown option `queue`; expected one of: `stream`, `publisher`, `title`, \
             `description`, `include_in_schema`, `schema`",
            "`stream` is set more than once",
            "invalid stream name `a.b`: character `.` is not allowed (a stream name may not \
             contain whitespace, `.`, `*`, `>`, `/`, `\\` or non-printable characters)",
            "`#[publisher]` handlers must be `async fn`",
            "`#[publisher]` handlers cannot have generic parameters",
            "`#[publisher]` cannot be used on a method with `self`; write a free `async fn`",
            "`#[publisher]` publishes what `bill` returns, but it returns nothing: return the \
             value to publish, for example `-> anyhow::Result<Json<Bill>>`",
        ]
    );
}

#[test]
fn stacks_by_re_emitting_the_item_unchanged() {
    // Whatever the sibling attributes are called, they are left as written for rustc to expand.
    let item = quote!(
        #[emit("audit.bills")]
        #[cfg(feature = "billing")]
        #[subscriber("orders.created")]
        async fn bill(order: String) -> String {}
    );
    let out = expand(quote!("billing.done"), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    // One registration and one check, each under the function's `#[cfg]`.
    assert_eq!(
        out.matches("# [cfg (feature = \"billing\")] # [doc (hidden)]")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(out.matches("PublisherRegistration").count(), 1, "{out}");
    assert!(!out.contains("SubjectRegistration"), "{out}");
}

#[test]
fn keeps_the_item_on_error() {
    let item = quote!(
        async fn f() {}
    );
    let out = expand(quote!("a.*"), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert!(out.contains("compile_error"), "{out}");
}

#[test]
fn a_publisher_expression_is_the_base_of_stream() {
    let out = generate(
        quote!(
            "billing.done",
            publisher = Publisher::new().retries(8),
            stream = "BILLING"
        ),
        quote!(
            async fn bill() -> String {}
        ),
    )
    .expect("expands")
    .to_string();
    assert!(
        out.contains(
            "let publisher : :: faststream_core :: Publisher = Publisher :: new () . retries (8) ; publisher . stream (\"BILLING\")"
        ),
        "{out}"
    );
}
