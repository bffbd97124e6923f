//! The builder every channel goes through: channels, operations, messages and schemas, named
//! and referenced consistently, with one JSON Schema generator so that a type used by several
//! messages is defined once under `components/schemas`.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use super::names::{component_key, placeholders, reference, summary};
use crate::handler::describe::{BodyDoc, HandlerDoc};

/// Where the generator puts definitions: their `$ref`s resolve in the document.
const SCHEMAS_PATH: &str = "/components/schemas";

/// A message of a channel, before it is written.
pub(crate) struct MessageSpec<'a> {
    /// The key in the channel's `messages` (`SubscribeMessage`, `Message`, `Reply`).
    pub(crate) key: &'static str,
    /// The body, if the signature says what it is.
    pub(crate) body: Option<BodyDoc>,
    /// What a message carries besides its body: a headers schema.
    pub(crate) headers: Option<Value>,
    /// FastStream's `correlation_id` header, on messages of subjects.
    pub(crate) correlated: bool,
    /// Who reads or writes it, for the warning about a body without a schema.
    pub(crate) function: &'a str,
    /// What the message is when the signature does not say (an object's name, a key's value).
    pub(crate) fallback_description: Option<String>,
}

/// One channel with its operation.
pub(crate) struct ChannelSpec<'a> {
    pub(crate) id: String,
    /// `None`: unknown when the document is written (a request's reply subject).
    pub(crate) address: Option<String>,
    pub(crate) title: Option<&'a str>,
    pub(crate) description: Option<String>,
    /// The channel's `x-` fields.
    pub(crate) extensions: Map<String, Value>,
    pub(crate) messages: Vec<MessageSpec<'a>>,
}

/// The operation on a channel.
pub(crate) struct OperationSpec<'a> {
    pub(crate) id: String,
    /// `receive` or `send`.
    pub(crate) action: &'static str,
    pub(crate) doc: &'a HandlerDoc,
    /// The description when the doc comment has none.
    pub(crate) default_description: Option<String>,
    /// The NATS queue group, as the operation binding.
    pub(crate) queue: Option<&'a str>,
    /// The reply channel's id and its message key, for a request/reply handler.
    pub(crate) reply: Option<(String, &'static str)>,
}

/// The document's channels, operations and components as they are added.
pub(crate) struct DocumentBuilder {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    generator: SchemaGenerator,
    warnings: Vec<String>,
}

impl DocumentBuilder {
    pub(crate) fn new() -> Self {
        let settings = SchemaSettings::draft07().with(|settings| {
            settings.definitions_path = SCHEMAS_PATH.into();
        });
        Self {
            channels: Map::new(),
            operations: Map::new(),
            messages: Map::new(),
            generator: SchemaGenerator::new(settings),
            warnings: Vec::new(),
        }
    }

    /// `id`, or the first of `id:2`, `id:3`, ... not taken: two handlers of one name in
    /// different modules on one subject, or two titles alike, still get a channel each.
    pub(crate) fn unique_channel_id(&self, id: String) -> String {
        if !self.channels.contains_key(&id) {
            return id;
        }
        (2..)
            .map(|n| format!("{id}:{n}"))
            .find(|candidate| !self.channels.contains_key(candidate))
            .unwrap_or(id)
    }

    /// Whether a channel id is taken.
    pub(crate) fn has_channel(&self, id: &str) -> bool {
        self.channels.contains_key(id)
    }

    /// Adds `channel` and its messages.
    pub(crate) fn channel(&mut self, channel: ChannelSpec<'_>) {
        let mut messages = Map::new();
        for message in &channel.messages {
            let name = format!("{}:{}", channel.id, message.key);
            let key = self.unique_message_key(&name);
            let written = self.message(&name, message);
            self.messages.insert(key.clone(), written);
            messages.insert(
                message.key.to_owned(),
                json!({"$ref": reference(&["components", "messages", &key])}),
            );
        }
        let mut object = Map::new();
        object.insert(
            "address".into(),
            channel.address.clone().map_or(Value::Null, Value::String),
        );
        if let Some(title) = channel.title {
            object.insert("title".into(), title.into());
        }
        if let Some(description) = channel.description.filter(|text| !text.is_empty()) {
            object.insert("description".into(), description.into());
        }
        if let Some(address) = &channel.address {
            let names = placeholders(address);
            if !names.is_empty() {
                let parameters: Map<String, Value> = names
                    .iter()
                    .map(|name| {
                        (
                            (*name).to_owned(),
                            json!({"description": format!(
                                "the `{{{name}}}` token of the subject, a `Path` argument of the handler"
                            )}),
                        )
                    })
                    .collect();
                object.insert("parameters".into(), Value::Object(parameters));
            }
        }
        object.insert("messages".into(), Value::Object(messages));
        object.extend(channel.extensions);
        self.channels.insert(channel.id, Value::Object(object));
    }

