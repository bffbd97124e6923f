//! Object store configuration, and declaring or looking up a store on the server.
//!
//! A store is its backing stream, `OBJ_<bucket>`, with the subjects `$O.<bucket>.C.>` (chunks)
//! and `$O.<bucket>.M.>` (object infos). The stream settings are the ones async-nats's and
//! nats.go's `create_object_store` use, so stores made here and by other clients are
//! interchangeable.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};

use crate::error::{DeclareObjectStoreError, Error, Result};
use crate::kv::features::{self, COMPRESSION_SINCE};
use crate::kv::{Placement, StorageType};

/// How [`ObjectStoreConfig::compression`] is named in [`Error::ServerTooOld`].
const COMPRESSION: &str = "compressed object stores (ObjectStoreConfig::compression)";

/// An object store's configuration, with FastStream's `object_storage` parameters.
///
/// Unset values are the NATS defaults: objects kept until deleted, no size limit, file storage,
/// one replica, no compression.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::object::ObjectStoreConfig;
///
/// let config = ObjectStoreConfig::new("reports")
///     .description("monthly reports")
///     .ttl(Duration::from_secs(90 * 24 * 3600))
///     .max_bytes(10 << 30);
/// assert!(config.validate().is_ok());
/// assert!(ObjectStoreConfig::new("reports").replicas(6).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreConfig {
    bucket: String,
    description: Option<String>,
    ttl: Option<Duration>,
    max_bytes: Option<i64>,
    storage: StorageType,
    replicas: usize,
    placement: Option<Placement>,
    compression: bool,
}

impl ObjectStoreConfig {
    /// The default configuration for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            description: None,
            ttl: None,
            max_bytes: None,
            storage: StorageType::File,
            replicas: 1,
            placement: None,
            compression: false,
        }
    }

    /// The store's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A human-readable description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// How long an object is kept (the stream's `max_age`): its chunks and its info age out.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The store's size limit, in bytes: a put that would exceed it fails.
    #[must_use]
    pub fn max_bytes(mut self, bytes: i64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// File (default) or memory storage.
    #[must_use]
    pub fn storage(mut self, storage: StorageType) -> Self {
        self.storage = storage;
        self
    }

    /// How many servers keep a copy, `1..=5`.
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Where in a cluster the store lives.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Whether the server compresses the store on disk (S2). Needs nats-server 2.10 or newer:
    /// declaring the store on an older server is [`Error::ServerTooOld`] before any request.
    #[must_use]
    pub fn compression(mut self, compression: bool) -> Self {
        self.compression = compression;
        self
    }

    /// Checks the name and ranges without contacting the server.
    pub fn validate(&self) -> Result<()> {
        faststream_rules::validate_bucket(&self.bucket)?;
        let invalid = |problem: String| {
            Err(Error::InvalidBucketConfig {
                bucket: self.bucket.clone(),
                problem,
            })
        };
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!("replicas must be 1..=5, got {}", self.replicas));
        }
        if let Some(bytes) = self.max_bytes.filter(|bytes| *bytes <= 0) {
            return invalid(format!("max_bytes must be positive, got {bytes}"));
        }
        if self.ttl == Some(Duration::ZERO) {
            return invalid("ttl must be longer than zero (leave it unset for no TTL)".into());
        }
        Ok(())
    }

    /// Checks that the server, which reported `server_version`, has what this configuration
    /// asks for.
    pub(crate) fn check_server(&self, server_version: &str) -> Result<()> {
        if self.compression {
            features::require(COMPRESSION, COMPRESSION_SINCE, server_version)?;
        }
        Ok(())
    }

    /// The stream configuration, as async-nats's and nats.go's `create_object_store` build it.
    pub(crate) fn to_stream_config(&self) -> stream::Config {
        stream::Config {
            name: stream_name(&self.bucket),
            description: self.description.clone(),
            subjects: vec![chunk_subjects(&self.bucket), meta_subjects(&self.bucket)],
            max_age: self.ttl.unwrap_or_default(),
            max_bytes: self.max_bytes.unwrap_or(-1),
            storage: self.storage,
            num_replicas: self.replicas,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            compression: self.compression.then_some(stream::Compression::S2),
            placement: self.placement.clone(),
            ..Default::default()
        }
    }

    /// The fields in which an existing store differs from this configuration, one sentence
    /// each: `max_bytes: existing 1024, requested unlimited`.
    pub fn differences(&self, existing: &stream::Config) -> Vec<String> {
        let wanted = self.to_stream_config();
        let mut differences = Vec::new();
        let mut compare = |field: &str, existing: String, requested: String| {
            if existing != requested {
                differences.push(format!(
                    "{field}: existing {existing}, requested {requested}"
                ));
            }
        };
        let text = |value: &Option<String>| format!("{:?}", value.as_deref().unwrap_or(""));
        let limit = |value: i64| {
            if value <= 0 {
                "unlimited".to_owned()
            } else {
                value.to_string()
            }
        };
        let compressed = |config: &stream::Config| {
            matches!(config.compression, Some(stream::Compression::S2)).to_string()
        };
        compare(
            "description",
            text(&existing.description),
            text(&wanted.description),
        );
        compare(
            "ttl",
            format!("{:?}", existing.max_age),
            format!("{:?}", wanted.max_age),
        );
        compare(
            "max_bytes",
            limit(existing.max_bytes),
            limit(wanted.max_bytes),
        );
        compare(
            "storage",
            format!("{:?}", existing.storage),
            format!("{:?}", wanted.storage),
        );
        compare(
            "replicas",
            existing.num_replicas.max(1).to_string(),
            wanted.num_replicas.to_string(),
        );
        compare(
            "placement",
            format!("{:?}", existing.placement),
            format!("{:?}", wanted.placement),
        );
        compare("compression", compressed(existing), compressed(&wanted));
        differences
    }
}

