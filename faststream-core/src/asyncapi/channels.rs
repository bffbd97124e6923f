//! One channel and operation per subscriber, publisher and declared view, named as FastStream
//! names them (`<subject>:<CallName>`, `<subject>:<CallName>Subscribe`, `<subject>:Publisher`),
//! with the Key-Value, object and stream settings as `x-faststream-*` fields.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::document::{ChannelSpec, DocumentBuilder, MessageSpec, OperationSpec};
use super::names::call_name;
use super::ViewDoc;
use crate::handler::describe::HandlerDoc;
use crate::kv::options::KvWatch;
use crate::registry::{PublisherSpec, SubjectSpec, SubscriberSpec};

/// What every Key-Value change carries besides its value.
const KV_CARRIES: [&str; 6] = [
    "key",
    "value",
    "operation (PUT, DEL, PURGE)",
    "revision",
    "created",
    "delta",
];

/// What every object change carries (the body is the object's name).
const OBJ_CARRIES: [&str; 9] = [
    "name",
    "size",
    "chunks",
    "digest",
    "modified",
    "deleted",
    "description",
    "headers",
    "metadata",
];

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The headers of a Key-Value change: the server's `KV-Operation`, absent on a put.
fn kv_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            "KV-Operation": {
                "type": "string",
                "enum": ["DEL", "PURGE"],
                "description": "set by the server on a delete or a purge; absent on a put"
            }
        }
    })
}

/// The channel id a title or FastStream's `<pattern>:<CallName>` gives.
fn channel_id(doc: &HandlerDoc, pattern: &str, function: &str) -> String {
    doc.title.map_or_else(
        || format!("{pattern}:{}", call_name(function)),
        str::to_owned,
    )
}

/// FastStream's operation id: the title (when it is the channel's id: unique), or the channel
/// id followed by `Subscribe`.
fn subscribe_id(doc: &HandlerDoc, channel: &str) -> String {
    match doc.title {
        Some(title) if title == channel => title.to_owned(),
        _ => format!("{channel}Subscribe"),
    }
}

fn description(doc: &HandlerDoc) -> Option<String> {
    doc.description
        .map(str::to_owned)
        .or_else(|| (!doc.docs.is_empty()).then(|| doc.docs.to_owned()))
}

fn kv_extension(watch: &KvWatch, key: &str) -> Value {
    let mut kv = json!({
        "bucket": watch.bucket(),
        "keys": key,
        "includeHistory": watch.include_history,
        "ignoreDeletes": watch.ignore_deletes,
        "headersOnly": watch.headers_only || watch.meta_only,
        "updatesOnly": watch.updates_only,
        "maxWorkers": watch.max_workers,
        "carries": KV_CARRIES,
    });
    if let Some(group) = watch.group_settings() {
        kv["group"] = json!({
            "name": group.name(),
            "partitions": group.partitions,
            "maxAttempts": group.max_attempts,
            "backoffMs": group.backoff.iter().copied().map(millis).collect::<Vec<_>>(),
            "callTimeoutMs": millis(group.call_timeout),
            "sessionTimeoutMs": millis(group.session_timeout),
            "inFlight": group.in_flight,
        });
    }
    kv
}

fn obj_extension(watch: &KvWatch) -> Value {
    json!({
        "store": watch.bucket(),
        "ignoreDeletes": watch.ignore_deletes,
        "includeHistory": watch.include_history,
        "updatesOnly": watch.updates_only,
        "maxWorkers": watch.max_workers,
        "carries": OBJ_CARRIES,
    })
}

/// A Key-Value or object store subscriber.
pub(crate) fn watch(builder: &mut DocumentBuilder, spec: &SubscriberSpec, doc: &HandlerDoc) {
    let watch = &spec.kv_watch;
    let objects = watch.is_objects();
    let pattern = if objects { watch.bucket() } else { &spec.key };
    let id = builder.unique_channel_id(channel_id(doc, pattern, &spec.name));
    let mut extensions = Map::new();
    let (address, headers, fallback) = if objects {
        extensions.insert("x-faststream-obj".into(), obj_extension(watch));
        (
            format!("$O.{}.M.>", watch.bucket()),
            None,
            "the object's name",
        )
    } else {
        extensions.insert("x-faststream-kv".into(), kv_extension(watch, &spec.key));
        (
            format!("$KV.{}.{}", watch.bucket(), spec.key),
            Some(kv_headers()),
            "the key's value, which the handler does not read",
        )
    };
    builder.channel(ChannelSpec {
        id: id.clone(),
        address: Some(address),
        title: doc.title,
        description: description(doc),
        extensions,
        messages: vec![MessageSpec {
            key: "SubscribeMessage",
            body: doc.payload,
            headers,
            correlated: false,
            function: &spec.name,
            fallback_description: Some(fallback.to_owned()),
        }],
    });
    let what = if objects {
        format!("Each change of the objects of store `{}`", watch.bucket())
    } else {
        format!(
            "Each change of the keys `{}` of bucket `{}`",
            spec.key,
            watch.bucket()
        )
    };
    builder.operation(
        &id,
        OperationSpec {
            id: subscribe_id(doc, &id),
            action: "receive",
            doc,
            default_description: Some(format!("{what}, handled by `{}`.", spec.name)),
            queue: None,
            reply: None,
        },
    );
}

