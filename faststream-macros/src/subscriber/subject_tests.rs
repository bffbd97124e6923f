//! The subject form: `#[subscriber("orders.{id}", queue = .., stream = .., ..)]`, and the
//! options that do not go together.

use super::combinations::GROUP_WITHOUT_KV_WATCH;
use super::*;
use crate::check::{
    DURABLE_NOT_LITERAL, NO_REPLY_NOT_BOOL, ORDERED_BY_NOT_LITERAL, PULL_SUB_FALSE,
    PULL_SUB_INVALID, QUEUE_NOT_LITERAL, SUBJECT_NOT_LITERAL,
};
use quote::quote;

/// The `subscription` closure of an expansion, as text.
fn subscription(args: TokenStream) -> String {
    let out = run(args).expect("expands");
    let start = out.find("subscription : ").expect("has a subscription");
    let end = out.find(", handler :").expect("has a handler");
    out[start + "subscription : ".len()..end].trim().to_owned()
}

#[test]
fn registers_a_subject_subscriber() {
    let out = run(quote!("orders.>")).expect("expands");
    let expected = quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, clippy::all)]
        const _: () = {
            ::faststream_core::__private::inventory::submit! {
                ::faststream_core::__private::SubjectRegistration {
                    name: ::core::concat!(::core::module_path!(), "::", "f"),
                    subject: "orders.>",
                    subscription: || -> ::faststream_core::Subscription {
                        ::faststream_core::Subscription::new()
                    },
                    handler: || ::faststream_core::__private::handler1::<u32, Result<(), E>, _, _>(f),
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
                            payload: ::faststream_core::__private::describe::HandlerDoc::first_payload(
                                &[(&&&::faststream_core::__private::describe::ArgProbe::<u32>::new()).body()]
                            ),
                            output: (&&&::faststream_core::__private::describe::ReturnProbe::<
                                Result<(), E>
                            >::new()).body(),
                        }
                    },
                    file: ::core::file!(),
                    line: ::core::line!(),
                }
            }
        };
    };
    assert_eq!(out, expected.to_string());
    // Characters no key may use are fine in a subject, and the trailing comma too.
    assert!(run(quote!("$JS.orders:eu.{id}",)).is_ok());
}

