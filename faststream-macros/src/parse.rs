//! Parsing: the tokens of an attribute and of the item under it, turned into their parts without
//! judging them.
//!
//! Only the shape is checked here (`name = value, ...`, a function with a body); what the parts
//! mean is left to `check`, which can then report every problem together rather than stop at the
//! first.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Attribute, Expr, Ident, Signature, Token, Visibility};

/// A function item. Its body is kept as raw tokens: it is never looked at, and half-typed code in
/// it must not stop the attribute from expanding (rust-analyzer expands on every keystroke).
pub(crate) struct HandlerFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) sig: Signature,
}

impl HandlerFn {
    /// Parses `item`; `attr` (e.g. `subscriber`) names the attribute in messages.
    pub(crate) fn parse(item: TokenStream, attr: &str) -> syn::Result<Self> {
        (|input: ParseStream| Self::parse_with(input, attr)).parse2(item)
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
}

/// One option as written: `name = value`, or a bare `name` (reported by `check`).
pub(crate) struct NameValue {
    pub(crate) name: Ident,
    pub(crate) value: Option<Expr>,
}

/// Parses `name = value, ...` (trailing comma allowed) up to the end of `input`.
///
/// Names may be keywords or raw identifiers so that a misspelt `type = ..` is reported as an
/// unknown option rather than as a syntax error.
pub(crate) fn options(input: ParseStream) -> syn::Result<Vec<NameValue>> {
    let mut list = Vec::new();
    while !input.is_empty() {
        if !input.peek(Ident::peek_any) {
            return Err(input.error("expected an option: `name = value`"));
        }
        let name = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        list.push(NameValue { name, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(list)
}

/// The arguments of `#[subscriber]` or `#[publisher]` as written: an optional leading key or
/// subject, then the options.
pub(crate) struct SubscriberArgs {
    pub(crate) key: Option<Expr>,
    pub(crate) options: Vec<NameValue>,
}

impl Parse for SubscriberArgs {
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
        let options = options(input)?;
        Ok(Self { key, options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn rejects_bad_option_shapes() {
        for tokens in [quote!("x"), quote!(a = 1 b = 2), quote!(a = )] {
            assert!(options.parse2(tokens.clone()).is_err(), "{tokens}");
        }
    }

    #[test]
    fn splits_the_subscriber_key_from_the_options() {
        let args: SubscriberArgs = syn::parse2(quote!("k", kv_watch = "b",)).expect("parses");
        assert!(args.key.is_some());
        assert_eq!(args.options.len(), 1);
        let args: SubscriberArgs = syn::parse2(quote!(kv_watch = "b")).expect("parses");
        assert!(args.key.is_none());
        assert_eq!(args.options[0].name, "kv_watch");
        assert!(syn::parse2::<SubscriberArgs>(quote!("k" kv_watch = "b")).is_err());
    }

    #[test]
    fn keeps_the_body_unparsed() {
        let handler = HandlerFn::parse(
            quote!(
                #[cfg(test)]
                /// docs
                pub(crate) async fn f(a: u32) -> Result<(), E> { half typed + }
            ),
            "subscriber",
        )
        .expect("parses");
        assert_eq!(handler.attrs.len(), 2);
        assert_eq!(handler.sig.ident, "f");
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
}
