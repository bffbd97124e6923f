//! Sorting the `name = value` options of an attribute into one slot per known name.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Expr, Ident};

use crate::errors::Errors;
use crate::parse::NameValue;

/// An option an attribute accepts, with the form shown in messages (e.g. `` `order = 10` ``).
pub(crate) struct Known {
    pub(crate) name: &'static str,
    pub(crate) usage: &'static str,
}

/// The options sorted by [`sort_options`].
pub(crate) struct Sorted<const N: usize> {
    /// One slot per known option, in the order of the `known` list: the value with the span of
    /// its name, or `None` when not written (or written without a value).
    pub(crate) slots: [Option<(Expr, Span)>; N],
    /// One entry per known option: the span of its name where it is first written, with or
    /// without a value. Options that only make sense together are judged by these.
    pub(crate) written: [Option<Span>; N],
    /// The unknown, repeated and valueless options. Kept apart from the slots so that the values
    /// that were set are still checked.
    pub(crate) problems: syn::Result<()>,
}

/// Sorts `list` into one slot per entry of `known`, in the same order.
///
/// Reports, each at the option's name: an unknown name; a name set more than once (at the second
/// occurrence; the first one is kept); a known name without `= value`.
pub(crate) fn sort_options<const N: usize>(list: Vec<NameValue>, known: &[Known; N]) -> Sorted<N> {
    let mut slots: [Option<(Expr, Span)>; N] = std::array::from_fn(|_| None);
    let mut written: [Option<Span>; N] = [None; N];
    let mut errors = Errors::default();
    for NameValue { name, value } in list {
        let text = name.unraw().to_string();
        let Some(index) = known.iter().position(|k| k.name == text) else {
            errors.push(unknown(&name, &text, known));
            continue;
        };
        if written[index].replace(name.span()).is_some() {
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
    Sorted {
        slots,
        written,
        problems: errors.finish_with(()),
    }
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
        let list = crate::parse::options.parse2(tokens).expect("parses");
        let Sorted {
            slots, problems, ..
        } = sort_options(list, &KNOWN);
        let messages = match problems {
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
    fn records_which_names_are_written_even_without_a_value() {
        let list = crate::parse::options
            .parse2(quote!(order, order = 1))
            .expect("parses");
        let Sorted { slots, written, .. } = sort_options(list, &KNOWN);
        assert!(written[1].is_some() && written[0].is_none());
        // The first occurrence counts: it had no value, and the repeat is not taken.
        assert!(slots[1].is_none());
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
}
