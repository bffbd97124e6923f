//! `#[subscriber(..)]` in its three forms: a Key-Value watch, `#[subscriber("key", kv_watch =
//! BUCKET, max_workers = N, group = "name")]`, an object store watch, `#[subscriber("bucket",
//! obj_watch = true, max_workers = N)]`, and a NATS subject subscriber,
//! `#[subscriber("orders.{id}", queue = .., stream = .., durable = .., pull_sub = ..,
//! deliver_policy = .., ack_policy = .., max_workers = N, ordered_by = "id", no_reply = ..,
//! subscription = ..)]`.
//! This driver knows the options, which form each belongs to, which parts are required and the
//! order of the errors; the work is done by `parse`, `check` and `emit`.

mod combinations;

use faststream_rules::KeyPattern;
use proc_macro2::{Span, TokenStream};
use syn::{Expr, LitStr};

use crate::check::DocOptions;
use crate::check::{
    self, Known, ObjSubscriber, Sorted, SubjectSubscriber, Subscriber, Subscription,
};
use crate::emit;
use crate::errors::{join, Errors};
use crate::parse::SubscriberArgs;

const ATTR: &str = "subscriber";

const MISSING_KEY: &str =
    "missing the key to watch: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";
const MISSING_KV_WATCH: &str =
    "`kv_watch = \"bucket\"` is required: write `#[subscriber(\"key\", kv_watch = \"bucket\")]`";
const MISSING_BUCKET: &str =
    "missing the object store to watch: write `#[subscriber(\"reports\", obj_watch = true)]`";
const MISSING_OBJ_WATCH: &str =
    "`obj_watch` needs a value: write `obj_watch = true` or `obj_watch = ObjWatch::new()`";
const MISSING_SUBJECT: &str =
    "missing the subject to subscribe to: write `#[subscriber(\"orders.created\")]`, or \
     `#[subscriber(\"key\", kv_watch = \"bucket\")]` to watch the keys of a Key-Value bucket";

/// The options, `kv_watch` and `obj_watch` first: their presence decides the form. The values
/// are checked and their errors reported in this order.
const KNOWN: [Known; 17] = [
    Known {
        name: "kv_watch",
        usage: "`kv_watch = \"bucket\"`",
    },
    Known {
        name: "obj_watch",
        usage: "`obj_watch = true`",
    },
    Known {
        name: "max_workers",
        usage: "`max_workers = 8`",
    },
    Known {
        name: "group",
        usage: "`group = \"billing\"`",
    },
    Known {
        name: "queue",
        usage: "`queue = \"workers\"`",
    },
    Known {
        name: "stream",
        usage: "`stream = \"ORDERS\"`",
    },
    Known {
        name: "durable",
        usage: "`durable = \"billing\"`",
    },
    Known {
        name: "pull_sub",
        usage: "`pull_sub = 16` or `pull_sub = true`",
    },
    Known {
        name: "deliver_policy",
        usage: "`deliver_policy = DeliverPolicy::New`",
    },
    Known {
        name: "ack_policy",
        usage: "`ack_policy = AckPolicy::Ack`",
    },
    Known {
        name: "ordered_by",
        usage: "`ordered_by = \"id\"`",
    },
    Known {
        name: "no_reply",
        usage: "`no_reply = true`",
    },
    Known {
        name: "subscription",
        usage: "`subscription = Subscription::new().ack_wait(Duration::from_secs(60))`",
    },
    Known {
        name: "title",
        usage: "`title = \"Orders\"`",
    },
    Known {
        name: "description",
        usage: "`description = \"Bills each order\"`",
    },
    Known {
        name: "include_in_schema",
        usage: "`include_in_schema = false`",
    },
    Known {
        name: "schema",
        usage: "`schema = Order`",
    },
];

/// The options other than `kv_watch`, `obj_watch` and the document's, as sorted, in the order
/// of [`KNOWN`].
type OptionSlots = [Option<(Expr, Span)>; 11];

/// The three forms of the attribute, checked. (The subject form, with its many settings, is
/// boxed to keep them the same size.)
enum Checked {
    KvWatch(Subscriber),
    ObjWatch(ObjSubscriber),
    Subject(Box<SubjectSubscriber>),
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = generate(args, item.clone());
    emit::output(ATTR, item, generated)
}

fn generate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let subscriber = syn::parse2(args).and_then(check_args);
    let ((subscriber, docs), handler) = join(subscriber, check::handler(item, ATTR))?;
    Ok(match subscriber {
        Checked::KvWatch(subscriber) => emit::subscriber(&subscriber, &handler, &docs),
        Checked::ObjWatch(subscriber) => emit::obj_subscriber(&subscriber, &handler, &docs),
        Checked::Subject(subscriber) => emit::subject_subscriber(&subscriber, &handler, &docs),
    })
}

/// Checks every part on its own, so that one bad value hides no other. The errors come in the
/// order of the attribute: the key or subject, the unknown, repeated or valueless options, the
/// values in the order of [`KNOWN`], then the options that do not go together.
///
/// Writing `kv_watch` (even without a value) makes the attribute a Key-Value watch, whose key
/// is checked as a key pattern; otherwise the first argument is a subject pattern.
fn check_args(args: SubscriberArgs) -> syn::Result<(Checked, DocOptions)> {
    let Sorted {
        slots: [kv_watch, obj_watch, options @ .., title, description, include, schema],
        written,
        problems,
    } = check::sort_options(args.options, &KNOWN);
    let docs = check::doc_options([title, description, include, schema]);
    join(
        check_forms(args.key, kv_watch, obj_watch, options, written, problems),
        docs,
    )
}

