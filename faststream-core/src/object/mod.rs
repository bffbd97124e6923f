//! NATS object storage, with no knowledge of handlers or the app: store configuration, the
//! store handle ([`ObjectStore`](crate::ObjectStore)), the streamed, verified
//! [`ObjectReader`], and watching a store's changes ([`ObjWatcher`], [`ObjMessage`],
//! [`ObjWatch`]).
//!
//! A store is the stream `OBJ_<bucket>`: an object's data is published in chunks to
//! `$O.<bucket>.C.<nuid>` (a fresh nuid per version), then its info ([`ObjectInfo`]: name,
//! size, chunk count, `SHA-256` digest, ...) to `$O.<bucket>.M.<base64url(name)>`, replacing
//! the previous info; the previous version's chunks are then purged. This is the layout of
//! async-nats and nats.go, so stores are shared with services written with them. The guide's
//! [`objects`](crate::guide::objects) chapter shows it all.

pub(crate) mod chunks;
pub(crate) mod config;
pub(crate) mod message;
pub(crate) mod meta;
pub(crate) mod options;
pub(crate) mod put;
pub(crate) mod reader;
pub(crate) mod store;
pub(crate) mod watcher;

// `ObjectStore` is exported at the crate root, beside `KeyValue`; this module has the rest.
pub use async_nats::jetstream::object_store::{
    ObjectInfo, ObjectLink, ObjectMetadata, ObjectOptions,
};
pub use config::ObjectStoreConfig;
pub use message::{ObjMessage, ObjectMetaError};
pub use meta::{validate_object_name, MAX_OBJECT_NAME};
pub use options::ObjWatch;
pub use put::DEFAULT_CHUNK_SIZE;
pub use reader::ObjectReader;
pub use store::DEFAULT_READ_TIMEOUT;
pub use watcher::ObjWatcher;
