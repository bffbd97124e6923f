//! Extractors: the argument types a handler or hook may take.
//!
//! A `#[subscriber]` handler's arguments each implement [`FromMessage`], built from the
//! [`Message`] received; a hook's arguments each implement [`FromHookContext`]. Implement them
//! for your own types to add extractors. `Option<T>` and `Result<T, Rejection>` of any
//! extractor `T` let a handler be called even when `T` cannot be built from a message.

use bytes::Bytes;

mod extraction;
pub(crate) mod json;
mod message;
mod optional;
pub(crate) mod path;
pub(crate) mod state;
mod view;

pub use extraction::{Extraction, PendingArgument};
pub use message::Message;

use crate::error::Rejection;

use crate::broker::NatsBroker;
use crate::context::{AppContext, MessageKind, SubscriberContext};
use crate::kv::key_value::KeyValue;
use crate::kv::message::KvMessage;
use crate::nats::NatsMessage;
use crate::object::store::ObjectStore;
use crate::object::ObjMessage;

/// A type a `#[subscriber]` handler can take as an argument, built from each message.
///
/// ```
/// use faststream_core::error::Rejection;
/// use faststream_core::extract::{FromMessage, Message};
/// use faststream_core::SubscriberContext;
///
/// /// The payload's length, as an argument.
/// struct PayloadLen(usize);
///
/// impl FromMessage for PayloadLen {
///     fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
///         Ok(PayloadLen(message.payload().len()))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a `#[subscriber]` handler",
    label = "not an extractor",
    note = "handler arguments may be `String`, `Vec<u8>`, `bytes::Bytes`, `Json<T>`, `Path<T>`, `KvMessage`, `NatsMessage`, `NatsBroker`, `State<T>` or `KvView<T>`, `Option<T>` or `Result<T, Rejection>` of these, or a type implementing `faststream_core::extract::FromMessage`"
)]
pub trait FromMessage: Sized {
    /// Builds the argument from the message; an `Err` skips the handler for this message.
    fn from_message(message: &Message, context: &SubscriberContext) -> Result<Self, Rejection>;

    /// How a handler call builds the argument: [`from_message`](Self::from_message), at once
    /// (the default). An argument reading state that another watch keeps may instead wait, inside
    /// the call and before the function runs, until that state has caught up with the message:
    /// [`KvView<T>`](crate::KvView) of the bucket the message came from does. Override it only
    /// for such arguments; [`Extraction`] says how a wait that fails ends the call.
    fn extract(message: &Message, context: &SubscriberContext) -> Extraction<Self> {
        Extraction::Ready(Self::from_message(message, context))
    }

    /// Checked once when the app starts, before connecting: describe anything this extractor
    /// needs that is missing (for example state never given). The default needs nothing.
    fn check(context: &SubscriberContext) -> Result<(), String> {
        let _ = context;
        Ok(())
    }
}

/// A type a lifecycle hook can take as an argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a lifecycle hook",
    label = "not a hook argument",
    note = "hook arguments may be `NatsBroker`, `State<T>` or `KvView<T>`, `Option<T>` or `Result<T, Rejection>` of these, or a type implementing `faststream_core::extract::FromHookContext`"
)]
pub trait FromHookContext: Sized {
    /// Builds the argument; an `Err` fails the hook with that reason.
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection>;

    /// Checked once when the app starts, before connecting; see [`FromMessage::check`].
    fn check(context: &AppContext) -> Result<(), String> {
        let _ = context;
        Ok(())
    }
}

/// The payload as UTF-8 text (empty for `DEL`, `PURGE` and `EXPIRED`). Non-UTF-8 values are rejected.
impl FromMessage for String {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        std::str::from_utf8(message.payload())
            .map(str::to_owned)
            .map_err(|error| Rejection::caused_by("value is not UTF-8 text", error))
    }
}

/// The payload's bytes, copied (empty for `DEL`, `PURGE` and `EXPIRED`).
impl FromMessage for Vec<u8> {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(message.payload().to_vec())
    }
}

