//! The Key-Value watch form: `#[subscriber("key", kv_watch = .., max_workers = .., group = ..)]`.

use super::*;
use crate::check::{GROUP_NOT_LITERAL, KEY_NOT_LITERAL};
use quote::quote;

#[test]
fn expands_a_literal_bucket() {
    let out = run(quote!("users.{id}", kv_watch = "profiles",)).expect("expands");
    assert!(out.contains("key : \"users.{id}\""), "{out}");
    assert!(
        out.contains(
            "kv_watch : || -> :: faststream_core :: KvWatch { :: faststream_core :: KvWatch :: new (\"profiles\") }"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "handler : || :: faststream_core :: __private :: handler1 :: < u32 , Result < () , E > , _ , _ > (f)"
        ),
        "{out}"
    );
    assert!(out.contains("\"::\" , \"f\""), "{out}");
}

#[test]
fn max_workers_is_applied_to_the_watch() {
    let out = run(quote!("a", kv_watch = "b", max_workers = 64)).expect("ok");
    assert!(out.contains(". max_workers (64usize)"), "{out}");
    for bad in [quote!(0), quote!(-1), quote!(n), quote!(5000), quote!(8u8)] {
        let errors = run(quote!("a", kv_watch = "b", max_workers = #bad)).unwrap_err();
        assert!(
            errors[0].starts_with("`max_workers` must be an integer literal"),
            "{errors:?}"
        );
    }
}

#[test]
fn max_workers_and_bucket_errors_together() {
    let errors = run(quote!("a", kv_watch = "my.bucket", max_workers = 0)).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("invalid bucket name `my.bucket`"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("`max_workers` must be an integer literal"),
        "{errors:?}"
    );
    // Also without the key, and with the function's problems after them.
    let errors = generate(
        quote!(max_workers = 0, kv_watch = "my.bucket"),
        quote!(
            fn f() {}
        ),
    )
    .unwrap_err();
    let messages: Vec<_> = errors.into_iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0], MISSING_KEY);
    assert!(
        messages[1].starts_with("invalid bucket name"),
        "{messages:?}"
    );
    assert!(
        messages[2].starts_with("`max_workers` must be"),
        "{messages:?}"
    );
    assert_eq!(messages[3], "`#[subscriber]` handlers must be `async fn`");
}

#[test]
fn group_is_applied_to_the_watch() {
    let out = run(quote!("a", kv_watch = "b", group = "billing")).expect("ok");
    assert!(
        out.contains("{ :: faststream_core :: KvWatch :: new (\"b\") . group (\"billing\") }"),
        "{out}"
    );
    // With `max_workers`, in any order: `max_workers` first, then `group`.
    let out = run(quote!(
        "a",
        group = "billing",
        kv_watch = "b",
        max_workers = 8
    ))
    .expect("ok");
    assert!(
        out.contains(". max_workers (8usize) . group (\"billing\") }"),
        "{out}"
    );
    // On an expression: bound as a `KvWatch` first, so a wrong type is reported at it.
    let out = run(quote!("a", kv_watch = KvWatch::new(B), group = "billing")).expect("ok");
    assert!(
        out.contains(
            "{ let watch : :: faststream_core :: KvWatch = KvWatch :: new (B) ; \
             watch . group (\"billing\") }"
        ),
        "{out}"
    );
}