/// A subject or stream subscriber, with its reply when it answers requests.
pub(crate) fn subject(builder: &mut DocumentBuilder, spec: &SubjectSpec, doc: &HandlerDoc) {
    let id = builder.unique_channel_id(channel_id(doc, &spec.subject, &spec.function));
    let subscription = &spec.subscription;
    let mut extensions = Map::new();
    if let Some(stream) = subscription.jstream() {
        let mut fields = json!({
            "stream": stream.name,
            "ackPolicy": format!("{:?}", subscription.ack_policy),
            "deliverPolicy": format!("{:?}", subscription.deliver_policy),
            "maxWorkers": subscription.max_workers,
        });
        if let Some(durable) = subscription.durable_name() {
            fields["durable"] = durable.into();
        }
        fields["pullBatch"] = subscription.pull.batch_size().into();
        extensions.insert("x-faststream-stream".into(), fields);
    }
    builder.channel(ChannelSpec {
        id: id.clone(),
        address: Some(spec.subject.to_string()),
        title: doc.title,
        description: description(doc),
        extensions,
        messages: vec![MessageSpec {
            key: "SubscribeMessage",
            body: doc.payload,
            headers: None,
            correlated: true,
            function: &spec.function,
            fallback_description: Some("a message whose body the handler does not read".to_owned()),
        }],
    });
    // A core message's reply subject is where a request waits; a stream's deliveries are
    // published, not requested (their reply subject is the acknowledgement's).
    let reply = match doc.output {
        Some(body) if !subscription.no_reply && subscription.jstream().is_none() => {
            let reply_id = builder.unique_channel_id(format!("{id}:Reply"));
            builder.channel(ChannelSpec {
                id: reply_id.clone(),
                address: None,
                title: None,
                description: Some(format!(
                    "The reply to a request on `{}`: sent to the request's reply subject",
                    spec.subject
                )),
                extensions: Map::new(),
                messages: vec![MessageSpec {
                    key: "ReplyMessage",
                    body: Some(body),
                    headers: None,
                    correlated: true,
                    function: &spec.function,
                    fallback_description: None,
                }],
            });
            Some((reply_id, "ReplyMessage"))
        }
        _ => None,
    };
    builder.operation(
        &id,
        OperationSpec {
            id: subscribe_id(doc, &id),
            action: "receive",
            doc,
            default_description: Some(format!(
                "Each message of `{}`, handled by `{}`.",
                spec.subject, spec.function
            )),
            queue: subscription.queue.as_deref(),
            reply,
        },
    );
}

/// A `#[publisher]`: what its handler returns, sent to its subject.
pub(crate) fn publisher(builder: &mut DocumentBuilder, spec: &PublisherSpec, doc: &HandlerDoc) {
    let default_id = format!("{}:Publisher", spec.subject);
    let id = builder.unique_channel_id(match doc.title {
        Some(title) => title.to_owned(),
        // Several handlers publishing to one subject: FastStream's name, then the handler's.
        None if builder.has_channel(&default_id) => {
            format!("{}:{}:Publisher", spec.subject, call_name(&spec.handler))
        }
        None => default_id,
    });
    let mut extensions = Map::new();
    if let Some(stream) = &spec.publisher.stream {
        extensions.insert("x-faststream-stream".into(), json!({"stream": stream}));
    }
    builder.channel(ChannelSpec {
        id: id.clone(),
        address: Some(spec.subject.to_string()),
        title: doc.title,
        description: doc.description.map(str::to_owned),
        extensions,
        messages: vec![MessageSpec {
            key: "Message",
            body: doc.output,
            headers: None,
            correlated: true,
            function: &spec.handler,
            fallback_description: None,
        }],
    });
    let channel = id.clone();
    builder.operation(
        &channel,
        OperationSpec {
            id,
            action: "send",
            doc: &HandlerDoc {
                // The handler's doc comment describes what it receives, not what it sends.
                docs: "",
                ..doc.clone()
            },
            default_description: Some(format!(
                "What `{}` returns, published to `{}`.",
                spec.handler, spec.subject
            )),
            queue: None,
            reply: None,
        },
    );
}

/// A view the app declares: it receives every change of its keys into a map.
pub(crate) fn view(builder: &mut DocumentBuilder, view: &ViewDoc) {
    let short_type = view
        .value_type
        .rsplit("::")
        .next()
        .unwrap_or(view.value_type);
    let id = builder.unique_channel_id(format!("{}:View:{short_type}", view.pattern));
    let mut kv = json!({
        "bucket": view.bucket,
        "keys": view.pattern,
        "includeHistory": false,
        "ignoreDeletes": false,
        "headersOnly": false,
        "updatesOnly": false,
        "carries": KV_CARRIES,
        "view": {"valueType": view.value_type},
    });
    kv["maxWorkers"] = 1.into();
    let mut extensions = Map::new();
    extensions.insert("x-faststream-kv".into(), kv);
    let doc = HandlerDoc::unknown();
    builder.channel(ChannelSpec {
        id: id.clone(),
        address: Some(format!("$KV.{}.{}", view.bucket, view.pattern)),
        title: None,
        description: Some(format!(
            "The live view `KvView<{}>`: the latest value of each key `{}` of bucket `{}`, \
             kept in memory and read by handlers",
            view.value_type, view.pattern, view.bucket
        )),
        extensions,
        messages: vec![MessageSpec {
            key: "SubscribeMessage",
            body: None,
            headers: Some(kv_headers()),
            correlated: false,
            function: view.value_type,
            fallback_description: Some(format!(
                "the key's value, decoded as `{}` by the view",
                view.value_type
            )),
        }],
    });
    builder.operation(
        &id,
        OperationSpec {
            id: format!("{id}Subscribe"),
            action: "receive",
            doc: &doc,
            default_description: Some(format!(
                "Each change of the keys `{}`, applied to the view.",
                view.pattern
            )),
            queue: None,
            reply: None,
        },
    );
}
