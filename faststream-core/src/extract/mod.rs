//! Extractors: the argument types a handler or hook may take.
//!
//! A `#[subscriber]` handler's arguments each implement [`FromMessage`], built from the
//! [`Message`] received; a hook's arguments each implement [`FromHookContext`]. Implement them
//! for your own types to add extractors. `Option<T>` and `Result<T, Rejection>` of any
//! extractor `T` let a handler be called even when `T` cannot be built from a message.

use std::any::type_name;

use bytes::Bytes;

pub(crate) mod json;
mod message;
mod optional;
pub(crate) mod path;
pub(crate) mod state;

pub use message::Message;

use crate::error::Rejection;

use crate::broker::NatsBroker;
use crate::context::{AppContext, SubscriberContext};
use crate::kv::message::KvMessage;
use crate::kv::view::KvView;

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
    note = "handler arguments may be `String`, `Vec<u8>`, `bytes::Bytes`, `Json<T>`, `Path<T>`, `KvMessage`, `NatsBroker`, `State<T>` or `KvView<T>`, `Option<T>` or `Result<T, Rejection>` of these, or a type implementing `faststream_core::extract::FromMessage`"
)]
pub trait FromMessage: Sized {
    /// Builds the argument from the message; an `Err` skips the handler for this message.
    fn from_message(message: &Message, context: &SubscriberContext) -> Result<Self, Rejection>;

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

fn missing_view<T>() -> String {
    format!(
        "no view of `{}`: declare it with `App::with_kv_view`",
        type_name::<T>()
    )
}

fn view_not_started<T>() -> String {
    format!(
        "`KvView<{}>` is not available in on_startup hooks: views start after connecting (take \
         it in an after_startup hook)",
        type_name::<T>()
    )
}

/// The live view of `T` declared with [`App::with_kv_view`](crate::App::with_kv_view), caught up
/// before any handler runs. One view per value type, as with [`State<T>`](crate::State).
///
/// ```
/// use faststream_core::{subscriber, KvView};
///
/// #[derive(serde::Deserialize)]
/// struct Flag {
///     enabled: bool,
/// }
///
/// #[subscriber("orders.*", kv_watch = "shop")]
/// async fn on_order(order: String, flags: KvView<Flag>) {
///     if flags.get("orders.audit").is_some_and(|flag| flag.enabled) {
///         println!("audit: {order}");
///     }
/// }
/// // App::new(broker).with_kv_view::<Flag>("flags", ">")
/// ```
impl<T: Send + Sync + 'static> FromMessage for KvView<T> {
    fn from_message(_: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        Self::from_hook_context(&context.app)
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        <Self as FromHookContext>::check(&context.app)
    }
}

impl<T: Send + Sync + 'static> FromHookContext for KvView<T> {
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection> {
        match context.kv_view::<T>() {
            Some(view) => Ok(view.clone()),
            None => Err(Rejection::new(
                <Self as FromHookContext>::check(context)
                    .err()
                    .unwrap_or_else(view_not_started::<T>),
            )),
        }
    }

    fn check(context: &AppContext) -> Result<(), String> {
        if !context.declares_kv_view::<T>() {
            Err(missing_view::<T>())
        } else if !context.kv_views_started() {
            Err(view_not_started::<T>())
        } else {
            Ok(())
        }
    }
}
