//! Handlers: async fns whose arguments are extractors, made callable with one boxed signature.
//!
//! [`Handler`] and [`Hook`] are implemented for functions of up to 12 arguments by
//! `all_the_tuples!`, so any `async fn(A, B, ...)` whose arguments are extractors is one.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;

use crate::error::HandlerError;

use crate::context::{AppContext, SubscriberContext};
use crate::extract::{Extraction, FromHookContext, FromMessage, Message};

#[doc(hidden)]
pub mod describe;
mod erased;
mod output;

pub(crate) use erased::{BoxedHandler, BoxedHook};
pub use output::{IntoHandlerResult, IntoHookResult, IntoReply, PublishOutput, Reply};

/// What calling a handler produces: its return value as a [`Reply`], or how it failed.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, HandlerError>> + Send>>;

/// What calling a lifecycle hook produces.
pub type HookFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// An async fn usable as a `#[subscriber]` handler; `Args` is the tuple of its argument types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid `#[subscriber]` handler",
    note = "a handler is an `async fn` whose arguments all implement `FromMessage` and whose return type implements `IntoHandlerResult`"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments from `message` and returns the function's call, boxed.
    fn call(&self, message: &Message, context: &SubscriberContext) -> HandlerFuture;

    /// Runs every argument's start-up check; one line per problem.
    fn check(context: &SubscriberContext) -> Vec<String>;
}

/// An async fn usable as a lifecycle hook; `Args` is the tuple of its argument types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid lifecycle hook",
    note = "a hook is an `async fn` whose arguments all implement `FromHookContext` and that returns `()` or `Result<(), E>`"
)]
pub trait Hook<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments and calls the function.
    fn call(&self, context: AppContext) -> HookFuture;

    /// Runs every argument's start-up check; one line per problem.
    fn check(context: &AppContext) -> Vec<String>;
}

macro_rules! impl_handler_and_hook {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables, unused_mut)]
        impl<F, Fut, Out, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoHandlerResult,
            $($arg: FromMessage + Send + 'static,)*
        {
            fn call(&self, message: &Message, context: &SubscriberContext) -> HandlerFuture {
                // The arguments are extracted now, so the future owns only them: the message
                // stays with the caller, which needs it for logging. A rejection names its
                // argument, for the log line. An argument that waits (a view catching up with
                // the message) is awaited in the call, before the function.
                let mut position = 0;
                $(
                    position += 1;
                    let $arg = match <$arg as FromMessage>::extract(message, context) {
                        Extraction::Ready(Err(rejection)) => {
                            let rejection =
                                rejection.of_argument(position, std::any::type_name::<$arg>());
                            return Box::pin(std::future::ready(Err(HandlerError::Rejected(
                                rejection,
                            ))))
                        }
                        extraction => extraction,
                    };
                )*
                let handler = self.clone();
                Box::pin(async move {
                    $(let $arg = $arg.resolve().await?;)*
                    handler($($arg),*)
                        .await
                        .into_handler_result()
                        .map_err(|error| HandlerError::Failed(error.into()))
                })
            }

            fn check(context: &SubscriberContext) -> Vec<String> {
                let problems: Vec<Result<(), String>> =
                    vec![$(<$arg as FromMessage>::check(context)),*];
                problems.into_iter().filter_map(Result::err).collect()
            }
        }

        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, Out, $($arg,)*> Hook<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoHookResult,
            $($arg: FromHookContext + Send + 'static,)*
        {
            fn call(&self, context: AppContext) -> HookFuture {
                let hook = self.clone();
                Box::pin(async move {
                    $(
                        let $arg = <$arg as FromHookContext>::from_hook_context(&context)
                            .map_err(HandlerError::Rejected)?;
                    )*
                    hook($($arg),*)
                        .await
                        .into_hook_result()
                        .map_err(|error| HandlerError::Failed(error.into()))
                })
            }

            fn check(context: &AppContext) -> Vec<String> {
                let problems: Vec<Result<(), String>> =
                    vec![$(<$arg as FromHookContext>::check(context)),*];
                problems.into_iter().filter_map(Result::err).collect()
            }
        }
    };
}

/// Invokes `$name!` for every argument count from 0 to 12, as axum does.
macro_rules! all_the_tuples {
    ($name:ident) => {
        $name!();
        $name!(A1);
        $name!(A1, A2);
        $name!(A1, A2, A3);
        $name!(A1, A2, A3, A4);
        $name!(A1, A2, A3, A4, A5);
        $name!(A1, A2, A3, A4, A5, A6);
        $name!(A1, A2, A3, A4, A5, A6, A7);
        $name!(A1, A2, A3, A4, A5, A6, A7, A8);
        $name!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
        $name!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
        $name!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
        $name!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
    };
}

all_the_tuples!(impl_handler_and_hook);

// The macros reject more arguments than `MAX_HANDLER_ARGS`; the implementations above (and
// `__private`'s `handlerN`/`hookN`) must reach exactly that many.
const _: () = assert!(
    faststream_rules::MAX_HANDLER_ARGS == 12,
    "all_the_tuples! and __private::typed_constructors! must cover MAX_HANDLER_ARGS arguments"
);

/// Makes a call and awaits it, turning a panic (in an extractor, which runs when the call is
/// made, or in the function) into [`HandlerError::Panicked`]: no handler or hook can take down
/// a watch loop or the app.
pub(crate) async fn call_catching_panics<T>(
    call: impl FnOnce() -> Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send>>,
) -> Result<T, HandlerError> {
    let call = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(call) => call,
        Err(panic) => return Err(panicked(&*panic)),
    };
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(&*panic)))
}

fn panicked(payload: &(dyn Any + Send)) -> HandlerError {
    HandlerError::Panicked {
        message: panic_message(payload).to_owned(),
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic payload)")
}
