//! JSON values on [`KeyValue`]: the byte-level methods with serde_json on either side, errors
//! naming the bucket and the key.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Versioned;
use crate::error::{Error, Result};
use crate::KeyValue;

impl KeyValue {
    /// `value` as JSON; an error naming the operation, the bucket and the key if it does not
    /// encode (a map with non-string keys, a `Serialize` impl that fails).
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        key: &str,
        value: &T,
    ) -> Result<Bytes> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(self.failed(operation, key))
    }

    /// `value` (of `key`, at `revision`) decoded from JSON, or [`Error::Decode`].
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        revision: u64,
        value: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(value).map_err(|source| Error::Decode {
            bucket: self.name().to_owned(),
            key: key.to_owned(),
            revision,
            type_name: std::any::type_name::<T>(),
            source,
        })
    }

    /// Writes `value` as JSON; returns the new revision.
    ///
    /// ```no_run
    /// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Flag {
    ///     enabled: bool,
    /// }
    ///
    /// let flags = broker.key_value("flags").await?;
    /// flags.put_json("checkout", &Flag { enabled: true }).await?;
    /// let flag: Option<Flag> = flags.get_json("checkout").await?;
    /// assert_eq!(flag, Some(Flag { enabled: true }));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
    ) -> Result<u64> {
        let key = key.as_ref();
        let value = self.encode("put", key, value)?;
        self.put(key, value).await
    }

    /// The latest value of `key` decoded from JSON; `None` if it has none (never written,
    /// deleted or purged). A value that is not valid JSON for `T` is [`Error::Decode`], naming
    /// the bucket, the key, the revision and `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, key: impl AsRef<str>) -> Result<Option<T>> {
        Ok(self.entry_json(key).await?.map(|entry| entry.value))
    }

    /// The latest value of `key` decoded from JSON, with its revision (for an
    /// [`update_json`](Self::update_json) at it); `None` if the key has no value. Errors as
    /// [`get_json`](Self::get_json).
    ///
    /// ```no_run
    /// # async fn demo(stock: faststream_core::KeyValue) -> anyhow::Result<()> {
    /// if let Some(mut item) = stock.entry_json::<u32>("widgets").await? {
    ///     item.value -= 1;
    ///     stock.update_json("widgets", &item.value, item.revision).await?; // if unchanged since
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn entry_json<T: DeserializeOwned>(
        &self,
        key: impl AsRef<str>,
    ) -> Result<Option<Versioned<T>>> {
        let key = key.as_ref();
        let Some(entry) = self.entry(key).await? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = self.decode(key, entry.revision, &entry.value)?;
        Ok(Some(Versioned {
            value,
            revision: entry.revision,
        }))
    }

    /// Writes `value` as JSON only if `key` has no value; returns the new revision.
    pub async fn create_json<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
    ) -> Result<u64> {
        let key = key.as_ref();
        let value = self.encode("create", key, value)?;
        self.create(key, value).await
    }

    /// Writes `value` as JSON only if the latest revision of `key` is `revision`; returns the
    /// new one. Refused for the revision: an error whose
    /// [`is_key_changed`](crate::Error::is_key_changed) is `true`.
    pub async fn update_json<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
        revision: u64,
    ) -> Result<u64> {
        let key = key.as_ref();
        let value = self.encode("update", key, value)?;
        self.update(key, value, revision).await
    }
}
