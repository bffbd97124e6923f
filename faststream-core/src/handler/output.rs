//! What a handler returns: [`Reply`], the body sent as the answer to a request and to each
//! `#[publisher]` of the handler, built from the return value by [`IntoHandlerResult`].

use bytes::Bytes;
use serde::Serialize;

use crate::extract::json::Json;

/// The `content-type` FastStream gives JSON bodies.
pub(crate) const JSON: &str = "application/json";
/// The `content-type` FastStream gives text bodies.
pub(crate) const TEXT: &str = "text/plain";

/// A handler's return value as a message body: what a request is answered with and what each
/// `#[publisher]` of the handler sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub(crate) payload: Bytes,
    /// FastStream's `content-type` header: `application/json` for `Json<T>`, `text/plain` for
    /// text, none for bytes.
    pub(crate) content_type: Option<&'static str>,
}

impl Reply {
    /// An empty body: what `()` returns.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The body's bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The `content-type` header sent with it, if any.
    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }
}

/// A value a handler can return as a message body: `()` (empty), `String`, `&'static str`,
/// `Vec<u8>`, `Bytes`, or `Json<T>` of a `T: Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a faststream handler",
    label = "not a reply body",
    note = "a handler returns `()`, `String`, `&'static str`, `Vec<u8>`, `bytes::Bytes` or `Json<T>` with `T: serde::Serialize`, or a `Result<_, E>` of one of these where `E: Into<anyhow::Error>`"
)]
pub trait IntoReply {
    /// Converts the value; an `Err` (a value `Json` cannot serialize) fails the call.
    fn into_reply(self) -> anyhow::Result<Reply>;
}

impl IntoReply for () {
    fn into_reply(self) -> anyhow::Result<Reply> {
        Ok(Reply::empty())
    }
}

impl IntoReply for String {
    fn into_reply(self) -> anyhow::Result<Reply> {
        Ok(text(Bytes::from(self)))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> anyhow::Result<Reply> {
        Ok(text(Bytes::from_static(self.as_bytes())))
    }
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> anyhow::Result<Reply> {
        Ok(bytes(Bytes::from(self)))
    }
}

impl IntoReply for Bytes {
    fn into_reply(self) -> anyhow::Result<Reply> {
        Ok(bytes(self))
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> anyhow::Result<Reply> {
        let payload = serde_json::to_vec(&self.0).map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "the returned `Json<{}>` could not be serialized",
                std::any::type_name::<T>()
            ))
        })?;
        Ok(Reply {
            payload: Bytes::from(payload),
            content_type: Some(JSON),
        })
    }
}

fn text(payload: Bytes) -> Reply {
    Reply {
        payload,
        content_type: Some(TEXT),
    }
}

fn bytes(payload: Bytes) -> Reply {
    Reply {
        payload,
        content_type: None,
    }
}

/// What a `#[subscriber]` handler may return: a [`IntoReply`] value, or a `Result` of one with
/// an error convertible to `anyhow::Error` (any `std::error::Error + Send + Sync + 'static`, or
/// `anyhow::Error` itself).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a faststream handler",
    label = "return a reply body or a `Result` of one here",
    note = "handlers return `()`, `String`, `Vec<u8>`, `bytes::Bytes` or `Json<T>` (with `T: serde::Serialize`), or `Result<_, E>` of one of these where `E: Into<anyhow::Error>` (for example `anyhow::Result<Json<Order>>`)"
)]
pub trait IntoHandlerResult {
    /// Converts the function's output.
    fn into_handler_result(self) -> anyhow::Result<Reply>;
}

impl<T: IntoReply> IntoHandlerResult for T {
    fn into_handler_result(self) -> anyhow::Result<Reply> {
        self.into_reply()
    }
}

impl<T: IntoReply, E: Into<anyhow::Error>> IntoHandlerResult for Result<T, E> {
    fn into_handler_result(self) -> anyhow::Result<Reply> {
        self.map_err(Into::into)?.into_reply()
    }
}

/// A return type whose `Ok` value a `#[publisher]` can send: anything [`IntoHandlerResult`]
/// accepts but `()`, which has nothing to publish.
#[diagnostic::on_unimplemented(
    message = "`#[publisher]` needs a handler that returns a value to publish, not `{Self}`",
    label = "nothing to publish",
    note = "return the value to publish: `String`, `Vec<u8>`, `bytes::Bytes` or `Json<T>`, or a `Result<_, E>` of one of these (for example `anyhow::Result<Json<Bill>>`)"
)]
pub trait PublishOutput: IntoHandlerResult {}

/// Marks the bodies a publisher can send, and `Result`s of them.
macro_rules! publishable {
    ($($ty:ty),*) => {
        $(
            impl PublishOutput for $ty {}
            impl<E: Into<anyhow::Error>> PublishOutput for Result<$ty, E> {}
        )*
    };
}

publishable!(String, &'static str, Vec<u8>, Bytes);
impl<T: Serialize> PublishOutput for Json<T> {}
impl<T: Serialize, E: Into<anyhow::Error>> PublishOutput for Result<Json<T>, E> {}

/// What a lifecycle hook may return: `()` or `Result<(), E>` with `E` convertible to
/// `anyhow::Error`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a faststream lifecycle hook",
    label = "return `()` or `Result<(), E>` here",
    note = "hooks return `()` or `Result<(), E>` where `E: Into<anyhow::Error>` (for example `anyhow::Result<()>`)"
)]
pub trait IntoHookResult {
    /// Converts the hook's output.
    fn into_hook_result(self) -> anyhow::Result<()>;
}

impl IntoHookResult for () {
    fn into_hook_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error>> IntoHookResult for Result<(), E> {
    fn into_hook_result(self) -> anyhow::Result<()> {
        self.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_their_content_types() {
        let reply = Json(serde_json::json!({"a": 1}))
            .into_handler_result()
            .expect("serializes");
        assert_eq!(reply.payload(), &Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(reply.content_type(), Some(JSON));
        let reply = String::from("hi").into_handler_result().expect("text");
        assert_eq!(reply.content_type(), Some(TEXT));
        let reply = vec![1u8, 2].into_handler_result().expect("bytes");
        assert_eq!((reply.payload().len(), reply.content_type()), (2, None));
        assert_eq!(().into_handler_result().expect("unit"), Reply::empty());
        let failed: Result<String, std::io::Error> = Err(std::io::Error::other("boom"));
        assert_eq!(
            failed.into_handler_result().map_err(|e| e.to_string()),
            Err("boom".to_owned())
        );
    }

    #[test]
    fn a_value_json_cannot_serialize_fails_the_call() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let error = Json(map)
            .into_handler_result()
            .expect_err("non-string keys");
        assert!(
            error.to_string().starts_with("the returned `Json<"),
            "{error}"
        );
    }
}
