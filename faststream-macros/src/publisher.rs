//! `#[publisher("subject", stream = .., publisher = ..)]`: publishes what the function returns. Its options and
//! the order of its errors; the work is done by `parse`, `check` and `emit`.
//!
//! Several `#[publisher]` and `#[subscriber]` attributes may be stacked on one function, in any
//! order and under any name (`use faststream_core::publisher as emit;`). None looks for the
//! others: each re-emits the function as it received it, other attributes included, and
//! registers itself under the function's path, where the runtime joins them.

use proc_macro2::{Span, TokenStream};

use crate::check::{self, Known, Publisher, Sorted};
use crate::emit;
use crate::errors::join;
use crate::parse::SubscriberArgs;

const ATTR: &str = "publisher";

const MISSING_SUBJECT: &str =
    "missing the subject to publish to: write `#[publisher(\"billing.done\")]`";

const KNOWN: [Known; 2] = [
    Known {
        name: "stream",
        usage: "`stream = \"BILLING\"`",
    },
    Known {
        name: "publisher",
        usage: "`publisher = Publisher::new().retries(8)`",
    },
];

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(args, item.clone());
    emit::output(ATTR, item, generated)
}

fn generate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let publisher = syn::parse2(args).and_then(check_args);
    let (publisher, (handler, output)) = join(publisher, check::publishing_handler(item, ATTR))?;
    Ok(emit::publisher(&publisher, &handler, &output))
}

/// The subject, then the unknown, repeated or valueless options, then the value of `stream`.
/// `publisher = <expr>` (a `faststream_core::Publisher`) is the base `stream` is applied on.
fn check_args(args: SubscriberArgs) -> syn::Result<Publisher> {
    let Sorted {
        slots: [stream, base],
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
    let (subject, ((), stream)) = join(subject, join(problems, stream))?;
    Ok(Publisher {
        subject,
        stream,
        base,
    })
}

#[cfg(test)]
mod tests;
