//! What the macros' generated code reaches for (`::faststream_core::__private`). Not public
//! API: it changes with the macros, which are pinned to this exact version.

pub use inventory;

pub use faststream_rules::HookStage;

pub use crate::registry::{
    HookRegistration, PublisherRegistration, RouterRegistration, SubjectRegistration,
    SubscriberRegistration,
};

pub use crate::handler::describe;

use std::future::Future;

use crate::extract::{FromHookContext, FromMessage};
use crate::handler::{BoxedHandler, BoxedHook, IntoHandlerResult, IntoHookResult, PublishOutput};

/// What `#[publisher]` emits to check, at the handler's return type, that the handler returns
/// something to publish.
pub fn publishes<Out: PublishOutput>() {}

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
            $($arg: FromMessage + Send + 'static,)*
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
            Out: IntoHookResult,
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
        {
            BoxedHook::new::<F, ($($arg,)*)>(hook)
        }
    };
}

// Up to `faststream_rules::MAX_HANDLER_ARGS` (12) arguments, like `Handler` and `Hook`; a
// const assertion in `handler` ties the count to the constant.
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

/// What `#[subscriber("bucket", obj_watch = ..)]` registers as its watch: the Key-Value watch of
/// the store's metadata that `options` makes (see `ObjWatch::watch_of`).
pub fn obj_watch(bucket: &'static str, options: crate::ObjWatch) -> crate::KvWatch {
    options.watch_of(bucket.into())
}
