//! [`ObjMessage`]: one change of an object store, as an `obj_watch` subscriber receives it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::object_store::ObjectInfo;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::kv::message::{system_time, KvMessage};

/// One change of a watched object store: an object put (created or replaced) or deleted, as
/// its metadata describes it. The object's content is not in the message: read the very
/// version the change announced with
/// [`ObjectStore::get_version`](crate::ObjectStore::get_version) (streamed, digest verified,
/// and an error rather than a newer version if the object was replaced meanwhile).
///
/// As in FastStream, the message's body is the object's name: a `String` argument receives it.
///
/// ```
/// use faststream_core::{subscriber, ObjMessage};
///
/// #[subscriber("reports", obj_watch = true)]
/// async fn on_report(name: String, object: ObjMessage) {
///     if object.deleted() {
///         println!("{name} was deleted");
///     } else {
///         println!("{name}: {} bytes in {} chunks", object.size(), object.chunks());
///     }
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ObjMessage {
    bucket: Arc<str>,
    /// The name as bytes: the message's payload, shared.
    name: Bytes,
    /// Shared: an argument taking the change clones it, and the metadata's strings and maps
    /// would make that a deep copy per call.
    info: Arc<ObjectInfo>,
    revision: u64,
    created: SystemTime,
}

/// Why a metadata message of an object store is not a change this crate can read.
#[derive(Debug, thiserror::Error)]
#[error("the metadata at revision {revision} of object store `{bucket}` is not valid object metadata (subject key `{key}`)")]
pub struct ObjectMetaError {
    bucket: String,
    key: String,
    revision: u64,
    #[source]
    source: serde_json::Error,
}

impl ObjMessage {
    /// Reads the change a metadata message of the store's stream describes.
    ///
    /// Lenient where writers differ: nats-py writes an empty `mtime` for a deletion, which
    /// async-nats's `ObjectInfo` cannot parse, so a time that does not parse is left out.
    pub(crate) fn from_meta(meta: &KvMessage) -> Result<Self, ObjectMetaError> {
        let failed = |source| ObjectMetaError {
            bucket: meta.bucket().to_owned(),
            key: meta.key().to_owned(),
            revision: meta.revision(),
            source,
        };
        let info = match serde_json::from_slice::<ObjectInfo>(meta.value()) {
            Ok(info) => info,
            Err(first) => {
                let mut value: serde_json::Value =
                    serde_json::from_slice(meta.value()).map_err(failed)?;
                let Some(fields) = value.as_object_mut() else {
                    return Err(failed(first));
                };
                if fields.remove("mtime").is_none() {
                    return Err(failed(first));
                }
                serde_json::from_value(value).map_err(failed)?
            }
        };
        Ok(Self {
            bucket: Arc::from(meta.bucket()),
            name: Bytes::copy_from_slice(info.name.as_bytes()),
            info: Arc::new(info),
            revision: meta.revision(),
            created: meta.created(),
        })
    }

    /// The change a watch hands on for a metadata message: `None` for a deletion passed over
    /// under `ignore_deletes`.
    pub(crate) fn from_watched(
        meta: &KvMessage,
        ignore_deletes: bool,
    ) -> Result<Option<Self>, ObjectMetaError> {
        let object = Self::from_meta(meta)?;
        Ok((!(ignore_deletes && object.deleted())).then_some(object))
    }

    /// The object store.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The name as bytes: the message's body, as FastStream hands it on.
    pub(crate) fn name_bytes(&self) -> &Bytes {
        &self.name
    }

    /// The object's size in bytes (0 once deleted).
    pub fn size(&self) -> usize {
        self.info.size
    }

    /// How many chunks the object is stored in (0 once deleted).
    pub fn chunks(&self) -> usize {
        self.info.chunks
    }

    /// The digest of the content, `SHA-256=<base64url>`, if the writer recorded one.
    pub fn digest(&self) -> Option<&str> {
        self.info
            .digest
            .as_deref()
            .filter(|digest| !digest.is_empty())
    }

