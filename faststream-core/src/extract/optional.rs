//! `Option<T>` and `Result<T, Rejection>` of any extractor: the handler is called whether or
//! not `T` can be built from the message, and decides itself what a missing `T` means.

use super::{Extraction, FromHookContext, FromMessage, Message};
use crate::context::{AppContext, SubscriberContext};
use crate::error::Rejection;

/// `None` when `T` cannot be built from this message (a value that does not decode, a
/// deletion for `Json<T>`); the handler is called either way. `T`'s start-up check still
/// applies: an `Option<State<T>>` needs the state given.
///
/// ```
/// use faststream_core::{subscriber, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order {
///     id: u64,
/// }
///
/// #[subscriber("orders.*", kv_watch = "shop")]
/// async fn on_order(order: Option<Json<Order>>, raw: String) {
///     match order {
///         Some(Json(order)) => println!("order {}", order.id),
///         None => println!("not an order: {raw}"),
///     }
/// }
/// ```
impl<T: FromMessage + Send + 'static> FromMessage for Option<T> {
    fn from_message(message: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(T::from_message(message, context).ok())
    }

    /// `None` as well when `T`'s wait fails (a view that did not catch up with the message).
    fn extract(message: &Message, context: &SubscriberContext) -> Extraction<Self> {
        T::extract(message, context).map(|built| Ok(built.ok()))
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        T::check(context)
    }
}

/// `Err` with the reason when `T` cannot be built from this message; the handler is called
/// either way.
///
/// ```
/// use faststream_core::error::Rejection;
/// use faststream_core::{subscriber, Json};
///
/// #[subscriber("orders.*", kv_watch = "shop")]
/// async fn on_order(order: Result<Json<serde_json::Value>, Rejection>) {
///     if let Err(rejection) = order {
///         eprintln!("skipping a bad order: {rejection}");
///     }
/// }
/// ```
impl<T: FromMessage + Send + 'static> FromMessage for Result<T, Rejection> {
    fn from_message(message: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(T::from_message(message, context))
    }

    /// `Err` as well when `T`'s wait fails (a view that did not catch up with the message).
    fn extract(message: &Message, context: &SubscriberContext) -> Extraction<Self> {
        T::extract(message, context).map(Ok)
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        T::check(context)
    }
}

/// `None` when `T` cannot be built; as for handlers, `T`'s start-up check still applies.
impl<T: FromHookContext> FromHookContext for Option<T> {
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection> {
        Ok(T::from_hook_context(context).ok())
    }

    fn check(context: &AppContext) -> Result<(), String> {
        T::check(context)
    }
}

/// `Err` with the reason when `T` cannot be built; `T`'s start-up check still applies.
impl<T: FromHookContext> FromHookContext for Result<T, Rejection> {
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection> {
        Ok(T::from_hook_context(context))
    }

    fn check(context: &AppContext) -> Result<(), String> {
        T::check(context)
    }
}
