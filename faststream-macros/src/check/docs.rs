//! The options that shape the AsyncAPI document, on `#[subscriber]` and `#[publisher]`:
//! `title`, `description`, `include_in_schema` and `schema`; and the handler's doc comment.

use proc_macro2::Span;
use quote::ToTokens as _;
use syn::{Expr, ExprLit, ExprPath, Lit, LitBool, LitStr, Meta};

use super::values::{bool_literal, peel};
use crate::parse::HandlerFn;

pub(crate) const TITLE_NOT_LITERAL: &str =
    "`title` must be a non-empty string literal, e.g. `title = \"Orders\"`";
pub(crate) const DESCRIPTION_NOT_LITERAL: &str =
    "`description` must be a string literal, e.g. `description = \"Bills each order\"`";
pub(crate) const INCLUDE_NOT_BOOL: &str =
    "`include_in_schema` must be `true` or `false`: `false` leaves this handler out of the \
     AsyncAPI document";
pub(crate) const SCHEMA_NOT_TYPE: &str =
    "`schema` takes a type implementing `schemars::JsonSchema`, e.g. `schema = Order` or \
     `schema = Vec::<Order>`";

/// What the document says of a handler, as written on its attribute.
#[derive(Default)]
pub(crate) struct DocOptions {
    pub(crate) title: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) include_in_schema: Option<LitBool>,
    /// `schema = T`: the payload's schema is `T`'s, whatever the argument types say.
    pub(crate) schema: Option<syn::Type>,
}

/// `title = ".."`: a non-empty literal.
pub(crate) fn title(expr: &Expr) -> syn::Result<LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) if !lit.value().trim().is_empty() => Ok(LitStr::new(&lit.value(), lit.span())),
        other => Err(syn::Error::new_spanned(other, TITLE_NOT_LITERAL)),
    }
}

/// `description = ".."`.
pub(crate) fn description(expr: &Expr) -> syn::Result<LitStr> {
    match peel(expr) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(LitStr::new(&lit.value(), lit.span())),
        other => Err(syn::Error::new_spanned(other, DESCRIPTION_NOT_LITERAL)),
    }
}

/// `include_in_schema = true|false`.
pub(crate) fn include_in_schema(expr: &Expr) -> syn::Result<LitBool> {
    bool_literal(expr, INCLUDE_NOT_BOOL)
}

/// `schema = Order`: a path, read as a type (`Vec::<Order>` as written in an expression).
pub(crate) fn schema(expr: &Expr) -> syn::Result<syn::Type> {
    match peel(expr) {
        Expr::Path(ExprPath {
            qself: None, path, ..
        }) => syn::parse2(path.to_token_stream())
            .map_err(|_| syn::Error::new_spanned(path, SCHEMA_NOT_TYPE)),
        other => Err(syn::Error::new_spanned(other, SCHEMA_NOT_TYPE)),
    }
}

/// The four options' values from their slots (in this order), each checked on its own: every
/// problem is reported.
pub(crate) fn doc_options(
    [title_slot, description_slot, include_slot, schema_slot]: [Option<(Expr, Span)>; 4],
) -> syn::Result<DocOptions> {
    let mut errors = crate::errors::Errors::default();
    let options = DocOptions {
        title: title_slot.and_then(|(expr, _)| errors.take(title(&expr))),
        description: description_slot.and_then(|(expr, _)| errors.take(description(&expr))),
        include_in_schema: include_slot.and_then(|(expr, _)| errors.take(include_in_schema(&expr))),
        schema: schema_slot.and_then(|(expr, _)| errors.take(schema(&expr))),
    };
    errors.finish_with(options)
}

/// The handler's doc comment (`///` lines and `#[doc = ".."]`), as rustdoc joins it: one line
/// per attribute, the one space after `///` removed, surrounding blank lines trimmed.
pub(crate) fn doc_comment(handler: &HandlerFn) -> String {
    let lines: Vec<String> = handler
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(name_value) => match &name_value.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(text),
                    ..
                }) => Some(text.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn expr(tokens: proc_macro2::TokenStream) -> Expr {
        syn::parse2(tokens).expect("an expression")
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(
            title(&expr(quote!("Orders"))).map(|t| t.value()).ok(),
            Some("Orders".into())
        );
        assert!(title(&expr(quote!(""))).is_err());
        assert!(title(&expr(quote!(TITLE))).is_err());
        assert!(include_in_schema(&expr(quote!(false))).is_ok());
        assert!(include_in_schema(&expr(quote!("no"))).is_err());
        let ty = schema(&expr(quote!(Vec::<model::Order>))).expect("a type");
        assert_eq!(
            ty.to_token_stream().to_string(),
            "Vec :: < model :: Order >"
        );
        assert!(schema(&expr(quote!(1 + 2))).is_err());
    }

    #[test]
    fn the_doc_comment_is_joined_as_rustdoc_does() {
        let handler = HandlerFn::parse(
            quote!(
                /// Bills an order.
                ///
                ///   Indented stays indented.
                #[doc = " Last."]
                async fn f() {}
            ),
            "subscriber",
        )
        .expect("parses");
        assert_eq!(
            doc_comment(&handler),
            "Bills an order.\n\n  Indented stays indented.\nLast."
        );
    }
}