#[test]
fn applies_each_literal_option_in_a_fixed_order() {
    let written = subscription(quote!(
        "orders.{id}.>",
        no_reply = true,
        ordered_by = "id",
        max_workers = 8,
        pull_sub = 16,
        durable = "billing",
        stream = "ORDERS",
        queue = "workers",
    ));
    assert_eq!(
        written,
        quote!(|| -> ::faststream_core::Subscription {
            ::faststream_core::Subscription::new()
                .queue("workers")
                .stream("ORDERS")
                .durable("billing")
                .pull_sub(::faststream_core::PullSub::new(16usize))
                .max_workers(8usize)
                .ordered_by("id")
                .no_reply(true)
        })
        .to_string()
    );
    assert!(subscription(quote!("a", stream = "S", pull_sub = true))
        .contains(". pull_sub (:: faststream_core :: PullSub :: default ())"));
    assert!(subscription(quote!("a", no_reply = false)).contains(". no_reply (false)"));
    assert!(
        subscription(quote!("a", ordered_by = "subject")).contains(". ordered_by (\"subject\")")
    );
    let most = "x".repeat(faststream_rules::MAX_STREAM_NAME);
    assert!(run(quote!("a", stream = #most, durable = #most)).is_ok());
    assert!(run(quote!("a", stream = "S", pull_sub = 10_000)).is_ok());
}

#[test]
fn binds_expressions_to_their_types_first() {
    let written = subscription(quote!(
        "orders.*",
        ack_policy = AckPolicy::NackOnError,
        deliver_policy = DeliverPolicy::ByStartSequence(START),
        pull_sub = PullSub::new(BATCH),
        stream = JStream::new(STREAM),
    ));
    assert_eq!(
        written,
        quote!(|| -> ::faststream_core::Subscription {
            let pull_sub: ::faststream_core::PullSub = PullSub::new(BATCH);
            let deliver_policy: ::faststream_core::DeliverPolicy =
                DeliverPolicy::ByStartSequence(START);
            let ack_policy: ::faststream_core::AckPolicy = AckPolicy::NackOnError;
            ::faststream_core::Subscription::new()
                .stream(JStream::new(STREAM))
                .pull_sub(pull_sub)
                .deliver_policy(deliver_policy)
                .ack_policy(ack_policy)
        })
        .to_string()
    );
    // A constant is an expression too: only literals are checked now.
    assert!(subscription(quote!("a", stream = ORDERS)).contains(". stream (ORDERS)"));
}

#[test]
fn checks_the_subject() {
    assert_eq!(
        run(quote!("orders..created")).unwrap_err(),
        [
            "invalid subject pattern `orders..created`: token 2 is empty (no leading or trailing \
          `.`, no `..`)"
        ]
    );
    assert!(run(quote!("orders.>.x")).unwrap_err()[0]
        .starts_with("invalid subject pattern `orders.>.x`: `>` in token 2 must be the last"));
    assert!(run(quote!("orders created")).unwrap_err()[0].contains("U+0020 (whitespace)"));
    assert_eq!(run(quote!(SUBJECT)).unwrap_err(), [SUBJECT_NOT_LITERAL]);
    assert_eq!(run(quote!(stream = "S")).unwrap_err(), [MISSING_SUBJECT]);
}

#[test]
fn checks_each_literal_value() {
    let error = |args: TokenStream| run(args).unwrap_err();
    assert_eq!(
        error(quote!("a", queue = "two words")),
        [
            "invalid queue group name `two words`: character U+0020 (whitespace) is not allowed \
          (a queue group name may not contain whitespace or non-printable characters)"
        ]
    );
    assert_eq!(error(quote!("a", queue = WORKERS)), [QUEUE_NOT_LITERAL]);
    assert_eq!(
        error(quote!("a", stream = "orders.eu")),
        [
            "invalid stream name `orders.eu`: character `.` is not allowed (a stream name may not \
          contain whitespace, `.`, `*`, `>`, `/`, `\\` or non-printable characters)"
        ]
    );
    let long = "x".repeat(faststream_rules::MAX_STREAM_NAME + 1);
    assert!(error(quote!("a", stream = #long))[0].ends_with("256 bytes, at most 255 are allowed"));
    assert_eq!(
        error(quote!("a", stream = "S", durable = "")),
        ["invalid durable name ``: a durable name may not be empty"]
    );
    assert_eq!(
        error(quote!("a", stream = "S", durable = BILLING)),
        [DURABLE_NOT_LITERAL]
    );
    assert_eq!(error(quote!("a", no_reply = 1)), [NO_REPLY_NOT_BOOL]);
    assert_eq!(error(quote!("a", no_reply = "true")), [NO_REPLY_NOT_BOOL]);
    assert_eq!(error(quote!("a", no_reply = FLAG)), [NO_REPLY_NOT_BOOL]);
    assert_eq!(
        error(quote!("a", no_reply)),
        ["`no_reply` needs a value: write `no_reply = true`"]
    );
}

#[test]
fn checks_pull_sub() {
    for bad in [
        quote!(0),
        quote!(10_001),
        quote!(-1),
        quote!(16u32),
        quote!(1.5),
        quote!("16"),
    ] {
        assert_eq!(
            run(quote!("a", stream = "S", pull_sub = #bad)).unwrap_err(),
            [PULL_SUB_INVALID],
            "{bad}"
        );
    }
    assert_eq!(
        run(quote!("a", stream = "S", pull_sub = false)).unwrap_err(),
        [PULL_SUB_FALSE]
    );
}

#[test]
fn ordered_by_names_a_placeholder_of_the_subject() {
    assert!(run(quote!("orders.{id}.{line}", ordered_by = "line")).is_ok());
    assert_eq!(
        run(quote!("orders.{id}.{line}", ordered_by = "idx")).unwrap_err(),
        [
            "`ordered_by = \"idx\"` names no placeholder of `orders.{id}.{line}`: write one of \
          `\"id\"`, `\"line\"`, or `\"subject\"` for the whole subject"
        ]
    );
    assert_eq!(
        run(quote!("orders.created", ordered_by = "id")).unwrap_err(),
        ["`ordered_by = \"id\"` names no placeholder of `orders.created`, which has none: write \
          `ordered_by = \"subject\"` to order by the whole subject, or make a token a \
          `{placeholder}` and name it"]
    );
    assert_eq!(
        run(quote!("mail.{subject}", ordered_by = "subject")).unwrap_err(),
        [
            "`ordered_by = \"subject\"` is ambiguous: `mail.{subject}` has a `{subject}` \
          placeholder, and `\"subject\"` also means the whole subject; rename the placeholder"
        ]
    );
    assert!(run(quote!("mail.{subject}", ordered_by = "subject_x")).is_err());
    assert_eq!(
        run(quote!("orders.{id}", ordered_by = ID)).unwrap_err(),
        [ORDERED_BY_NOT_LITERAL]
    );
    // With an invalid subject, only the subject's error: its placeholders are unknown.
    assert_eq!(
        run(quote!("orders..{id}", ordered_by = "nope"))
            .unwrap_err()
            .len(),
        1
    );
}

#[test]
fn subject_options_cannot_be_used_with_kv_watch() {
    let errors = run(quote!(
        "orders.{id}",
        kv_watch = "shop",
        no_reply = true,
        ordered_by = "id",
        ack_policy = AckPolicy::Ack,
        deliver_policy = DeliverPolicy::New,
        pull_sub = 16,
        durable = "billing",
        stream = "ORDERS",
        queue = "workers",
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "`queue` cannot be used with `kv_watch`: a Key-Value watch shares its changes among \
             instances with `group = \"..\"`, not with a queue group; remove one of them",
            "`stream` cannot be used with `kv_watch`: a Key-Value watch reads its bucket's own \
             stream; remove one of them",
            "`durable` cannot be used with `kv_watch`: a Key-Value watch creates its own \
             consumer, and instances share one with `group = \"..\"`; remove one of them",
            "`pull_sub` cannot be used with `kv_watch`: a Key-Value watch receives each change \
             as it is written (to run handlers in parallel, use `max_workers`); remove one of \
             them",
            "`deliver_policy` cannot be used with `kv_watch`: a Key-Value watch starts from each \
             key's latest value (for the whole history or only new changes, use \
             `KvWatch::include_history` or `KvWatch::updates_only`); remove one of them",
            "`ack_policy` cannot be used with `kv_watch`: a Key-Value watch settles its changes \
             itself; remove one of them",
            "`ordered_by` cannot be used with `kv_watch`: a Key-Value watch already handles the \
             changes of each key in order; remove one of them",
            "`no_reply` cannot be used with `kv_watch`: a Key-Value change has no reply subject \
             to answer; remove one of them",
        ]
    );
    // Also when `kv_watch` has no value, and after the errors of the values.
    let errors = run(quote!("a", kv_watch, queue = "two words")).unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].starts_with("`kv_watch` needs a value"),
        "{errors:?}"
    );
    assert_eq!(errors[1], MISSING_KV_WATCH);
    assert!(
        errors[2].starts_with("invalid queue group name"),
        "{errors:?}"
    );
    assert!(
        errors[3].starts_with("`queue` cannot be used with `kv_watch`"),
        "{errors:?}"
    );
}

#[test]
fn group_needs_kv_watch() {
    assert_eq!(
        run(quote!("orders.{id}", group = "billing")).unwrap_err(),
        [GROUP_WITHOUT_KV_WATCH]
    );
    assert_eq!(
        GROUP_WITHOUT_KV_WATCH,
        "`group` is a Key-Value consumer group and needs `kv_watch`; instances share a \
         subject's messages with `queue = \"..\"`, or a stream's with `durable = \"..\"`"
    );
}

#[test]
fn jetstream_settings_need_a_stream() {
    let errors = run(quote!(
        "orders.>",
        ack_policy = AckPolicy::Ack,
        deliver_policy = DeliverPolicy::All,
        pull_sub = true,
        durable = "billing",
        queue = "workers",
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "`durable` needs `stream = \"..\"`: durable consumers belong to a JetStream stream",
            "`pull_sub` needs `stream = \"..\"`: pull consumers fetch from a JetStream stream",
            "`deliver_policy` needs `stream = \"..\"`: where delivery starts is a position in a \
             JetStream stream",
            "`ack_policy` needs `stream = \"..\"`: only the messages of a JetStream stream are \
             acknowledged",
        ]
    );
    // A `stream` without a value is reported as such, not as missing.
    assert_eq!(
        run(quote!("a", stream, durable = "d")).unwrap_err(),
        ["`stream` needs a value: write `stream = \"ORDERS\"`"]
    );
}

#[test]
fn every_error_together_in_order() {
    let errors = generate(
        quote!(
            "a..b",
            durable = "bill ing",
            colour = 1,
            group = "g",
            queue = "",
            queue = "q",
            no_reply = 2,
        ),
        quote!(
            fn f() {}
        ),
    )
    .unwrap_err();
    let messages: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 9, "{messages:?}");
    assert!(messages[0].starts_with("invalid subject pattern `a..b`"));
    assert_eq!(
        messages[1],
        "unknown option `colour`; expected one of: `kv_watch`, `obj_watch`, `max_workers`, `group`, `queue`, \
         `stream`, `durable`, `pull_sub`, `deliver_policy`, `ack_policy`, `ordered_by`, \
         `no_reply`, `subscription`, `title`, `description`, `include_in_schema`, `schema`"
    );
    assert_eq!(messages[2], "`queue` is set more than once");
    assert!(messages[3].starts_with("invalid queue group name ``"));
    assert!(messages[4].starts_with("invalid durable name `bill ing`"));
    assert_eq!(messages[5], NO_REPLY_NOT_BOOL);
    assert_eq!(messages[6], GROUP_WITHOUT_KV_WATCH);
    assert!(messages[7].starts_with("`durable` needs `stream"));
    assert_eq!(messages[8], "`#[subscriber]` handlers must be `async fn`");
}

#[test]
fn keeps_the_item_and_its_other_attributes() {
    let item = quote!(
        #[publisher("billing.done")]
        #[cfg(test)]
        async fn r#bill(order: String) -> String {}
    );
    let out = expand(quote!("orders.created", queue = "q"), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert!(
        out.contains("# [cfg (test)] # [doc (hidden)]"),
        "the registration is under the function's #[cfg]: {out}"
    );
    assert!(out.contains("\"::\" , \"bill\""), "{out}");
}

#[test]
fn a_subscription_expression_is_the_base_of_the_other_options() {
    let out = run(quote::quote!(
        "jobs",
        subscription = Subscription::new().max_attempts(3),
        queue = "workers"
    ))
    .expect("expands");
    assert!(
        out.contains(
            "let subscription : :: faststream_core :: Subscription = Subscription :: new () . max_attempts (3) ; subscription . queue (\"workers\")"
        ),
        "{out}"
    );
    let errors = run(quote::quote!(
        "k",
        kv_watch = "b",
        subscription = Subscription::new()
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "`subscription` cannot be used with `kv_watch`: a Key-Value watch takes its settings \
          from `kv_watch = KvWatch::new(..)`; remove one of them"
        ]
    );
}