    /// Adds the operation `operation` on the channel `channel` (added already).
    pub(crate) fn operation(&mut self, channel: &str, operation: OperationSpec<'_>) {
        let doc = operation.doc;
        let mut object = Map::new();
        object.insert("action".into(), operation.action.into());
        object.insert(
            "channel".into(),
            json!({"$ref": reference(&["channels", channel])}),
        );
        if let Some(title) = doc.title {
            object.insert("title".into(), title.into());
        }
        if let Some(summary) = summary(doc.docs) {
            object.insert("summary".into(), summary.into());
        }
        let description = doc
            .description
            .map(str::to_owned)
            .or_else(|| (!doc.docs.is_empty()).then(|| doc.docs.to_owned()))
            .or(operation.default_description);
        if let Some(description) = description {
            object.insert("description".into(), description.into());
        }
        let message_keys: Vec<Value> = self.channels[channel]["messages"]
            .as_object()
            .map(|messages| {
                messages
                    .keys()
                    .map(|key| json!({"$ref": reference(&["channels", channel, "messages", key])}))
                    .collect()
            })
            .unwrap_or_default();
        object.insert("messages".into(), Value::Array(message_keys));
        if let Some(queue) = operation.queue {
            object.insert(
                "bindings".into(),
                json!({"nats": {"queue": queue, "bindingVersion": "0.1.0"}}),
            );
        }
        if let Some((reply_channel, key)) = operation.reply {
            object.insert(
                "reply".into(),
                json!({
                    "channel": {"$ref": reference(&["channels", &reply_channel])},
                    "messages": [{"$ref": reference(&["channels", &reply_channel, "messages", key])}],
                }),
            );
        }
        self.operations.insert(operation.id, Value::Object(object));
    }

    fn unique_message_key(&self, name: &str) -> String {
        let base = component_key(name);
        let mut key = base.clone();
        let mut n = 2;
        while self.messages.contains_key(&key) {
            key = format!("{base}_{n}");
            n += 1;
        }
        key
    }

    fn message(&mut self, name: &str, message: &MessageSpec<'_>) -> Value {
        let mut object = Map::new();
        object.insert("name".into(), name.into());
        object.insert("title".into(), name.into());
        match message.body {
            Some(body) => {
                object.insert("contentType".into(), body.kind.content_type().into());
                let payload = match body.schema {
                    Some(schema) => schema(&mut self.generator).to_value(),
                    None => {
                        self.warnings.push(format!(
                            "`{}`: `Json<{}>` has no JSON Schema, so the AsyncAPI document \
                             describes its payload as untyped: derive `schemars::JsonSchema` \
                             (schemars 1.x) for it, or name a type with `schema = T`",
                            message.function, body.type_name
                        ));
                        object.insert("x-faststream-untyped".into(), body.type_name.into());
                        json!({"description": format!(
                            "JSON of `{}`, a type without a JSON Schema", body.type_name
                        )})
                    }
                };
                object.insert("payload".into(), payload);
            }
            None => {
                if let Some(description) = &message.fallback_description {
                    object.insert("description".into(), description.as_str().into());
                }
            }
        }
        if let Some(headers) = &message.headers {
            object.insert("headers".into(), headers.clone());
        }
        if message.correlated {
            object.insert(
                "correlationId".into(),
                json!({"location": "$message.header#/correlation_id"}),
            );
        }
        Value::Object(object)
    }

    /// The channels, operations and components, and the warnings met.
    pub(crate) fn finish(mut self) -> (Value, Value, Value, Vec<String>) {
        let definitions = self.generator.take_definitions(true);
        let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
        let mut renamed = Vec::new();
        for (name, schema) in definitions {
            let key = component_key(&name);
            if key != name {
                renamed.push((
                    reference(&["components", "schemas", &name]),
                    reference(&["components", "schemas", &key]),
                ));
            }
            schemas.insert(key, schema);
        }
        let mut components = Map::new();
        components.insert("messages".into(), Value::Object(self.messages));
        components.insert(
            "schemas".into(),
            Value::Object(schemas.into_iter().collect()),
        );
        let mut parts = (
            Value::Object(self.channels),
            Value::Object(self.operations),
            Value::Object(components),
        );
        if !renamed.is_empty() {
            for part in [&mut parts.0, &mut parts.1, &mut parts.2] {
                rename_refs(part, &renamed);
            }
        }
        (parts.0, parts.1, parts.2, self.warnings)
    }
}

/// Rewrites `$ref`s to schemas whose names a component key does not allow.
fn rename_refs(value: &mut Value, renamed: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "$ref" {
                    if let Value::String(target) = child {
                        if let Some((_, to)) = renamed.iter().find(|(from, _)| from == target) {
                            *target = to.clone();
                        }
                    }
                } else {
                    rename_refs(child, renamed);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rename_refs(item, renamed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str) -> ChannelSpec<'static> {
        ChannelSpec {
            id: id.to_owned(),
            address: Some("orders.{id}".to_owned()),
            title: None,
            description: None,
            extensions: Map::new(),
            messages: Vec::new(),
        }
    }

    #[test]
    fn ids_alike_get_a_channel_each() {
        let mut builder = DocumentBuilder::new();
        for _ in 0..3 {
            let id = builder.unique_channel_id("orders.{id}:Handle".to_owned());
            builder.channel(channel(&id));
        }
        let (channels, ..) = builder.finish();
        let ids: Vec<&String> = channels
            .as_object()
            .map(|c| c.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            ids,
            [
                "orders.{id}:Handle",
                "orders.{id}:Handle:2",
                "orders.{id}:Handle:3"
            ]
        );
        // Every placeholder of the address is a parameter.
        assert!(channels["orders.{id}:Handle"]["parameters"]["id"].is_object());
    }
}