/// The store's stream.
pub(crate) fn stream_name(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

fn chunk_subjects(bucket: &str) -> String {
    format!("$O.{bucket}.C.>")
}

fn meta_subjects(bucket: &str) -> String {
    format!("$O.{bucket}.M.>")
}

/// A store as found on (or created on) the server.
#[derive(Clone)]
pub(crate) struct DeclaredObjectStore {
    pub(crate) bucket: String,
    /// async-nats's handle, for what the crate does not wrap.
    pub(crate) store: object_store::ObjectStore,
    /// The stream, for reads, purges and the configuration it had when looked up.
    pub(crate) stream: stream::Stream,
}

impl std::fmt::Debug for DeclaredObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeclaredObjectStore")
            .field("bucket", &self.bucket)
            .field("stream", &self.config().name)
            .finish_non_exhaustive()
    }
}

impl DeclaredObjectStore {
    /// The stream's configuration when it was looked up or created.
    pub(crate) fn config(&self) -> &stream::Config {
        &self.stream.cached_info().config
    }

    /// Checks an explicitly requested configuration against the store as it is.
    pub(crate) fn check(&self, requested: &ObjectStoreConfig) -> Result<()> {
        let differences = requested.differences(self.config());
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::ObjectStoreConfigConflict {
                bucket: requested.bucket.clone(),
                differences,
            })
        }
    }

    /// The store of `stream`, if its subjects are an object store's.
    async fn from_stream(
        jetstream: &jetstream::Context,
        bucket: &str,
        stream: stream::Stream,
    ) -> Result<Self> {
        let failed = |source| Error::DeclareObjectStore {
            bucket: bucket.to_owned(),
            source,
        };
        let config = &stream.cached_info().config;
        let has = |subject: String| config.subjects.contains(&subject);
        if !has(chunk_subjects(bucket)) || !has(meta_subjects(bucket)) {
            return Err(failed(DeclareObjectStoreError::NotObjectStore {
                stream: config.name.clone(),
                subjects: config.subjects.clone(),
            }));
        }
        // async-nats builds its handle only from a lookup of its own: one more request, once
        // per bucket and broker.
        let store = jetstream
            .get_object_store(bucket)
            .await
            .map_err(|error| failed(DeclareObjectStoreError::Open(error)))?;
        Ok(Self {
            bucket: bucket.to_owned(),
            store,
            stream,
        })
    }
}

/// Looks a store up; `Ok(None)` if it does not exist.
pub(crate) async fn lookup(
    jetstream: &jetstream::Context,
    bucket: &str,
) -> Result<Option<DeclaredObjectStore>> {
    faststream_rules::validate_bucket(bucket)?;
    match jetstream.get_stream(stream_name(bucket)).await {
        Ok(stream) => Ok(Some(
            DeclaredObjectStore::from_stream(jetstream, bucket, stream).await?,
        )),
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(Error::DeclareObjectStore {
                bucket: bucket.to_owned(),
                source: DeclareObjectStoreError::Lookup(error),
            }),
        },
    }
}

