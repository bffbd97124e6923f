//! `Json<T>`: the value decoded as JSON.

use std::any::type_name;

use serde::de::value::{Error as ValueError, UnitDeserializer};
use serde::de::DeserializeOwned;

use super::{FromMessage, Message};
use crate::context::SubscriberContext;
use crate::error::Rejection;
use crate::kv::message::{KvMessage, Operation};

/// The value decoded from JSON into `T`.
///
/// `DEL`, `PURGE` and `EXPIRED` have no value. For them the handler is called only if `T` can be
/// absent: `Json<Option<U>>` receives `None`; any other `Json<T>` handler is skipped for them
/// (logged at debug level). A value that is not valid JSON for `T` is logged with serde's error,
/// and the watch goes on.
///
/// ```
/// use faststream_core::{subscriber, Json};
///
/// #[derive(serde::Deserialize)]
/// struct User {
///     name: String,
///     age: u32,
/// }
///
/// #[subscriber("users.*", kv_watch = "accounts")]
/// async fn on_user(Json(user): Json<User>) {
///     println!("{} is {}", user.name, user.age);
/// }
///
/// #[subscriber("users.*", kv_watch = "accounts")]
/// async fn on_user_or_delete(Json(user): Json<Option<User>>) {
///     match user {
///         Some(user) => println!("{} changed", user.name),
///         None => println!("a user was deleted"),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromMessage for Json<T> {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        match message.kv().map(KvMessage::operation) {
            None | Some(Operation::Put) => serde_json::from_slice(message.payload())
                .map(Json)
                .map_err(|error| {
                    Rejection::caused_by(
                        format_args!("value is not valid JSON for `{}`", type_name::<T>()),
                        error,
                    )
                }),
            Some(operation) => T::deserialize(UnitDeserializer::<ValueError>::new())
                .map(Json)
                .map_err(|_| {
                    Rejection::skip(format_args!(
                        "{operation} has no value for `Json<{}>` (take `Json<Option<..>>` to \
                         receive deletes)",
                        type_name::<T>()
                    ))
                }),
        }
    }
}
