//! The one type-erasure layer: a handler or hook of any argument types, boxed behind one
//! signature for the registry. Public types in a private module: the registrations the macros
//! make hold them, but no user can name them.

use std::fmt;
use std::sync::Arc;

use super::{Handler, HandlerFuture, Hook, HookFuture};
use crate::context::{AppContext, SubscriberContext};
use crate::extract::Message;

/// A handler's call with its argument types erased.
type ErasedCall = dyn Fn(&Message, &SubscriberContext) -> HandlerFuture + Send + Sync;

/// A handler with its argument types erased, as stored in the registry: the call, boxed, and
/// the argument checks, which need no handler value.
#[derive(Clone)]
pub struct BoxedHandler {
    call: Arc<ErasedCall>,
    check: fn(&SubscriberContext) -> Vec<String>,
}

impl BoxedHandler {
    /// Erases a handler's argument types.
    pub fn new<H: Handler<Args>, Args: 'static>(handler: H) -> Self {
        Self {
            call: Arc::new(move |message, context| handler.call(message, context)),
            check: H::check,
        }
    }

    /// Extracts the arguments (now; a panicking extractor panics here) and returns the call.
    pub(crate) fn call(&self, message: &Message, context: &SubscriberContext) -> HandlerFuture {
        (self.call)(message, context)
    }

    pub(crate) fn check(&self, context: &SubscriberContext) -> Vec<String> {
        (self.check)(context)
    }
}

impl fmt::Debug for BoxedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedHandler").finish_non_exhaustive()
    }
}

/// A hook with its argument types erased, as stored in the registry.
#[derive(Clone)]
pub struct BoxedHook {
    call: Arc<dyn Fn(AppContext) -> HookFuture + Send + Sync>,
    check: fn(&AppContext) -> Vec<String>,
}

impl BoxedHook {
    /// Erases a hook's argument types.
    pub fn new<H: Hook<Args>, Args: 'static>(hook: H) -> Self {
        Self {
            call: Arc::new(move |context| hook.call(context)),
            check: H::check,
        }
    }

    pub(crate) fn call(&self, context: AppContext) -> HookFuture {
        (self.call)(context)
    }

    pub(crate) fn check(&self, context: &AppContext) -> Vec<String> {
        (self.check)(context)
    }
}

impl fmt::Debug for BoxedHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedHook").finish_non_exhaustive()
    }
}