/// The attribute as one of its three forms, by which of `kv_watch` and `obj_watch` is written.
fn check_forms(
    key: Option<Expr>,
    kv_watch: Option<(Expr, Span)>,
    obj_watch: Option<(Expr, Span)>,
    options: OptionSlots,
    written: [Option<Span>; KNOWN.len()],
    problems: syn::Result<()>,
) -> syn::Result<Checked> {
    // `kv_watch` is first in `KNOWN`, `obj_watch` second; beside `kv_watch`, `obj_watch` is
    // refused (a conflict) and the attribute is taken as a Key-Value watch.
    if written[0].is_none() && written[1].is_some() {
        let bucket = key
            .as_ref()
            .map_or_else(|| Err(missing(MISSING_BUCKET)), check::object_bucket);
        let obj_watch = obj_watch.map_or_else(
            || Err(missing(MISSING_OBJ_WATCH)),
            |(expr, name_span)| check::obj_watch(expr, name_span),
        );
        let options = check_options(options, &written, None);
        let (bucket, ((), (obj_watch, (_, subscription)))) =
            join(bucket, join(problems, join(obj_watch, options)))?;
        // Beside `obj_watch` every other setting was refused: only `max_workers` is left.
        return Ok(Checked::ObjWatch(ObjSubscriber {
            bucket,
            obj_watch,
            max_workers: subscription.max_workers,
        }));
    }
    if written[0].is_some() {
        let key = key
            .as_ref()
            .map_or_else(|| Err(missing(MISSING_KEY)), check::key_pattern);
        // Without a value, `problems` has said so already; this says which form needs one.
        let kv_watch = kv_watch.map_or_else(
            || Err(missing(MISSING_KV_WATCH)),
            |(expr, name_span)| check::kv_watch(expr, name_span),
        );
        let options = check_options(options, &written, None);
        let (key, ((), (kv_watch, (group, subscription)))) =
            join(key, join(problems, join(kv_watch, options)))?;
        // Beside `kv_watch` every subject setting was refused: only `max_workers` is left.
        return Ok(Checked::KvWatch(Subscriber {
            key,
            kv_watch,
            max_workers: subscription.max_workers,
            group,
        }));
    }
    let subject = key
        .as_ref()
        .map_or_else(|| Err(missing(MISSING_SUBJECT)), check::subject_pattern);
    let pattern = subject.as_ref().ok().map(|subject| &subject.pattern);
    let options = check_options(options, &written, pattern);
    // Without `kv_watch`, `group` was refused: it is `None` here.
    let (subject, ((), (_, subscription))) = join(subject, join(problems, options))?;
    Ok(Checked::Subject(Box::new(SubjectSubscriber {
        subject: subject.literal,
        subscription,
    })))
}

/// The values of every option but `kv_watch`, then the options that do not go together.
/// `subject` is the subject pattern when it is valid, for `ordered_by` to name its placeholders.
/// Gives `group` and the subject settings (`max_workers` among them).
fn check_options(
    options: OptionSlots,
    written: &[Option<Span>; KNOWN.len()],
    subject: Option<&KeyPattern>,
) -> syn::Result<(Option<LitStr>, Subscription)> {
    let [max_workers, group, queue, stream, durable, pull_sub, deliver_policy, ack_policy, ordered_by, no_reply, base] =
        options;
    let mut errors = Errors::default();
    let max_workers = max_workers.and_then(|(expr, _)| errors.take(check::max_workers(&expr)));
    let group = group.and_then(|(expr, _)| errors.take(check::group(&expr)));
    let queue = queue.and_then(|(expr, _)| errors.take(check::queue(&expr)));
    let stream = stream.and_then(|(expr, name)| errors.take(check::stream(expr, name)));
    let durable = durable.and_then(|(expr, _)| errors.take(check::durable(&expr)));
    let pull_sub = pull_sub.and_then(|(expr, name)| errors.take(check::pull_sub(expr, name)));
    let deliver_policy = deliver_policy.map(|(expr, name)| check::typed(expr, name));
    let ack_policy = ack_policy.map(|(expr, name)| check::typed(expr, name));
    let ordered_by =
        ordered_by.and_then(|(expr, _)| errors.take(check::ordered_by(&expr, subject)));
    let no_reply = no_reply.and_then(|(expr, _)| errors.take(check::no_reply(&expr)));
    let base = base.map(|(expr, name)| check::typed(expr, name));
    for conflict in combinations::conflicts(written) {
        errors.push(conflict);
    }
    errors.finish_with((
        group,
        Subscription {
            queue,
            stream,
            durable,
            pull_sub,
            deliver_policy,
            ack_policy,
            max_workers,
            ordered_by,
            no_reply,
            base,
        },
    ))
}

/// A required part is missing: reported on the whole attribute, as there is no token to point at.
fn missing(message: &str) -> syn::Error {
    syn::Error::new(Span::call_site(), message)
}

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod kv_tests;
#[cfg(test)]
mod obj_tests;
#[cfg(test)]
mod subject_tests;

/// The attribute's errors, or its expansion, as text: for the tests of both forms.
#[cfg(test)]
fn run(args: TokenStream) -> Result<String, Vec<String>> {
    generate(
        args,
        quote::quote!(
            async fn f(x: u32) -> Result<(), E> {}
        ),
    )
    .map(|tokens| tokens.to_string())
    .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}
