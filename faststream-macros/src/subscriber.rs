//! `#[subscriber("key", kv_watch = BUCKET, max_workers = N, group = "name")]`: its options,
//! which parts are required, and the order of its errors; the work is done by `parse`, `check`
//! and `emit`.

use proc_macro2::{Span, TokenStream};

use crate::check::{self, Known, Sorted, Subscriber};
use crate::emit;
use crate::errors::{followed_by, join};
use crate::parse::SubscriberArgs;

const ATTR: &str = "subscriber";

const MISSING_KEY: &str =
    "missing the key to watch: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";
const MISSING_KV_WATCH: &str =
    "`kv_watch = \"bucket\"` is required: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";

const KNOWN: [Known; 3] = [
    Known {
        name: "kv_watch",
        usage: "`kv_watch = \"bucket\"`",
    },
    Known {
        name: "max_workers",
        usage: "`max_workers = 8`",
    },
    Known {
        name: "group",
        usage: "`group = \"billing\"`",
    },
];

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(args, item.clone());
    emit::output(ATTR, item, generated)
}

fn generate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let subscriber = syn::parse2(args).and_then(check_args);
    let (subscriber, handler) = join(subscriber, check::handler(item, ATTR))?;
    Ok(emit::subscriber(&subscriber, &handler))
}

/// Checks every part on its own, so that one bad value hides no other. The errors come in the
/// order of the attribute: the key, the unknown, repeated or valueless options, then the values
/// of `kv_watch`, `max_workers` and `group`.
fn check_args(args: SubscriberArgs) -> syn::Result<Subscriber> {
    let Sorted {
        slots: [kv_watch, max_workers, group],
        problems,
    } = check::sort_options(args.options, &KNOWN);
    let key = args.key.as_ref().map(check::key_pattern);
    let kv_watch = kv_watch.map(|(expr, name_span)| check::kv_watch(expr, name_span));
    let max_workers = max_workers
        .map(|(expr, _)| check::max_workers(&expr))
        .transpose();
    let group = group.map(|(expr, _)| check::group(&expr)).transpose();
    let (key, kv_watch) = match (key, kv_watch) {
        (Some(key), Some(kv_watch)) => (key, kv_watch),
        (Some(key), None) => (key, Err(missing(MISSING_KV_WATCH))),
        (None, Some(kv_watch)) => (Err(missing(MISSING_KEY)), kv_watch),
        // Neither: the key's message, which shows the whole attribute, covers both.
        (None, None) => {
            return Err(followed_by(
                missing(MISSING_KEY),
                join(problems, join(max_workers, group)),
            ))
        }
    };
    let (key, ((), (kv_watch, (max_workers, group)))) = join(
        key,
        join(problems, join(kv_watch, join(max_workers, group))),
    )?;
    Ok(Subscriber {
        key,
        kv_watch,
        max_workers,
        group,
    })
}

/// A required part is missing: reported on the whole attribute, as there is no token to point at.
fn missing(message: &str) -> syn::Error {
    syn::Error::new(Span::call_site(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{GROUP_NOT_LITERAL, KEY_NOT_LITERAL};
    use quote::quote;

    fn run(args: TokenStream) -> Result<String, Vec<String>> {
        generate(
            args,
            quote!(
                async fn f(x: u32) -> Result<(), E> {}
            ),
        )
        .map(|tokens| tokens.to_string())
        .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

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
        // Without the key and the bucket too.
        let errors = run(quote!(group = GROUP, max_workers = 0)).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0], MISSING_KEY);
        assert!(errors[1].starts_with("`max_workers` must be"), "{errors:?}");
        assert_eq!(errors[2], GROUP_NOT_LITERAL);
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
        assert_eq!(run(quote!()).unwrap_err(), [MISSING_KEY]);
        assert_eq!(run(quote!(kv_watch = "b")).unwrap_err(), [MISSING_KEY]);
        assert_eq!(run(quote!("k")).unwrap_err(), [MISSING_KV_WATCH]);
        assert_eq!(run(quote!("k",)).unwrap_err(), [MISSING_KV_WATCH]);
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
            "unknown option `foo`; expected one of: `kv_watch`, `max_workers`, `group`"
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
            quote!("k"),
            quote!(
                fn f(&self) {}
            ),
        )
        .unwrap_err();
        let messages: Vec<_> = errors.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                MISSING_KV_WATCH,
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
}
