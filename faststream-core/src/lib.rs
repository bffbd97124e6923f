//! React to NATS JetStream Key-Value changes with annotated async functions.
//!
//! ```no_run
//! use faststream_core::{after_startup, subscriber, App, NatsBroker};
//!
//! #[after_startup]
//! async fn setup(broker: NatsBroker) -> anyhow::Result<()> {
//!     let key_value = broker.key_value("bucket").await?;
//!     key_value.put("key", "Hello!".into()).await?;
//!     Ok(())
//! }
//!
//! #[subscriber("key", kv_watch = "bucket")]
//! async fn handler(msg: String) {
//!     assert_eq!(msg, "Hello!");
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     App::new(NatsBroker::from_env()).run().await?;
//!     Ok(())
//! }
//! ```
//!
//! The parts, each in its own module: [`App`] (the lifecycle), [`NatsBroker`] (the connection
//! and the bucket cache), [`kv`] (bucket configuration, watch settings, messages and the watch
//! loop), [`extract`] (handler arguments), [`handler`] (calling async fns with extracted
//! arguments) and [`registry`] (what the macros register).

#![warn(missing_docs)]

mod app;
mod broker;
mod context;
mod error;
pub mod extract;
pub mod handler;
pub mod kv;
mod logging;
pub mod registry;
mod signal;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use app::App;
pub use broker::{NatsBroker, DEFAULT_NATS_URL};
pub use context::{AppContext, SubscriberContext};
pub use error::{Error, Result};
pub use extract::State;
pub use faststream_macros::{after_shutdown, after_startup, on_shutdown, on_startup, subscriber};
pub use kv::{KeyValue, KvMessage, KvWatch, Operation};
pub use registry::HookStage;

/// What the macros' generated code reaches for. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    pub use crate::registry::{HookRegistration, HookStage, SubscriberRegistration};

    use std::future::Future;

    use crate::extract::{FromHookContext, FromKvMessage};
    use crate::handler::{BoxedHandler, BoxedHook, IntoHandlerResult};

    /// `handlerN` and `hookN` box a function of `N` arguments. The macros call them with every
    /// argument type and the return type spelled out, as written by the user
    /// (`handler2::<String, KvMessage, (), _, _>(f)`), so an unsupported type fails a bound on
    /// one generic parameter and rustc reports it once, at that type, rather than as "not a
    /// handler" at the function.
    macro_rules! typed_constructors {
        ($handler:ident, $hook:ident; $($arg:ident),*) => {
            /// Boxes a `#[subscriber]` function; see `typed_constructors!`.
            pub fn $handler<$($arg,)* Out, F, Fut>(handler: F) -> BoxedHandler
            where
                $($arg: FromKvMessage + Send + 'static,)*
                Out: IntoHandlerResult,
                F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
                Fut: Future<Output = Out> + Send + 'static,
            {
                BoxedHandler::new::<F, ($($arg,)*)>(handler)
            }

            /// Boxes a lifecycle hook; see `typed_constructors!`.
            pub fn $hook<$($arg,)* Out, F, Fut>(hook: F) -> BoxedHook
            where
                $($arg: FromHookContext + Send + 'static,)*
                Out: IntoHandlerResult,
                F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
                Fut: Future<Output = Out> + Send + 'static,
            {
                BoxedHook::new::<F, ($($arg,)*)>(hook)
            }
        };
    }

    // Up to 12 arguments, like `Handler` and `Hook` (the macros reject more).
    typed_constructors!(handler0, hook0;);
    typed_constructors!(handler1, hook1; A1);
    typed_constructors!(handler2, hook2; A1, A2);
    typed_constructors!(handler3, hook3; A1, A2, A3);
    typed_constructors!(handler4, hook4; A1, A2, A3, A4);
    typed_constructors!(handler5, hook5; A1, A2, A3, A4, A5);
    typed_constructors!(handler6, hook6; A1, A2, A3, A4, A5, A6);
    typed_constructors!(handler7, hook7; A1, A2, A3, A4, A5, A6, A7);
    typed_constructors!(handler8, hook8; A1, A2, A3, A4, A5, A6, A7, A8);
    typed_constructors!(handler9, hook9; A1, A2, A3, A4, A5, A6, A7, A8, A9);
    typed_constructors!(handler10, hook10; A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
    typed_constructors!(handler11, hook11; A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
    typed_constructors!(handler12, hook12; A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
}
