//! How a view turns a stored value into its value type.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::BoxError;

/// Turns a value into the view's value type.
pub(crate) type Decode<T> = Arc<dyn Fn(&Bytes) -> Result<T, BoxError> + Send + Sync>;

/// Values decoded from JSON, as `Json<T>` does for handlers.
pub(crate) fn json<T: serde::de::DeserializeOwned>() -> Decode<T> {
    Arc::new(|value: &Bytes| serde_json::from_slice(value).map_err(BoxError::from))
}

/// Values as they are.
pub(crate) fn raw() -> Decode<Bytes> {
    Arc::new(|value: &Bytes| Ok(value.clone()))
}
