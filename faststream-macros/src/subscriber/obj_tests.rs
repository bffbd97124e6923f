//! The object-store form of `#[subscriber]`: what it accepts, expands to and refuses.

use quote::quote;

use super::run;
use crate::check::{BUCKET_NOT_LITERAL, OBJ_WATCH_FALSE};

#[test]
fn expands_to_a_watch_of_the_store_metadata() {
    let expanded = run(quote!("reports", obj_watch = true)).expect("valid");
    assert!(expanded.contains("key : \">\""), "{expanded}");
    assert!(expanded.contains("obj_watch (\"reports\""), "{expanded}");
    let expanded = run(quote!(
        "reports",
        obj_watch = ObjWatch::new().ignore_deletes(true),
        max_workers = 4
    ))
    .expect("valid");
    assert!(expanded.contains("ignore_deletes (true)"), "{expanded}");
    assert!(expanded.contains(". max_workers (4usize)"), "{expanded}");
}

#[test]
fn refuses_what_an_object_watch_cannot_be() {
    let errors = run(quote!(obj_watch = true)).expect_err("no bucket");
    assert!(
        errors[0].starts_with("missing the object store"),
        "{errors:?}"
    );
    let errors = run(quote!("not a bucket", obj_watch = true)).expect_err("bad bucket");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let errors = run(quote!(BUCKET, obj_watch = true)).expect_err("not a literal");
    assert_eq!(errors, [BUCKET_NOT_LITERAL]);
    let errors = run(quote!("reports", obj_watch = false)).expect_err("false");
    assert_eq!(errors, [OBJ_WATCH_FALSE]);
}

#[test]
fn every_setting_of_another_form_is_refused_at_its_name() {
    let errors = run(quote!(
        "reports",
        obj_watch = true,
        queue = "workers",
        stream = "S",
        group = "g",
        ordered_by = "x"
    ))
    .expect_err("conflicts");
    let expected = [
        "`group` cannot be used with `obj_watch`",
        "`queue` cannot be used with `obj_watch`",
        "`stream` cannot be used with `obj_watch`",
        "`ordered_by` cannot be used with `obj_watch`",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:?}");
    for (error, start) in errors.iter().zip(expected) {
        assert!(error.starts_with(start), "{error}");
    }
    let errors = run(quote!("k", kv_watch = "b", obj_watch = true)).expect_err("both");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("`obj_watch` cannot be used with `kv_watch`"),
        "{errors:?}"
    );
}
