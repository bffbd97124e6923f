//! `ObjectStore`: a store handle whose operations check the object's name before any request
//! and whose reads are streamed and verified.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::{ObjectInfo, ObjectMetadata};
use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use tokio::io::AsyncRead;

use crate::error::{Error, ObjectError, Result};
use crate::object::chunks::ChunkSource;
use crate::object::config::{self, DeclaredObjectStore};
use crate::object::meta::{chunk_subject, read_meta, validate_object_name};
use crate::object::put;
use crate::object::reader::ObjectReader;

/// How long a read waits for data before failing with [`ObjectError::Timeout`], unless
/// [`ObjectStore::with_read_timeout`] says otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times [`ObjectStore::get`] looks an object up again when the version it found is
/// replaced before its reading starts.
const GET_ATTEMPTS: usize = 3;

/// An object store (a bucket of objects, of any size): the operations of FastStream's
/// `object_storage` handle, each checking the object's name before any request, with reads
/// streamed and verified ([`ObjectReader`]). For anything this type does not wrap,
/// [`store`](Self::store) gives async-nats's store itself. Cheap to clone.
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// let files = broker.object_storage("files").await?; // created if missing
/// let file = tokio::fs::File::open("/etc/hosts").await?;
/// let info = files.put("hosts", file).await?; // streamed, in 128 KiB chunks
/// println!("{} bytes in {} chunks", info.size, info.chunks);
///
/// let copy = files.get_bytes("hosts").await?; // verified against its digest
/// assert_eq!(copy.len(), info.size);
/// for object in files.list().await? {
///     println!("{} ({} bytes)", object.name, object.size);
/// }
/// files.delete("hosts").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStore {
    store: Arc<DeclaredObjectStore>,
    jetstream: jetstream::Context,
    read_timeout: Duration,
}

impl ObjectStore {
    pub(crate) fn new(store: DeclaredObjectStore, jetstream: jetstream::Context) -> Self {
        Self {
            store: Arc::new(store),
            jetstream,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }

    /// The store as declared: its stream and the configuration it had.
    pub(crate) fn declared(&self) -> &DeclaredObjectStore {
        &self.store
    }

    /// The store's (bucket's) name.
    pub fn name(&self) -> &str {
        &self.store.bucket
    }

    /// async-nats's store, for anything this type does not wrap (watch, links, metadata
    /// updates, sealing).
    pub fn store(&self) -> &object_store::ObjectStore {
        &self.store.store
    }

    /// The same store, whose reads fail with [`ObjectError::Timeout`] after `timeout` without
    /// data (default [`DEFAULT_READ_TIMEOUT`], 30 s).
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long a read waits for data.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    fn failed(&self, operation: &'static str, object: &str) -> impl FnOnce(ObjectError) -> Error {
        let bucket = self.store.bucket.clone();
        let object = object.to_owned();
        move |source| Error::Object {
            bucket,
            object,
            operation,
            source,
        }
    }

    /// The info of the latest version of `name`; `None` if it has none or was deleted.
    pub async fn info(&self, name: &str) -> Result<Option<ObjectInfo>> {
        validate_object_name(name).map_err(self.failed("look up", name))?;
        let info = read_meta(&self.store.store, name)
            .await
            .map_err(self.failed("look up", name))?;
        Ok(info.filter(|info| !info.deleted))
    }

    /// The latest version of `name`, streamed and verified (see [`ObjectReader`]). A missing or
    /// deleted object is [`Error::Object`] with [`ObjectError::NotFound`]. If the version found
    /// is replaced before its reading starts, the object is looked up again (a few times); once
    /// reading started, a replacement fails the read with [`ObjectError::Replaced`].
    ///
    /// A link to an object (in this store or another) is followed, one level; a link to a
    /// whole bucket, or to another link, is an error ([`ObjectError::BucketLink`],
    /// [`ObjectError::NestedLink`]).
    pub async fn get(&self, name: &str) -> Result<ObjectReader> {
        validate_object_name(name).map_err(self.failed("get", name))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let info = read_meta(&self.store.store, name)
                .await
                .map_err(self.failed("get", name))?
                .filter(|info| !info.deleted)
                .ok_or(ObjectError::NotFound)
                .map_err(self.failed("get", name))?;
            match self.open(&info).await {
                Err(Error::Object {
                    source: ObjectError::Replaced { nuid },
                    ..
                }) if attempt < GET_ATTEMPTS => {
                    tracing::debug!(bucket = %self.store.bucket, object = name, %nuid, "object replaced before reading; looking it up again");
                }
                opened => return opened,
            }
        }
    }

    /// Exactly the version `info` describes (a watch event's object, say), streamed and
    /// verified. If that version was replaced or deleted (its chunks purged), this fails with
    /// [`ObjectError::Replaced`] rather than reading a newer one; an `info` of a deleted object
    /// is [`ObjectError::NotFound`]. A link is followed as by [`get`](Self::get), to the
    /// latest version of what it links to.
    pub async fn get_version(&self, info: &ObjectInfo) -> Result<ObjectReader> {
        validate_object_name(&info.name).map_err(self.failed("get", &info.name))?;
        if info.bucket != self.store.bucket {
            return Err(self.failed("get", &info.name)(ObjectError::OtherBucket {
                bucket: info.bucket.clone(),
            }));
        }
        if info.deleted {
            return Err(self.failed("get", &info.name)(ObjectError::NotFound));
        }
        self.open(info).await
    }

