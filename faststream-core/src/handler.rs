//! Handlers: async fns whose arguments are extractors, made callable with one boxed signature.
//!
//! [`Handler`] and [`Hook`] are implemented for functions of up to 12 arguments by
//! `all_the_tuples!`, so any `async fn(A, B, ...)` whose arguments are extractors is one.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::{AppContext, SubscriberContext};
use crate::extract::{FromHookContext, FromKvMessage, Rejection};
use crate::kv::KvMessage;

/// What calling a handler or hook produces.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Why a handler call did not succeed.
#[derive(Debug)]
pub enum HandlerError {
    /// An argument could not be extracted; the function was not called.
    Rejected(Rejection),
    /// The function returned an error.
    Failed(anyhow::Error),
}

/// What a handler or hook may return: `()` or `Result<(), E>` with `E` convertible to
/// `anyhow::Error` (any `std::error::Error + Send + Sync + 'static`, or `anyhow::Error` itself).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a faststream handler or hook",
    label = "return `()` or `Result<(), E>` here",
    note = "handlers and hooks return `()` or `Result<(), E>` where `E: Into<anyhow::Error>` (for example `anyhow::Result<()>`)"
)]
pub trait IntoHandlerResult {
    /// Converts the function's output.
    fn into_handler_result(self) -> anyhow::Result<()>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> anyhow::Result<()> {
        self.map_err(Into::into)
    }
}

/// An async fn usable as a `#[subscriber]` handler; `Args` is the tuple of its argument types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid `#[subscriber]` handler",
    note = "a handler is an `async fn` whose arguments all implement `FromKvMessage` and that returns `()` or `Result<(), E>`"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments from `message` and returns the function's call, boxed.
    fn call(&self, message: &KvMessage, context: &SubscriberContext) -> HandlerFuture;

    /// Runs every argument's start-up check; one line per problem.
    fn check(&self, context: &SubscriberContext) -> Vec<String>;
}

/// An async fn usable as a lifecycle hook; `Args` is the tuple of its argument types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid lifecycle hook",
    note = "a hook is an `async fn` whose arguments all implement `FromHookContext` and that returns `()` or `Result<(), E>`"
)]
pub trait Hook<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments and calls the function.
    fn call(&self, context: AppContext) -> HandlerFuture;

    /// Runs every argument's start-up check; one line per problem.
    fn check(&self, context: &AppContext) -> Vec<String>;
}

macro_rules! impl_handler_and_hook {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, Out, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoHandlerResult,
            $($arg: FromKvMessage + Send + 'static,)*
        {
            fn call(&self, message: &KvMessage, context: &SubscriberContext) -> HandlerFuture {
                // The arguments are extracted now, so the future owns only them: the message
                // stays with the caller, which needs it for logging.
                $(
                    let $arg = match <$arg as FromKvMessage>::from_kv_message(message, context) {
                        Ok(argument) => argument,
                        Err(rejection) => {
                            return Box::pin(std::future::ready(Err(HandlerError::Rejected(
                                rejection,
                            ))))
                        }
                    };
                )*
                let call = self($($arg),*);
                Box::pin(async move {
                    call.await.into_handler_result().map_err(HandlerError::Failed)
                })
            }

            fn check(&self, context: &SubscriberContext) -> Vec<String> {
                let problems: Vec<Result<(), String>> =
                    vec![$(<$arg as FromKvMessage>::check(context)),*];
                problems.into_iter().filter_map(Result::err).collect()
            }
        }

        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, Out, $($arg,)*> Hook<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoHandlerResult,
            $($arg: FromHookContext + Send + 'static,)*
        {
            fn call(&self, context: AppContext) -> HandlerFuture {
                let hook = self.clone();
                Box::pin(async move {
                    $(
                        let $arg = <$arg as FromHookContext>::from_hook_context(&context)
                            .map_err(HandlerError::Rejected)?;
                    )*
                    hook($($arg),*).await.into_handler_result().map_err(HandlerError::Failed)
                })
            }

            fn check(&self, context: &AppContext) -> Vec<String> {
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

/// A handler with its argument types erased, as stored in the registry.
#[derive(Clone)]
pub struct BoxedHandler(Arc<dyn ErasedHandler>);

trait ErasedHandler: Send + Sync {
    fn call(&self, message: &KvMessage, context: &SubscriberContext) -> HandlerFuture;
    fn check(&self, context: &SubscriberContext) -> Vec<String>;
}

struct TypedHandler<H, Args> {
    handler: H,
    _args: PhantomData<fn() -> Args>,
}

impl<H: Handler<Args>, Args: 'static> ErasedHandler for TypedHandler<H, Args> {
    fn call(&self, message: &KvMessage, context: &SubscriberContext) -> HandlerFuture {
        self.handler.call(message, context)
    }

    fn check(&self, context: &SubscriberContext) -> Vec<String> {
        self.handler.check(context)
    }
}

impl BoxedHandler {
    /// Erases a handler's argument types.
    pub fn new<H: Handler<Args>, Args: 'static>(handler: H) -> Self {
        Self(Arc::new(TypedHandler {
            handler,
            _args: PhantomData,
        }))
    }

    /// Extracts the arguments (now; a panicking extractor panics here) and returns the call.
    pub(crate) fn call(&self, message: &KvMessage, context: &SubscriberContext) -> HandlerFuture {
        self.0.call(message, context)
    }

    pub(crate) fn check(&self, context: &SubscriberContext) -> Vec<String> {
        self.0.check(context)
    }
}

/// A hook with its argument types erased, as stored in the registry.
#[derive(Clone)]
pub struct BoxedHook(Arc<dyn ErasedHook>);

trait ErasedHook: Send + Sync {
    fn call(&self, context: AppContext) -> HandlerFuture;
    fn check(&self, context: &AppContext) -> Vec<String>;
}

struct TypedHook<H, Args> {
    hook: H,
    _args: PhantomData<fn() -> Args>,
}

impl<H: Hook<Args>, Args: 'static> ErasedHook for TypedHook<H, Args> {
    fn call(&self, context: AppContext) -> HandlerFuture {
        self.hook.call(context)
    }

    fn check(&self, context: &AppContext) -> Vec<String> {
        self.hook.check(context)
    }
}

impl BoxedHook {
    /// Erases a hook's argument types.
    pub fn new<H: Hook<Args>, Args: 'static>(hook: H) -> Self {
        Self(Arc::new(TypedHook {
            hook,
            _args: PhantomData,
        }))
    }

    pub(crate) fn call(&self, context: AppContext) -> HandlerFuture {
        self.0.call(context)
    }

    pub(crate) fn check(&self, context: &AppContext) -> Vec<String> {
        self.0.check(context)
    }
}
