//! What extractors read from besides the message: the broker, the state, the views, the
//! subscriber.

use std::sync::{Arc, OnceLock};

use faststream_rules::KeyPattern;

use crate::broker::NatsBroker;
use crate::kv::key_value::KeyValue;
use crate::kv::view::KvView;
use crate::object::store::ObjectStore;
use crate::type_map::TypeMap;

/// A declared view's place in [`AppContext`]'s views, filled once connected, before any watch
/// starts, so every handler call finds its view caught up. Declared before start-up, so an
/// argument asking for a view nobody declared is found before connecting.
pub(crate) type ViewSlot<T> = OnceLock<KvView<T>>;

/// The application-wide part of every handler's and hook's context.
#[derive(Debug, Clone)]
pub struct AppContext {
    pub(crate) broker: NatsBroker,
    /// Given with `App::with_state`, one value per type.
    pub(crate) state: Arc<TypeMap>,
    /// Declared with `App::with_kv_view`: a [`ViewSlot`] per value type.
    pub(crate) views: Arc<TypeMap>,
    /// `false` for `on_startup` hooks, which run before the views start.
    pub(crate) views_started: bool,
}

impl AppContext {
    /// The application's broker.
    pub fn broker(&self) -> &NatsBroker {
        &self.broker
    }

    /// The state value of type `T` given with [`App::with_state`](crate::App::with_state).
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// Whether a state value of type `T` was given.
    pub fn has_state<T: 'static>(&self) -> bool {
        self.state.contains::<T>()
    }

    /// The view of `T` declared with [`App::with_kv_view`](crate::App::with_kv_view), once
    /// started (not in `on_startup` hooks).
    pub fn kv_view<T: Send + Sync + 'static>(&self) -> Option<&KvView<T>> {
        self.views_started
            .then(|| self.views.get::<ViewSlot<T>>()?.get())
            .flatten()
    }

    /// Whether a view of `T` was declared with [`App::with_kv_view`](crate::App::with_kv_view).
    pub fn declares_kv_view<T: 'static>(&self) -> bool {
        self.views.contains::<ViewSlot<T>>()
    }

    /// Whether the declared views are started: `false` in `on_startup` hooks.
    pub fn kv_views_started(&self) -> bool {
        self.views_started
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// Changes of a Key-Value bucket.
    KeyValue,
    /// Changes of an object store (`obj_watch`).
    Object,
    /// Messages of a core subject.
    Subject,
    /// Deliveries of a JetStream stream.
    Stream,
}

/// The context of one subscriber, shared by all the messages it handles.
#[derive(Debug)]
pub struct SubscriberContext {
    pub(crate) app: AppContext,
    pub(crate) name: Arc<str>,
    pub(crate) pattern: KeyPattern,
    pub(crate) kind: MessageKind,
    /// The bucket or object store watched; `None` for a subject subscriber.
    pub(crate) bucket: Option<Arc<str>>,
    /// The bucket a Key-Value subscriber watches, once its watch has started: the `KeyValue`
    /// argument.
    pub(crate) key_value: OnceLock<KeyValue>,
    /// The object store an object subscriber watches, once its watch has started: the
    /// `ObjectStore` argument.
    pub(crate) object_store: OnceLock<ObjectStore>,
}

impl SubscriberContext {
    /// The application-wide context.
    pub fn app(&self) -> &AppContext {
        &self.app
    }

    /// The subscriber's path, e.g. `my_service::on_change`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key or subject pattern the subscriber watches, as written (with its router's
    /// prefix).
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    /// What the subscriber receives: Key-Value changes, core messages or stream deliveries.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The bucket (or object store) the subscriber watches; `None` for a subject subscriber.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }
}