    /// The latest version of `name`, read whole into memory and verified: for small objects
    /// ([`get`](Self::get) streams any size).
    pub async fn get_bytes(&self, name: &str) -> Result<Bytes> {
        Ok(self.get(name).await?.read_all().await?)
    }

    /// Opens the reader of the version `info` describes, following a link one level.
    async fn open(&self, info: &ObjectInfo) -> Result<ObjectReader> {
        let link = info
            .options
            .as_ref()
            .and_then(|options| options.link.as_ref());
        let Some(link) = link else {
            let source = ChunkSource::open(&self.store, info, self.read_timeout)
                .await
                .map_err(self.failed("get", &info.name))?;
            return Ok(ObjectReader::new(info.clone(), source));
        };
        let Some(target) = link.name.as_deref() else {
            return Err(self.failed("get", &info.name)(ObjectError::BucketLink {
                bucket: link.bucket.clone(),
            }));
        };
        let linked = if link.bucket == self.store.bucket {
            self.clone()
        } else {
            let store = config::lookup(&self.jetstream, &link.bucket)
                .await
                .map_err(|error| {
                    self.failed("get", &info.name)(ObjectError::Link(Arc::new(error)))
                })?
                .ok_or_else(|| Error::ObjectStoreNotFound {
                    bucket: link.bucket.clone(),
                })
                .map_err(|error| {
                    self.failed("get", &info.name)(ObjectError::Link(Arc::new(error)))
                })?;
            Self::new(store, self.jetstream.clone()).with_read_timeout(self.read_timeout)
        };
        validate_object_name(target).map_err(linked.failed("get", target))?;
        let target_info = read_meta(&linked.store.store, target)
            .await
            .map_err(linked.failed("get", target))?
            .filter(|info| !info.deleted)
            .ok_or(ObjectError::NotFound)
            .map_err(linked.failed("get", target))?;
        if target_info
            .options
            .as_ref()
            .is_some_and(|options| options.link.is_some())
        {
            return Err(self.failed("get", &info.name)(ObjectError::NestedLink {
                bucket: link.bucket.clone(),
                object: target.to_owned(),
            }));
        }
        let source = ChunkSource::open(&linked.store, &target_info, self.read_timeout)
            .await
            .map_err(linked.failed("get", target))?;
        Ok(ObjectReader::new(target_info, source))
    }

    /// Writes an object, streaming `data` in chunks (never the whole object in memory), and
    /// returns its new info; an existing object of that name is replaced (its old chunks are
    /// purged once the new version is stored). `meta` is the name, or an [`ObjectMetadata`]
    /// with a description, metadata, headers or a chunk size (default 128 KiB, at most the
    /// server's maximum payload).
    ///
    /// An invalid name or chunk size is an error before any request. If reading `data` or
    /// publishing fails, the chunks already published are purged and the previous version
    /// stays.
    pub async fn put(
        &self,
        meta: impl Into<ObjectMetadata>,
        mut data: impl AsyncRead + Unpin,
    ) -> Result<ObjectInfo> {
        let meta = meta.into();
        let name = meta.name.clone();
        put::put(&self.store, &self.jetstream, meta, &mut data)
            .await
            .map_err(self.failed("put", &name))
    }

    /// [`put`](Self::put) of data already in memory.
    pub async fn put_bytes(
        &self,
        meta: impl Into<ObjectMetadata>,
        data: Bytes,
    ) -> Result<ObjectInfo> {
        self.put(meta, &data[..]).await
    }

    /// Deletes `name`: marks it deleted (watchers see the deletion) and purges its chunks. A
    /// missing or already deleted object is [`ObjectError::NotFound`].
    pub async fn delete(&self, name: &str) -> Result<()> {
        let failed = || self.failed("delete", name);
        validate_object_name(name).map_err(failed())?;
        let info = read_meta(&self.store.store, name)
            .await
            .map_err(failed())?
            .filter(|info| !info.deleted)
            .ok_or(ObjectError::NotFound)
            .map_err(failed())?;
        let deleted = ObjectInfo {
            size: 0,
            chunks: 0,
            digest: None,
            deleted: true,
            modified: Some(time::OffsetDateTime::now_utc()),
            ..info.clone()
        };
        put::publish_info(&self.jetstream, &deleted)
            .await
            .map_err(|error| failed()(ObjectError::PublishInfo(error)))?;
        if info.chunks > 0 {
            put::purge(&self.store, &chunk_subject(&self.store.bucket, &info.nuid))
                .await
                .map_err(failed())?;
        }
        Ok(())
    }

    /// The info of every object in the store, deleted ones left out, in the order they were
    /// last written.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>> {
        let failed = |source: crate::error::BoxError| Error::Bucket {
            bucket: self.store.bucket.clone(),
            operation: "list the objects of",
            source,
        };
        let list = self
            .store
            .store
            .list()
            .await
            .map_err(|error| failed(Box::new(error)))?;
        list.try_collect()
            .await
            .map_err(|error| failed(Box::new(error)))
    }
}
