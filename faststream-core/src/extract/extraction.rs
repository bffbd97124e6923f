//! [`Extraction`]: a handler argument built at once, or by a wait inside the call.

use std::future::Future;
use std::pin::Pin;

use crate::error::{HandlerError, Rejection};

/// A wait that builds an argument, awaited inside the handler call before the function runs.
pub type PendingArgument<T> = Pin<Box<dyn Future<Output = Result<T, Rejection>> + Send>>;

/// How a handler call builds one argument: what [`FromMessage::extract`](super::FromMessage::extract)
/// returns.
///
/// ```
/// use faststream_core::error::Rejection;
/// use faststream_core::extract::Extraction;
///
/// let at_once: Extraction<u32> = Extraction::Ready(Ok(7));
/// // What `Option<T>` makes of another extractor's extraction: `None` instead of a rejection.
/// let optional: Extraction<Option<u32>> = at_once.map(|built| Ok(built.ok()));
/// assert!(matches!(optional, Extraction::Ready(Ok(Some(7)))));
/// let later: Extraction<u32> = Extraction::Pending(Box::pin(async { Err(Rejection::new("late")) }));
/// assert!(matches!(later.map(|built| Ok(built.ok())), Extraction::Pending(_)));
/// ```
pub enum Extraction<T> {
    /// Built, or rejected, at once: a rejection skips the call (see [`Rejection`]).
    Ready(Result<T, Rejection>),
    /// Built by a wait that runs inside the call, before the function (so the handler timeout
    /// bounds it too). A wait that ends in `Err` fails the call, as the function returning that
    /// error would: it is logged, and a consumer group retries it, since waiting again may
    /// succeed where the entry itself was not at fault.
    Pending(PendingArgument<T>),
}

impl<T: Send + 'static> Extraction<T> {
    /// The same extraction, its outcome passed through `map` once known: how `Option<T>` and
    /// `Result<T, Rejection>` turn another extractor's rejection into an argument.
    pub fn map<U>(
        self,
        map: impl FnOnce(Result<T, Rejection>) -> Result<U, Rejection> + Send + 'static,
    ) -> Extraction<U> {
        match self {
            Extraction::Ready(built) => Extraction::Ready(map(built)),
            Extraction::Pending(wait) => {
                Extraction::Pending(Box::pin(async move { map(wait.await) }))
            }
        }
    }
}

impl<T> Extraction<T> {
    /// The argument, or how the call ends without it.
    pub(crate) async fn resolve(self) -> Result<T, HandlerError> {
        match self {
            Extraction::Ready(built) => built.map_err(HandlerError::Rejected),
            Extraction::Pending(wait) => wait
                .await
                .map_err(|rejection| HandlerError::Failed(Box::new(rejection))),
        }
    }
}

impl<T> std::fmt::Debug for Extraction<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Extraction::Ready(Ok(_)) => f.write_str("Extraction::Ready(Ok(..))"),
            Extraction::Ready(Err(rejection)) => write!(f, "Extraction::Ready(Err({rejection}))"),
            Extraction::Pending(_) => f.write_str("Extraction::Pending(..)"),
        }
    }
}
