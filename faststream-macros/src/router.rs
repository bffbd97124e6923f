//! `router!(prefix = "orders.")`: puts the subjects of the module it is written in, and of the
//! modules below, under a prefix. Its one option and its errors; the work is done by `parse`,
//! `check` and `emit`.

use proc_macro2::{Span, TokenStream};
use syn::parse::{ParseStream, Parser};
use syn::LitStr;

use crate::check::{self, Known, Router, Sorted};
use crate::emit;
use crate::errors::join;
use crate::parse::{self, NameValue};

const MISSING_PREFIX: &str = "missing the prefix: write `router!(prefix = \"orders.\")`";

const POSITIONAL_PREFIX: &str = "name the prefix: write `router!(prefix = \"orders.\")`";

const KNOWN: [Known; 1] = [Known {
    name: "prefix",
    usage: "`prefix = \"orders.\"`",
}];

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    match generate(input) {
        Ok(generated) => generated,
        Err(error) => error.to_compile_error(),
    }
}

fn generate(input: TokenStream) -> syn::Result<TokenStream> {
    let router = arguments.parse2(input).and_then(check_args)?;
    Ok(emit::router(&router))
}

/// `name = value, ..`; a bare string literal, the likely slip, is told how to be written.
fn arguments(input: ParseStream) -> syn::Result<Vec<NameValue>> {
    if input.peek(LitStr) {
        return Err(syn::Error::new(input.span(), POSITIONAL_PREFIX));
    }
    parse::options(input)
}

/// The unknown, repeated or valueless options, then the prefix.
fn check_args(options: Vec<NameValue>) -> syn::Result<Router> {
    let Sorted {
        slots: [prefix],
        problems,
        ..
    } = check::sort_options(options, &KNOWN);
    let prefix = prefix.map_or_else(
        || Err(syn::Error::new(Span::call_site(), MISSING_PREFIX)),
        |(expr, _)| check::subject_prefix(&expr),
    );
    let ((), prefix) = join(problems, prefix)?;
    Ok(Router { prefix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::PREFIX_NOT_LITERAL;
    use quote::quote;

    fn run(input: TokenStream) -> Result<String, Vec<String>> {
        generate(input)
            .map(|tokens| tokens.to_string())
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn registers_the_prefix_for_the_module() {
        let out = run(quote!(prefix = "orders.")).expect("expands");
        assert_eq!(
            out,
            quote! {
                #[doc(hidden)]
                #[allow(non_upper_case_globals, clippy::all)]
                const _: () = {
                    ::faststream_core::__private::inventory::submit! {
                        ::faststream_core::__private::RouterRegistration {
                            module: ::core::module_path!(),
                            prefix: "orders.",
                            file: ::core::file!(),
                            line: ::core::line!(),
                        }
                    }
                };
            }
            .to_string()
        );
        assert!(run(quote!(prefix = "orders",)).is_ok());
    }

    #[test]
    fn checks_the_prefix() {
        assert_eq!(
            run(quote!(prefix = "orders.*.")).unwrap_err(),
            [
                "invalid subject prefix `orders.*.`: character `*` in token 2 is not allowed (a \
                 prefix is concrete: no wildcard); a prefix uses printable characters other than \
                 whitespace, `*`, `>`, `{` and `}`, with `.` between tokens and optionally at \
                 the end"
            ]
        );
        assert!(run(quote!(prefix = ".orders")).unwrap_err()[0].contains("token 1 is empty"));
        assert_eq!(
            run(quote!(prefix = PREFIX)).unwrap_err(),
            [PREFIX_NOT_LITERAL]
        );
    }

    #[test]
    fn reports_the_options_then_the_prefix() {
        assert_eq!(run(quote!()).unwrap_err(), [MISSING_PREFIX]);
        assert_eq!(run(quote!("orders.")).unwrap_err(), [POSITIONAL_PREFIX]);
        assert_eq!(
            run(quote!(prefx = "a.", prefix = "a b")).unwrap_err(),
            [
                "unknown option `prefx`; expected one of: `prefix`",
                "invalid subject prefix `a b`: character U+0020 (whitespace) in token 1 is not \
                 allowed; a prefix uses printable characters other than whitespace, `*`, `>`, \
                 `{` and `}`, with `.` between tokens and optionally at the end",
            ]
        );
        assert_eq!(
            run(quote!(prefix)).unwrap_err(),
            [
                "`prefix` needs a value: write `prefix = \"orders.\"`",
                MISSING_PREFIX
            ]
        );
    }
}