/// The payload's bytes, shared without copying (empty for `DEL`, `PURGE` and `EXPIRED`).
impl FromMessage for Bytes {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(message.payload().clone())
    }
}

/// The whole Key-Value entry: bucket, key, value, revision, operation, ...
impl FromMessage for KvMessage {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        message
            .kv()
            .cloned()
            .ok_or_else(|| Rejection::new("the message is not a Key-Value change"))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        match context.kind() {
            MessageKind::KeyValue => Ok(()),
            MessageKind::Object => Err("`KvMessage` is a Key-Value change, and this \
                 subscriber watches an object store: take `ObjMessage` instead"
                .to_owned()),
            _ => Err(
                "`KvMessage` is a Key-Value change, and this subscriber listens on a \
                      subject: take `NatsMessage` instead"
                    .to_owned(),
            ),
        }
    }
}

/// The whole message from a subject or a stream: subject, headers, reply subject, JetStream
/// metadata, and the means to settle a JetStream delivery under `AckPolicy::Manual`.
impl FromMessage for NatsMessage {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        message
            .nats()
            .cloned()
            .ok_or_else(|| Rejection::new("the message is not from a subject or a stream"))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        match context.kind() {
            MessageKind::KeyValue => Err("`NatsMessage` is a message from a subject or a \
                 stream, and this subscriber watches a Key-Value bucket: take `KvMessage` \
                 instead"
                .to_owned()),
            MessageKind::Object => Err("`NatsMessage` is a message from a subject or a \
                 stream, and this subscriber watches an object store: take `ObjMessage` \
                 instead"
                .to_owned()),
            _ => Ok(()),
        }
    }
}

/// The change of an object store: name, size, digest, deleted, ... (an `obj_watch`
/// subscriber's only).
impl FromMessage for ObjMessage {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        message
            .obj()
            .cloned()
            .ok_or_else(|| Rejection::new("the message is not a change of an object store"))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        match context.kind() {
            MessageKind::Object => Ok(()),
            MessageKind::KeyValue => Err("`ObjMessage` is a change of an object store, and \
                 this subscriber watches a Key-Value bucket: take `KvMessage` instead"
                .to_owned()),
            _ => Err(
                "`ObjMessage` is a change of an object store, and this subscriber \
                 listens on a subject: take `NatsMessage` instead"
                    .to_owned(),
            ),
        }
    }
}

/// The bucket the subscriber watches (a Key-Value subscriber's only), to write back to it:
/// see [`KeyValue`]'s writes at a revision.
impl FromMessage for KeyValue {
    fn from_message(_: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        context
            .key_value
            .get()
            .cloned()
            .ok_or_else(|| Rejection::new("the subscriber's bucket is not open yet"))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        match context.kind() {
            MessageKind::KeyValue => Ok(()),
            _ => Err(
                "`KeyValue` is the bucket a Key-Value subscriber watches, and this \
                 subscriber watches none: take `NatsBroker` and call `key_value(..)`"
                    .to_owned(),
            ),
        }
    }
}

/// The object store the subscriber watches (an `obj_watch` subscriber's only), to read the
/// version a change announced with [`ObjectStore::get_version`].
impl FromMessage for ObjectStore {
    fn from_message(_: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        context
            .object_store
            .get()
            .cloned()
            .ok_or_else(|| Rejection::new("the subscriber's object store is not open yet"))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        match context.kind() {
            MessageKind::Object => Ok(()),
            _ => Err(
                "`ObjectStore` is the store an `obj_watch` subscriber watches, and this \
                 subscriber watches none: take `NatsBroker` and call `object_storage(..)`"
                    .to_owned(),
            ),
        }
    }
}

/// The application's broker, connected.
impl FromMessage for NatsBroker {
    fn from_message(_: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(context.app.broker.clone())
    }
}

/// The application's broker (not yet connected in `on_startup` hooks).
impl FromHookContext for NatsBroker {
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection> {
        Ok(context.broker.clone())
    }
}
