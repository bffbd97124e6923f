//! `#[publisher("subject", stream = .., publisher = ..)]`: publishes what the function returns. Its options and
//! the order of its errors; the work is done by `parse`, `check` and `emit`.
//!
//! Several `#[publisher]` and `#[subscriber]` attributes may be stacked on one function, in any
//! order and under any name (`use faststream_core::publisher as emit;`). None looks for the
//! others: each re-emits the function as it received it, other attributes included, and
//! registers itself under the function's path, where the runtime joins them.

use proc_macro2::{Span, TokenStream};

use crate::check::{self, DocOptions, Known, Publisher, Sorted};
use crate::emit;
use crate::errors::join;
use crate::parse::SubscriberArgs;

const ATTR: &str = "publisher";

const MISSING_SUBJECT: &str =
    "missing the subject to publish to: write `#[publisher(\"billing.done\")]`";

const KNOWN: [Known; 6] = [
    Known {
        name: "stream",
        usage: "`stream = \"BILLING\"`",
    },
    Known {
        name: "publisher",
        usage: "`publisher = Publisher::new().retries(8)`",
    },
    Known {
        name: "title",
        usage: "`title = \"Bills\"`",
    },
    Known {
        name: "description",
        usage: "`description = \"Each bill, once paid\"`",
    },
    Known {
        name: "include_in_schema",
        usage: "`include_in_schema = false`",
    },
    Known {
        name: "schema",
        usage: "`schema = Bill`",
    },
];

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(args, item.clone());
    emit::output(ATTR, item, generated)
}

fn generate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let publisher = syn::parse2(args).and_then(check_args);
    let ((publisher, docs), (handler, output)) =
        join(publisher, check::publishing_handler(item, ATTR))?;
    Ok(emit::publisher(&publisher, &handler, &output, &docs))
}

/// The subject, then the unknown, repeated or valueless options, then the value of `stream`.
/// `publisher = <expr>` (a `faststream_core::Publisher`) is the base `stream` is applied on.
fn check_args(args: SubscriberArgs) -> syn::Result<(Publisher, DocOptions)> {
    let Sorted {
        slots: [stream, base, title, description, include, schema],
        problems,
        ..
    } = check::sort_options(args.options, &KNOWN);
    let base = base.map(|(expr, name_span)| check::typed(expr, name_span));
    let subject = args.key.as_ref().map_or_else(
        || Err(syn::Error::new(Span::call_site(), MISSING_SUBJECT)),
        check::publish_subject,
    );
    let stream = stream
        .map(|(expr, name_span)| check::stream(expr, name_span))
        .transpose();
    let docs = check::doc_options([title, description, include, schema]);
    let (subject, ((), (stream, docs))) = join(subject, join(problems, join(stream, docs)))?;
    Ok((
        Publisher {
            subject,
            stream,
            base,
        },
        docs,
    ))
}

#[cfg(test)]
mod tests;
