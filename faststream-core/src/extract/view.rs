//! `KvView<T>` as a handler or hook argument: the view the app declared for `T`, given to a
//! handler once it has passed the entry being handled, when it views the same bucket.

use std::any::type_name;

use super::{Extraction, FromHookContext, FromMessage, Message};
use crate::context::{AppContext, SubscriberContext};
use crate::error::Rejection;
use crate::kv::view::KvView;

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
/// When the view is of the bucket the entry came from, the handler is called once the view has
/// passed the entry: it holds the entry's key at the entry's revision or a later one, and every
/// key it views as it was at that point of the bucket's history, or later. That costs nothing
/// when the view is already there; a view of other keys of the bucket learns how far it must
/// read with one request (shared by the calls waiting meanwhile). A view that does not get
/// there within its watch timeout (`KvViewOptions::timeout`, 5 s by default) fails the call
/// with [`ViewBehind`](crate::kv::ViewBehind) as the cause (a consumer group retries it);
/// `Option<KvView<T>>` is `None` then instead.
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

    fn extract(message: &Message, context: &SubscriberContext) -> Extraction<Self> {
        let view = match Self::from_message(message, context) {
            Ok(view) => view,
            Err(rejection) => return Extraction::Ready(Err(rejection)),
        };
        let Some(entry) = message.kv() else {
            return Extraction::Ready(Ok(view));
        };
        let position = entry.revision();
        if entry.bucket() != view.bucket() || view.has_passed(position) {
            return Extraction::Ready(Ok(view));
        }
        let key = entry.key().to_owned();
        Extraction::Pending(Box::pin(async move {
            match view.wait_until_passed(position, &key).await {
                Ok(()) => Ok(view),
                Err(behind) => Err(Rejection::caused_by(
                    format!(
                        "`KvView<{}>` did not catch up with the entry",
                        type_name::<T>()
                    ),
                    behind,
                )),
            }
        }))
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
