//! Options of `#[subscriber]` that do not go together, each refused at the name of the option
//! at fault with a sentence that says why: the subject settings beside `kv_watch` or
//! `obj_watch`, `group` without `kv_watch`, and the JetStream settings without `stream`.

use proc_macro2::Span;

use super::KNOWN;

/// What each subject setting would mean beside `kv_watch`, and why a watch has no use for it.
const NOT_WITH_KV_WATCH: [(&str, &str); 9] = [
    (
        "queue",
        "a Key-Value watch shares its changes among instances with `group = \"..\"`, not with \
         a queue group",
    ),
    ("stream", "a Key-Value watch reads its bucket's own stream"),
    (
        "durable",
        "a Key-Value watch creates its own consumer, and instances share one with \
         `group = \"..\"`",
    ),
    (
        "pull_sub",
        "a Key-Value watch receives each change as it is written (to run handlers in \
         parallel, use `max_workers`)",
    ),
    (
        "deliver_policy",
        "a Key-Value watch starts from each key's latest value (for the whole history or only \
         new changes, use `KvWatch::include_history` or `KvWatch::updates_only`)",
    ),
    ("ack_policy", "a Key-Value watch settles its changes itself"),
    (
        "ordered_by",
        "a Key-Value watch already handles the changes of each key in order",
    ),
    (
        "no_reply",
        "a Key-Value change has no reply subject to answer",
    ),
    (
        "subscription",
        "a Key-Value watch takes its settings from `kv_watch = KvWatch::new(..)`",
    ),
];

/// What each setting would mean beside `obj_watch`, and why an object watch has no use for it.
const NOT_WITH_OBJ_WATCH: [(&str, &str); 11] = [
    (
        "kv_watch",
        "a subscriber watches either an object store or the keys of a Key-Value bucket",
    ),
    (
        "group",
        "consumer groups share the changes of Key-Value keys; an object watch is handled by \
         every instance (to run handlers in parallel, use `max_workers`)",
    ),
    (
        "queue",
        "an object watch reads its store's changes, not a subject shared by a queue group",
    ),
    ("stream", "an object watch reads its store's own stream"),
    ("durable", "an object watch creates its own consumer"),
    (
        "pull_sub",
        "an object watch receives each change as it is written (to run handlers in parallel, \
         use `max_workers`)",
    ),
    (
        "deliver_policy",
        "an object watch starts from each object's latest version (for only new changes, use \
         `ObjWatch::updates_only`)",
    ),
    ("ack_policy", "an object watch settles its changes itself"),
    (
        "ordered_by",
        "an object watch already handles the changes of each object in order",
    ),
    (
        "no_reply",
        "an object change has no reply subject to answer",
    ),
    (
        "subscription",
        "an object watch takes its settings from `obj_watch = ObjWatch::new()..`",
    ),
];

/// The JetStream settings, and why each needs a stream.
const NEEDS_STREAM: [(&str, &str); 4] = [
    ("durable", "durable consumers belong to a JetStream stream"),
    ("pull_sub", "pull consumers fetch from a JetStream stream"),
    (
        "deliver_policy",
        "where delivery starts is a position in a JetStream stream",
    ),
    (
        "ack_policy",
        "only the messages of a JetStream stream are acknowledged",
    ),
];

pub(super) const GROUP_WITHOUT_KV_WATCH: &str =
    "`group` is a Key-Value consumer group and needs `kv_watch`; instances share a subject's \
     messages with `queue = \"..\"`, or a stream's with `durable = \"..\"`";

/// Every combination of the `written` options (see `Sorted::written`) that does not go
/// together, in the order of `KNOWN` (each list above follows it, and `group` comes before them).
pub(super) fn conflicts(written: &[Option<Span>; KNOWN.len()]) -> Vec<syn::Error> {
    let at = |name: &str| {
        KNOWN
            .iter()
            .position(|known| known.name == name)
            .and_then(|index| written[index])
    };
    let mut conflicts = Vec::new();
    if let Some(obj_watch) = at("obj_watch") {
        for (name, why) in NOT_WITH_OBJ_WATCH {
            if let Some(span) = at(name) {
                // Beside `kv_watch`, the error is at `obj_watch`: the attribute is read as a
                // Key-Value watch, whose settings are then checked as such.
                let (span, first, second) = if name == "kv_watch" {
                    (obj_watch, "obj_watch", name)
                } else {
                    (span, name, "obj_watch")
                };
                conflicts.push((
                    span,
                    format!("`{first}` cannot be used with `{second}`: {why}; remove one of them"),
                ));
            }
        }
        if at("kv_watch").is_none() {
            return into_errors(conflicts);
        }
    }
    if at("kv_watch").is_some() {
        for (name, why) in NOT_WITH_KV_WATCH {
            if let Some(span) = at(name) {
                conflicts.push((
                    span,
                    format!("`{name}` cannot be used with `kv_watch`: {why}; remove one of them"),
                ));
            }
        }
    } else {
        if let Some(span) = at("group") {
            conflicts.push((span, GROUP_WITHOUT_KV_WATCH.to_owned()));
        }
        if at("stream").is_none() {
            for (name, why) in NEEDS_STREAM {
                if let Some(span) = at(name) {
                    conflicts.push((span, format!("`{name}` needs `stream = \"..\"`: {why}")));
                }
            }
        }
    }
    into_errors(conflicts)
}

fn into_errors(conflicts: Vec<(Span, String)>) -> Vec<syn::Error> {
    conflicts
        .into_iter()
        .map(|(span, message)| syn::Error::new(span, message))
        .collect()
}
