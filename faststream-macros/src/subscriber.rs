//! `#[subscriber("key", kv_watch = BUCKET)]`: parse the arguments, validate them and the function,
//! and generate the registration.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr, Token};

use crate::options::{self, Errors, Known, NameValue};
use crate::signature::{self, HandlerFn};

const ATTR: &str = "subscriber";

pub(crate) const MISSING_KEY: &str =
    "missing the key to watch: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";
pub(crate) const MISSING_KV_WATCH: &str =
    "`kv_watch = \"bucket\"` is required: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";
const KEY_NOT_LITERAL: &str =
    "the key to watch must be a string literal, e.g. `\"users.{id}\"` or `\"audit.>\"`";

const KNOWN: [Known; 2] = [
    Known {
        name: "kv_watch",
        usage: "`kv_watch = \"bucket\"`",
    },
    Known {
        name: "max_workers",
        usage: "`max_workers = 8`",
    },
];

use faststream_rules::MAX_WORKERS;

/// The arguments as written: an optional leading key, then `name = value` options.
struct Args {
    key: Option<Expr>,
    options: Vec<NameValue>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let starts_with_option = input.peek(Ident::peek_any) && input.peek2(Token![=]);
        let key = if input.is_empty() || starts_with_option {
            None
        } else {
            let key = input.parse::<Expr>()?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
            Some(key)
        };
        let options = options::parse_list(input)?;
        Ok(Self { key, options })
    }
}

/// The validated arguments, ready to generate.
struct Subscriber {
    key: LitStr,
    /// The `|| -> KvWatch { .. }` closure.
    kv_watch: TokenStream,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(args, item.clone());
    signature::emit(ATTR, item, generated)
}

fn generate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let subscriber = errors
        .ok(syn::parse2::<Args>(args))
        .and_then(|args| validate(args, &mut errors));
    let handler = errors.ok(HandlerFn::parse(item, ATTR));
    if let Some(handler) = &handler {
        signature::check(&handler.sig, ATTR, &mut errors);
    }
    match (subscriber, handler, errors.finish()) {
        (Some(subscriber), Some(handler), Ok(())) => Ok(registration(&subscriber, &handler)),
        (_, _, Err(error)) => Err(error),
        // Not reached: every `None` above comes with an error.
        _ => Err(syn::Error::new(
            Span::call_site(),
            "invalid `#[subscriber]`",
        )),
    }
}

fn validate(args: Args, errors: &mut Errors) -> Option<Subscriber> {
    let key = match &args.key {
        Some(expr) => errors.ok(key_literal(expr)),
        None => {
            errors.push(syn::Error::new(Span::call_site(), MISSING_KEY));
            None
        }
    };
    let [kv_watch, max_workers] = options::check(args.options, &KNOWN, errors);
    let max_workers = match max_workers {
        Some((expr, _span)) => errors.ok(parse_max_workers(&expr)).map(Some),
        None => Some(None),
    };
    let max_workers = max_workers?;
    let kv_watch = match kv_watch {
        Some((expr, span)) => errors.ok(kv_watch_closure(expr, span, max_workers)),
        None => {
            // Without a key the message above already shows the whole attribute.
            if args.key.is_some() {
                errors.push(syn::Error::new(Span::call_site(), MISSING_KV_WATCH));
            }
            None
        }
    };
    Some(Subscriber {
        key: key?,
        kv_watch: kv_watch?,
    })
}

/// `max_workers = N`: an integer literal from 1 to [`MAX_WORKERS`].
fn parse_max_workers(expr: &Expr) -> syn::Result<LitInt> {
    let message = format!(
        "`max_workers` must be an integer literal from 1 to {MAX_WORKERS}, e.g. `max_workers = 8`"
    );
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = options::peel(expr)
    else {
        return Err(syn::Error::new_spanned(expr, message));
    };
    match lit.base10_parse::<usize>() {
        Ok(workers) if (1..=MAX_WORKERS).contains(&workers) && lit.suffix().is_empty() => {
            Ok(LitInt::new(&format!("{workers}usize"), lit.span()))
        }
        _ => Err(syn::Error::new_spanned(expr, message)),
    }
}

/// The key must be a string literal holding a valid watch pattern.
fn key_literal(expr: &Expr) -> syn::Result<LitStr> {
    match options::peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let key = lit.value();
            faststream_rules::KeyPattern::parse(&key)
                .map_err(|error| syn::Error::new(lit.span(), error))?;
            // A fresh literal: same text and span, without a suffix or raw-string quirks.
            Ok(LitStr::new(&key, lit.span()))
        }
        other => Err(syn::Error::new_spanned(other, KEY_NOT_LITERAL)),
    }
}

/// The closure that builds the `KvWatch`. A string literal is a bucket name, checked now;
/// anything else is the user's expression of type `KvWatch`, checked by rustc where it is
/// written. The closure's return type carries the span of the `kv_watch` name (`name_span`), so
/// a mismatched type reads "expected `KvWatch` because of return type" at `kv_watch`, not under
/// the whole attribute.
fn kv_watch_closure(
    expr: Expr,
    name_span: Span,
    max_workers: Option<LitInt>,
) -> syn::Result<TokenStream> {
    let body = if let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = options::peel(&expr)
    {
        let bucket = lit.value();
        faststream_rules::validate_bucket(&bucket)
            .map_err(|error| syn::Error::new(lit.span(), error))?;
        let lit = LitStr::new(&bucket, lit.span());
        quote!(::faststream_core::KvWatch::new(#lit))
    } else {
        expr.into_token_stream()
    };
    // `max_workers = N` in the attribute applies on top of the settings.
    let body = match max_workers {
        Some(workers) => quote!((#body).max_workers(#workers)),
        None => body,
    };
    let ty = quote_spanned!(name_span=> ::faststream_core::KvWatch);
    Ok(quote!(|| -> #ty { #body }))
}

fn registration(subscriber: &Subscriber, handler: &HandlerFn) -> TokenStream {
    let boxed = signature::constructor(&handler.sig, "handler");
    let Subscriber { key, kv_watch } = subscriber;
    signature::submit(
        handler,
        quote!(SubscriberRegistration),
        quote! {
            key: #key,
            kv_watch: #kv_watch,
            handler: || #boxed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(errors[1]
            .starts_with("unknown option `foo`; expected one of: `kv_watch`, `max_workers`"));
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