#[test]
fn group_must_be_a_valid_literal_name() {
    let errors = run(quote!("a", kv_watch = "b", group = "bill.ing")).unwrap_err();
    assert_eq!(
        errors,
        [
            "invalid group name `bill.ing`: character `.` is not allowed \
          (a group name uses only A-Z, a-z, 0-9, `_` and `-`)"
        ]
    );
    let errors = run(quote!("a", kv_watch = "b", group = "")).unwrap_err();
    assert!(errors[0].starts_with("invalid group name ``"), "{errors:?}");
    let long = "g".repeat(faststream_rules::MAX_GROUP_NAME + 1);
    let errors = run(quote!("a", kv_watch = "b", group = #long)).unwrap_err();
    assert!(errors[0].ends_with("at most 64 are allowed"), "{errors:?}");
    let longest = "g".repeat(faststream_rules::MAX_GROUP_NAME);
    assert!(run(quote!("a", kv_watch = "b", group = #longest)).is_ok());
    for bad in [
        quote!(GROUP),
        quote!(1),
        quote!(GroupSettings::new("billing")),
        quote!(b"billing"),
    ] {
        let errors = run(quote!("a", kv_watch = "b", group = #bad)).unwrap_err();
        assert_eq!(errors, [GROUP_NOT_LITERAL], "{bad}");
    }
    assert_eq!(
        run(quote!("a", kv_watch = "b", group)).unwrap_err(),
        ["`group` needs a value: write `group = \"billing\"`"]
    );
    assert_eq!(
        run(quote!("a", kv_watch = "b", group = "x", group = "y")).unwrap_err(),
        ["`group` is set more than once"]
    );
}

#[test]
fn group_errors_come_with_the_others() {
    let errors = run(quote!(
        "a",
        kv_watch = "my.bucket",
        max_workers = 0,
        group = "bill.ing"
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("invalid bucket name"), "{errors:?}");
    assert!(errors[1].starts_with("`max_workers` must be"), "{errors:?}");
    assert!(errors[2].starts_with("invalid group name"), "{errors:?}");
    // Without the key and the bucket too: then `group` also lacks its `kv_watch`.
    let errors = run(quote!(group = GROUP, max_workers = 0)).unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0], MISSING_SUBJECT);
    assert!(errors[1].starts_with("`max_workers` must be"), "{errors:?}");
    assert_eq!(errors[2], GROUP_NOT_LITERAL);
    assert_eq!(errors[3], combinations::GROUP_WITHOUT_KV_WATCH);
}

#[test]
fn passes_an_expression_through() {
    let out = run(quote!("a", kv_watch = KvWatch::new(BUCKET).history(true))).expect("ok");
    assert!(
        out.contains("{ KvWatch :: new (BUCKET) . history (true) }"),
        "{out}"
    );
}

#[test]
fn missing_parts() {
    // Without `kv_watch`, a missing first argument is a subject (see `subject_tests`).
    assert_eq!(run(quote!()).unwrap_err(), [MISSING_SUBJECT]);
    assert_eq!(run(quote!(kv_watch = "b")).unwrap_err(), [MISSING_KEY]);
    assert_eq!(
        run(quote!("k", kv_watch)).unwrap_err(),
        [
            "`kv_watch` needs a value: write `kv_watch = \"bucket\"`",
            MISSING_KV_WATCH
        ]
    );
}

#[test]
fn invalid_names_and_options() {
    let errors = run(quote!(
        "a..b",
        kv_watch = "my.bucket",
        foo = 1,
        kv_watch = "c"
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].starts_with("invalid key pattern `a..b`"),
        "{errors:?}"
    );
    assert!(errors[1].starts_with(
        "unknown option `foo`; expected one of: `kv_watch`, `obj_watch`, `max_workers`, `group`"
    ));
    assert_eq!(errors[2], "`kv_watch` is set more than once");
    assert!(
        errors[3].starts_with("invalid bucket name `my.bucket`"),
        "{errors:?}"
    );
    assert_eq!(
        run(quote!(KEY, kv_watch = "b")).unwrap_err(),
        [KEY_NOT_LITERAL]
    );
}

#[test]
fn attribute_and_function_errors_together() {
    let errors = generate(
        quote!(kv_watch = "b"),
        quote!(
            fn f(&self) {}
        ),
    )
    .unwrap_err();
    let messages: Vec<_> = errors.into_iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        [
            MISSING_KEY,
            "`#[subscriber]` handlers must be `async fn`",
            "`#[subscriber]` cannot be used on a method with `self`; write a free `async fn`",
        ]
    );
}

#[test]
fn keeps_the_item_on_error() {
    let item = quote!(
        async fn f() {}
    );
    let out = expand(quote!(), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert!(out.contains("compile_error"), "{out}");
}
