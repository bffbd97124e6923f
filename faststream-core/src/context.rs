//! What extractors read from besides the message: the broker, the state, the subscriber.

use std::sync::Arc;

use faststream_rules::KeyPattern;

use crate::broker::NatsBroker;
use crate::state::StateMap;

/// The application-wide part of every handler's and hook's context.
#[derive(Debug, Clone)]
pub struct AppContext {
    pub(crate) broker: NatsBroker,
    pub(crate) state: Arc<StateMap>,
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
}

/// The context of one subscriber, shared by all the messages it handles.
#[derive(Debug)]
pub struct SubscriberContext {
    pub(crate) app: AppContext,
    pub(crate) name: Arc<str>,
    pub(crate) pattern: KeyPattern,
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

    /// The key pattern the subscriber watches, as written.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }
}
