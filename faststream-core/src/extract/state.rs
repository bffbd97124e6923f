//! `State<T>`: the app's shared state, given with `App::with_state`.

use std::any::type_name;

use super::{FromHookContext, FromMessage, Message};
use crate::context::{AppContext, SubscriberContext};
use crate::error::Rejection;

/// Shared state given with [`App::with_state`](crate::App::with_state), cloned for each call
/// (wrap large or mutable state in an `Arc`).
///
/// ```
/// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
/// use faststream_core::{subscriber, State};
///
/// #[derive(Clone, Default)]
/// struct Counter(Arc<AtomicU64>);
///
/// #[subscriber("hits", kv_watch = "stats")]
/// async fn count(State(counter): State<Counter>) {
///     counter.0.fetch_add(1, Ordering::Relaxed);
/// }
/// // App::new(broker).with_state(Counter::default())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

fn missing_state<T>() -> String {
    format!(
        "no state of type `{}`: give it with `App::with_state`",
        type_name::<T>()
    )
}

impl<T: Clone + Send + Sync + 'static> FromMessage for State<T> {
    fn from_message(_: &Message, context: &SubscriberContext) -> Result<Self, Rejection> {
        Self::from_hook_context(&context.app)
    }

    fn check(context: &SubscriberContext) -> Result<(), String> {
        <Self as FromHookContext>::check(&context.app)
    }
}

impl<T: Clone + Send + Sync + 'static> FromHookContext for State<T> {
    fn from_hook_context(context: &AppContext) -> Result<Self, Rejection> {
        context
            .state::<T>()
            .cloned()
            .map(State)
            .ok_or_else(|| Rejection::new(missing_state::<T>()))
    }

    fn check(context: &AppContext) -> Result<(), String> {
        if context.has_state::<T>() {
            Ok(())
        } else {
            Err(missing_state::<T>())
        }
    }
}