    /// When the object was last modified, as its writer recorded it; `None` if it did not
    /// (nats-py writes none for a deletion).
    pub fn modified(&self) -> Option<SystemTime> {
        self.info.modified.map(system_time)
    }

    /// When the server stored this metadata (the change's time).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Whether the change is the object's deletion.
    pub fn deleted(&self) -> bool {
        self.info.deleted
    }

    /// The object's description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.info.description.as_deref()
    }

    /// The object's headers, as its writer set them, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.info.headers.as_ref()
    }

    /// The object's metadata (user key-value pairs).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.info.metadata
    }

    /// The revision of this change in the store's stream: changes of one store are delivered
    /// in revision order.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The identifier of this version of the object (its chunks' subject token): a put makes
    /// a new one.
    pub fn version(&self) -> &str {
        &self.info.nuid
    }

    /// The whole metadata, as async-nats reads it.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// Takes the metadata out (a copy if a clone of this change still shares it).
    pub fn into_info(self) -> ObjectInfo {
        Arc::try_unwrap(self.info).unwrap_or_else(|shared| (*shared).clone())
    }
}

/// For [`ObjectStore::get_version`](crate::ObjectStore::get_version): the version the change
/// announced.
impl AsRef<ObjectInfo> for ObjMessage {
    fn as_ref(&self) -> &ObjectInfo {
        &self.info
    }
}

impl fmt::Debug for ObjMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjMessage")
            .field("bucket", &self.bucket)
            .field("name", &self.info.name)
            .field("revision", &self.revision)
            .field("size", &self.info.size)
            .field("deleted", &self.info.deleted)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::message::{MessageParts, Operation};

    fn meta(json: &str) -> KvMessage {
        KvMessage::from(MessageParts {
            bucket: Arc::from("reports"),
            key: "cmVwb3J0LnR4dA==".to_owned(),
            value: Bytes::copy_from_slice(json.as_bytes()),
            value_size: json.len(),
            revision: 7,
            delta: 0,
            created: time::OffsetDateTime::UNIX_EPOCH,
            operation: Operation::Put,
            headers: None,
        })
    }

    #[test]
    fn reads_the_metadata_of_a_put() {
        let message = ObjMessage::from_meta(&meta(
            r#"{"name":"report.txt","bucket":"reports","nuid":"abc","size":5,"chunks":1,
               "mtime":"2026-12-07T10:00:00.5Z","digest":"SHA-256=xyz","metadata":{"a":"b"}}"#,
        ))
        .expect("valid metadata");
        assert_eq!(message.name(), "report.txt");
        assert_eq!(message.name_bytes().as_ref(), b"report.txt");
        assert_eq!((message.size(), message.chunks()), (5, 1));
        assert_eq!(message.digest(), Some("SHA-256=xyz"));
        assert_eq!(message.version(), "abc");
        assert_eq!(message.revision(), 7);
        assert!(!message.deleted());
        assert!(message.modified().is_some());
        assert_eq!(message.metadata().get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn a_deletion_with_an_empty_time_is_read() {
        // As nats-py writes a deletion.
        let message = ObjMessage::from_meta(&meta(
            r#"{"name":"report.txt","bucket":"reports","nuid":"abc","size":0,"chunks":0,
               "mtime":"","digest":"","deleted":true}"#,
        ))
        .expect("a deletion");
        assert!(message.deleted());
        assert_eq!((message.modified(), message.digest()), (None, None));
    }

    #[test]
    fn anything_else_is_an_error_naming_the_store_and_revision() {
        for bad in ["not json", "[1]", r#"{"bucket":"reports"}"#] {
            let error = ObjMessage::from_meta(&meta(bad)).expect_err(bad);
            let text = error.to_string();
            assert!(
                text.contains("revision 7") && text.contains("`reports`"),
                "{text}"
            );
        }
    }
}