/// Creates the store's stream. Creating an existing stream with an identical configuration
/// succeeds, so two services declaring the same store at once both succeed. If another process
/// created it meanwhile with another configuration (the server says the name is in use, or,
/// from 2.9 in a race, that the subjects overlap), the store is looked up again and returned as
/// it is; the caller checks it against what it asked for.
pub(crate) async fn create(
    jetstream: &jetstream::Context,
    config: &ObjectStoreConfig,
) -> Result<DeclaredObjectStore> {
    config.validate()?;
    let error = match jetstream.create_stream(config.to_stream_config()).await {
        Ok(stream) => {
            return DeclaredObjectStore::from_stream(jetstream, &config.bucket, stream).await
        }
        Err(error) => error,
    };
    let created_meanwhile = matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
                || js.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP
    );
    if created_meanwhile {
        if let Some(existing) = lookup(jetstream, &config.bucket).await? {
            tracing::debug!(bucket = %config.bucket, "object store created meanwhile by another client");
            return Ok(existing);
        }
    }
    Err(Error::DeclareObjectStore {
        bucket: config.bucket.clone(),
        source: DeclareObjectStoreError::Create(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream is the one async-nats's `create_object_store` makes.
    #[test]
    fn stream_layout() {
        let stream = ObjectStoreConfig::new("files").to_stream_config();
        assert_eq!(stream.name, "OBJ_files");
        assert_eq!(stream.subjects, ["$O.files.C.>", "$O.files.M.>"]);
        assert_eq!(stream.discard, stream::DiscardPolicy::New);
        assert!(stream.allow_rollup && stream.allow_direct);
        assert_eq!(stream.max_bytes, -1);
        assert_eq!(stream.compression, None);
        assert!(!stream.deny_delete && !stream.deny_purge);
    }

    #[test]
    fn differences_are_listed_field_by_field() {
        let existing = ObjectStoreConfig::new("files")
            .description("old")
            .max_bytes(1024)
            .ttl(Duration::from_secs(60))
            .to_stream_config();
        let requested = ObjectStoreConfig::new("files")
            .description("new")
            .storage(StorageType::Memory)
            .compression(true);
        assert_eq!(
            requested.differences(&existing),
            [
                "description: existing \"old\", requested \"new\"",
                "ttl: existing 60s, requested 0ns",
                "max_bytes: existing 1024, requested unlimited",
                "storage: existing File, requested Memory",
                "compression: existing false, requested true",
            ]
        );
        // A server's answer spells "no limit" as -1 and one replica as 0 or 1.
        let mut normalised = ObjectStoreConfig::new("files").to_stream_config();
        normalised.max_bytes = 0;
        normalised.num_replicas = 0;
        assert!(ObjectStoreConfig::new("files")
            .differences(&normalised)
            .is_empty());
    }

    #[test]
    fn validation() {
        assert!(ObjectStoreConfig::new("ok").validate().is_ok());
        let problem = |config: ObjectStoreConfig| config.validate().unwrap_err().to_string();
        assert_eq!(
            problem(ObjectStoreConfig::new("b").max_bytes(0)),
            "invalid configuration for bucket `b`: max_bytes must be positive, got 0"
        );
        assert_eq!(
            problem(ObjectStoreConfig::new("b").ttl(Duration::ZERO)),
            "invalid configuration for bucket `b`: ttl must be longer than zero (leave it unset \
             for no TTL)"
        );
        assert!(problem(ObjectStoreConfig::new("a.b")).starts_with("invalid bucket name `a.b`"));
    }

    #[test]
    fn compression_needs_2_10() {
        let config = ObjectStoreConfig::new("b").compression(true);
        assert!(config.check_server("2.10.0").is_ok());
        assert_eq!(
            config.check_server("2.9.10").unwrap_err().to_string(),
            "compressed object stores (ObjectStoreConfig::compression) need nats-server 2.10 or \
             newer; the server is 2.9.10"
        );
        assert!(ObjectStoreConfig::new("b").check_server("2.9.10").is_ok());
    }
}
