//! Generic `name = value` option lists, as in `kv_watch = "bucket"` or `order = 10`, and the
//! collection of several errors into one.
//!
//! Parsing only checks the shape (`name [= expr], ...`). [`check`] then sorts the options into one
//! slot per known name, reporting unknown names, names set twice and names without a value, each
//! at the offending tokens. The meaning of a value is left to the attribute that owns it.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{Expr, Ident, Token};

/// Several errors gathered while checking one attribute, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds the error of a failed parse, keeping the value of a successful one.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// One option as written: `name = value`, or a bare `name` (reported by [`check`]).
pub(crate) struct NameValue {
    pub(crate) name: Ident,
    pub(crate) value: Option<Expr>,
}

/// An option's value with the span of the name it was set under.
pub(crate) type Setting<T> = Option<(T, Span)>;

/// An option an attribute accepts, with the form shown in messages (e.g. `` `order = 10` ``).
pub(crate) struct Known {
    pub(crate) name: &'static str,
    pub(crate) usage: &'static str,
}

/// Parses `name = value, ...` (trailing comma allowed) up to the end of `input`.
///
/// Names may be keywords or raw identifiers so that a misspelt `type = ..` is reported as an
/// unknown option rather than as a syntax error.
pub(crate) fn parse_list(input: ParseStream) -> syn::Result<Vec<NameValue>> {
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

/// Sorts `list` into one slot per entry of `known`, in the same order.
///
/// Reports, each at the option's name: an unknown name; a name set more than once (at the second
/// occurrence; the first one is kept); a known name without `= value`.
pub(crate) fn check<const N: usize>(
    list: Vec<NameValue>,
    known: &[Known; N],
    errors: &mut Errors,
) -> [Setting<Expr>; N] {
    let mut slots: [Setting<Expr>; N] = std::array::from_fn(|_| None);
    let mut seen = [false; N];
    for NameValue { name, value } in list {
        let text = name.unraw().to_string();
        let Some(index) = known.iter().position(|k| k.name == text) else {
            errors.push(unknown(&name, &text, known));
            continue;
        };
        if std::mem::replace(&mut seen[index], true) {
            errors.push(syn::Error::new(
                name.span(),
                format!("`{text}` is set more than once"),
            ));
            continue;
        }
        match value {
            Some(value) => slots[index] = Some((value, name.span())),
            None => errors.push(syn::Error::new(
                name.span(),
                format!("`{text}` needs a value: write {}", known[index].usage),
            )),
        }
    }
    slots
}

fn unknown(name: &Ident, text: &str, known: &[Known]) -> syn::Error {
    let expected = known
        .iter()
        .map(|k| format!("`{}`", k.name))
        .collect::<Vec<_>>()
        .join(", ");
    syn::Error::new(
        name.span(),
        format!("unknown option `{text}`; expected one of: {expected}"),
    )
}

/// Removes the invisible groups that `macro_rules!` puts around an `$x:expr`, so that a literal
/// passed through a declarative macro is still seen as a literal.
pub(crate) fn peel(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use syn::parse::Parser;

    const KNOWN: [Known; 2] = [
        Known {
            name: "kv_watch",
            usage: "`kv_watch = \"bucket\"`",
        },
        Known {
            name: "order",
            usage: "`order = 10`",
        },
    ];

    fn run(tokens: proc_macro2::TokenStream) -> (Vec<bool>, Vec<String>) {
        let list = parse_list.parse2(tokens).expect("parses");
        let mut errors = Errors::default();
        let slots = check(list, &KNOWN, &mut errors);
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (slots.iter().map(Option::is_some).collect(), messages)
    }

    #[test]
    fn sorts_known_options() {
        let (set, messages) = run(quote!(order = -3, kv_watch = "b",));
        assert_eq!(set, [true, true]);
        assert!(messages.is_empty(), "{messages:?}");
        let (set, messages) = run(quote!());
        assert_eq!(set, [false, false]);
        assert!(messages.is_empty());
    }

    #[test]
    fn reports_unknown_duplicate_and_valueless() {
        let (set, messages) = run(quote!(
            kv_watch = "a",
            foo = 1,
            kv_watch = "b",
            order,
            r#type = 2
        ));
        assert_eq!(set, [true, false]);
        assert_eq!(
            messages,
            [
                "unknown option `foo`; expected one of: `kv_watch`, `order`",
                "`kv_watch` is set more than once",
                "`order` needs a value: write `order = 10`",
                "unknown option `type`; expected one of: `kv_watch`, `order`",
            ]
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        for tokens in [quote!("x"), quote!(a = 1 b = 2), quote!(a = )] {
            assert!(parse_list.parse2(tokens.clone()).is_err(), "{tokens}");
        }
    }
}
