//! Bucket configuration, and declaring or looking up a bucket on the server.
//!
//! Buckets are created as their backing stream (`KV_<bucket>`, subjects `$KV.<bucket>.>`)
//! rather than with async-nats's `create_key_value`, which fails on nats-server 2.9 (it parses
//! an account-info field that 2.9 does not send). The stream settings are the ones async-nats
//! and nats.go use, so buckets made here and by other clients are interchangeable.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::error::{DeclareBucketError, Error, Result};
use crate::kv::features::{self, ATOMIC_BATCH_SINCE, LIMIT_MARKERS_SINCE};

pub use async_nats::jetstream::stream::{Placement, Republish, StorageType};

/// The most revisions per key a bucket can keep (ADR-8).
pub const MAX_HISTORY: i64 = 64;

/// The shortest time the server keeps a limit marker (it refuses a shorter
/// `subject_delete_marker_ttl`).
const MIN_MARKER_TTL: Duration = Duration::from_secs(1);

/// How [`BucketConfig::limit_markers`] is named in [`Error::ServerTooOld`].
const LIMIT_MARKERS: &str = "limit markers (BucketConfig::limit_markers)";

/// How [`BucketConfig::allow_atomic`] is named in [`Error::ServerTooOld`].
const ALLOW_ATOMIC: &str = "atomic writes (BucketConfig::allow_atomic)";

/// A bucket's configuration, with FastStream's `key_value` parameters.
///
/// Unset values are the NATS defaults: one revision per key, no TTL, no size limits, file
/// storage, one replica, direct get allowed.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::kv::BucketConfig;
///
/// let config = BucketConfig::new("sessions")
///     .description("web sessions")
///     .history(5)
///     .ttl(Duration::from_secs(3600));
/// assert!(config.validate().is_ok());
/// assert!(BucketConfig::new("sessions").history(65).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BucketConfig {
    bucket: String,
    description: Option<String>,
    max_value_size: Option<i32>,
    history: i64,
    ttl: Option<Duration>,
    max_bytes: Option<i64>,
    storage: StorageType,
    replicas: usize,
    placement: Option<Placement>,
    republish: Option<Republish>,
    direct: bool,
    limit_markers: Option<Duration>,
    allow_atomic: bool,
}

impl BucketConfig {
    /// The default configuration for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            description: None,
            max_value_size: None,
            history: 1,
            ttl: None,
            max_bytes: None,
            storage: StorageType::File,
            replicas: 1,
            placement: None,
            republish: None,
            direct: true,
            limit_markers: None,
            allow_atomic: false,
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A human-readable description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The largest value accepted, in bytes.
    #[must_use]
    pub fn max_value_size(mut self, bytes: i32) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// How many revisions to keep per key, `1..=64`.
    #[must_use]
    pub fn history(mut self, revisions: i64) -> Self {
        self.history = revisions;
        self
    }

    /// How long a value lives.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The bucket's size limit, in bytes.
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

    /// Where in a cluster the bucket lives.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Republish every change to another subject.
    #[must_use]
    pub fn republish(mut self, republish: Republish) -> Self {
        self.republish = Some(republish);
        self
    }

    /// Whether any server with a copy may answer reads (default `true`).
    #[must_use]
    pub fn direct(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }

    /// Allow per-key TTLs ([`KeyValue::create_with_ttl`](crate::KeyValue::create_with_ttl),
    /// [`purge_with_ttl`](crate::KeyValue::purge_with_ttl)) and have the server write a limit
    /// marker when a key ages out, by the bucket's [`ttl`](Self::ttl) or its own TTL: watchers
    /// then see the expiry as an [`Operation::Expired`](crate::Operation::Expired) entry instead
    /// of the key silently vanishing. `marker_ttl` is how long the marker itself is kept, at
    /// least 1 s (the server's minimum); the server also raises any shorter per-key TTL to it.
    ///
    /// Needs nats-server 2.11 or newer: declaring the bucket on an older server is
    /// [`Error::ServerTooOld`] before any request. Sets the stream's `allow_msg_ttl` and
    /// `subject_delete_marker_ttl`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use faststream_core::kv::BucketConfig;
    ///
    /// let sessions = BucketConfig::new("sessions").limit_markers(Duration::from_secs(60));
    /// assert!(sessions.validate().is_ok());
    /// let too_short = BucketConfig::new("sessions").limit_markers(Duration::from_millis(500));
    /// assert!(too_short.validate().is_err());
    /// ```
    #[must_use]
    pub fn limit_markers(mut self, marker_ttl: Duration) -> Self {
        self.limit_markers = Some(marker_ttl);
        self
    }

    /// Allow atomic commits of several writes ([`KeyValue::atomic`](crate::KeyValue::atomic)):
    /// sets the stream's `allow_atomic` (ADR-50 atomic batch publish). Needs nats-server 2.12 or
    /// newer: declaring it on an older server is [`Error::ServerTooOld`] before any request.
    ///
    /// An existing bucket without it takes it: declaring the bucket with `allow_atomic(true)`
    /// (and otherwise its configuration) updates its stream, and then reports it as it is.
    /// The reverse is not done: asking for `false` of a bucket that allows atomic writes is a
    /// [`Error::BucketConfigConflict`] naming `allow_atomic`.
    ///
    /// ```
    /// use faststream_core::kv::BucketConfig;
    ///
    /// let accounts = BucketConfig::new("accounts").allow_atomic(true);
    /// assert!(accounts.validate().is_ok());
    /// ```
    #[must_use]
    pub fn allow_atomic(mut self, allow: bool) -> Self {
        self.allow_atomic = allow;
        self
    }

    /// Checks names and ranges without contacting the server.
    pub fn validate(&self) -> Result<()> {
        faststream_rules::validate_bucket(&self.bucket)?;
        let invalid = |problem: String| {
            Err(Error::InvalidBucketConfig {
                bucket: self.bucket.clone(),
                problem,
            })
        };
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return invalid(format!(
                "history must be 1..={MAX_HISTORY}, got {}",
                self.history
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!("replicas must be 1..=5, got {}", self.replicas));
        }
        if let Some(size) = self.max_value_size.filter(|size| *size <= 0) {
            return invalid(format!("max_value_size must be positive, got {size}"));
        }
        if let Some(bytes) = self.max_bytes.filter(|bytes| *bytes <= 0) {
            return invalid(format!("max_bytes must be positive, got {bytes}"));
        }
        if self.ttl == Some(Duration::ZERO) {
            return invalid("ttl must be longer than zero (leave it unset for no TTL)".into());
        }
        if let Some(marker_ttl) = self.limit_markers.filter(|ttl| *ttl < MIN_MARKER_TTL) {
            return invalid(format!(
                "limit_markers must be at least {MIN_MARKER_TTL:?} (the server's minimum for \
                 how long a marker is kept), got {marker_ttl:?}"
            ));
        }
        Ok(())
    }

    /// Checks that the server, which reported `server_version`, has what this configuration
    /// asks for.
    pub(crate) fn check_server(&self, server_version: &str) -> Result<()> {
        if self.limit_markers.is_some() {
            features::require(LIMIT_MARKERS, LIMIT_MARKERS_SINCE, server_version)?;
        }
        if self.allow_atomic {
            features::require(ALLOW_ATOMIC, ATOMIC_BATCH_SINCE, server_version)?;
        }
        Ok(())
    }

    /// The stream configuration, as async-nats's and nats.go's `create_key_value` build it.
    fn to_stream_config(&self) -> stream::Config {
        stream::Config {
            name: stream_name(&self.bucket),
            description: self.description.clone(),
            subjects: vec![format!("$KV.{}.>", self.bucket)],
            max_messages_per_subject: self.history,
            max_bytes: self.max_bytes.unwrap_or(-1),
            max_age: self.ttl.unwrap_or_default(),
            max_message_size: self.max_value_size.unwrap_or(-1),
            storage: self.storage,
            republish: self.republish.clone(),
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: self.direct,
            num_replicas: self.replicas,
            discard: stream::DiscardPolicy::New,
            placement: self.placement.clone(),
            allow_message_ttl: self.limit_markers.is_some(),
            subject_delete_marker_ttl: self.limit_markers,
            allow_atomic_publish: self.allow_atomic,
            ..Default::default()
        }
    }

    /// The fields in which an existing bucket differs from this configuration.
    fn differences(&self, existing: &stream::Config) -> Vec<String> {
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
        compare(
            "description",
            text(&existing.description),
            text(&wanted.description),
        );
        compare(
            "history",
            existing.max_messages_per_subject.to_string(),
            wanted.max_messages_per_subject.to_string(),
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
            "max_value_size",
            limit(existing.max_message_size.into()),
            limit(wanted.max_message_size.into()),
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
        compare(
            "republish",
            format!("{:?}", existing.republish),
            format!("{:?}", wanted.republish),
        );
        compare(
            "direct",
            existing.allow_direct.to_string(),
            wanted.allow_direct.to_string(),
        );
        compare("limit_markers", markers(existing), markers(&wanted));
        compare(
            "allow_atomic",
            existing.allow_atomic_publish.to_string(),
            wanted.allow_atomic_publish.to_string(),
        );
        differences
    }
}

/// A stream's per-message TTL and marker settings, as [`BucketConfig::differences`] shows them.
fn markers(config: &stream::Config) -> String {
    match (config.subject_delete_marker_ttl, config.allow_message_ttl) {
        (Some(marker_ttl), _) => format!("{marker_ttl:?}"),
        (None, true) => "none (per-key TTLs allowed)".to_owned(),
        (None, false) => "none".to_owned(),
    }
}

fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// A bucket as found on (or created on) the server.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredBucket {
    pub(crate) store: kv::Store,
    pub(crate) config: stream::Config,
}

impl DeclaredBucket {
    fn from_stream(bucket: &str, stream: stream::Stream) -> Self {
        let config = stream.cached_info().config.clone();
        let (prefix, put_prefix) = subject_prefixes(bucket, config.mirror.as_ref());
        let store = kv::Store {
            name: bucket.to_owned(),
            stream_name: config.name.clone(),
            prefix,
            put_prefix,
            // Requests go to this connection's own JetStream API (`$JS.API`): no domain prefix.
            use_jetstream_prefix: false,
            stream,
        };
        Self { store, config }
    }

    /// Checks an explicitly requested configuration against the bucket as it is, first enabling
    /// atomic writes on it (a stream update) if that is all it lacks of `requested`'s
    /// `allow_atomic`; returns the bucket as it then is.
    pub(crate) async fn check_or_allow_atomic(
        self,
        jetstream: &jetstream::Context,
        requested: &BucketConfig,
    ) -> Result<Self> {
        if !requested.allow_atomic || self.config.allow_atomic_publish {
            self.check(requested)?;
            return Ok(self);
        }
        // Only the stream's own setting changes: the rest must already match.
        let mut as_it_is = self.config.clone();
        as_it_is.allow_atomic_publish = true;
        if !requested.differences(&as_it_is).is_empty() {
            self.check(requested)?;
        }
        jetstream
            .update_stream(&as_it_is)
            .await
            .map_err(|source| Error::DeclareBucket {
                bucket: requested.bucket.clone(),
                source: DeclareBucketError::AllowAtomic(source),
            })?;
        tracing::info!(bucket = %requested.bucket, "allowed atomic writes on an existing bucket");
        // Looked up again for the stream handle's cached info, which `KvBatch` reads.
        let updated =
            lookup(jetstream, &requested.bucket)
                .await?
                .ok_or_else(|| Error::BucketNotFound {
                    bucket: requested.bucket.clone(),
                })?;
        updated.check(requested)?;
        Ok(updated)
    }

    /// Checks an explicitly requested configuration against the bucket as it is.
    pub(crate) fn check(&self, requested: &BucketConfig) -> Result<()> {
        let differences = requested.differences(&self.config);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::BucketConfigConflict {
                bucket: requested.bucket.clone(),
                differences,
            })
        }
    }
}

/// The subject prefix a bucket's entries carry (read and watched), and where writes go if not
/// there. A mirror holds its origin's entries under the origin's subjects (`$KV.<origin>.`) and
/// takes no writes: they go to the origin, through the mirror's external API prefix if it has
/// one. As nats.go's `bind` does; async-nats's `get_key_value` sets the put prefix only for
/// external mirrors, so a local mirror's writes find no stream.
fn subject_prefixes(bucket: &str, mirror: Option<&stream::Source>) -> (String, Option<String>) {
    let Some(mirror) = mirror else {
        return (format!("$KV.{bucket}."), None);
    };
    let origin = mirror
        .name
        .strip_prefix("KV_")
        .unwrap_or(mirror.name.as_str());
    let prefix = format!("$KV.{origin}.");
    let put_prefix = match mirror.external.as_ref() {
        Some(external) if !external.api_prefix.is_empty() => {
            format!("{}.$KV.{origin}.", external.api_prefix)
        }
        _ => prefix.clone(),
    };
    (prefix, Some(put_prefix))
}

/// Looks a bucket up with one request; `Ok(None)` if it does not exist.
pub(crate) async fn lookup(
    jetstream: &jetstream::Context,
    bucket: &str,
) -> Result<Option<DeclaredBucket>> {
    faststream_rules::validate_bucket(bucket)?;
    match jetstream.get_stream(stream_name(bucket)).await {
        Ok(stream) => {
            let declared = DeclaredBucket::from_stream(bucket, stream);
            if declared.config.max_messages_per_subject < 1 {
                return Err(Error::DeclareBucket {
                    bucket: bucket.to_owned(),
                    source: DeclareBucketError::NotKeyValue {
                        stream: declared.config.name,
                    },
                });
            }
            Ok(Some(declared))
        }
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(Error::DeclareBucket {
                bucket: bucket.to_owned(),
                source: DeclareBucketError::Lookup(error),
            }),
        },
    }
}

/// Creates the bucket's stream. Creating an existing stream with an identical configuration
/// succeeds, so two services declaring the same bucket at once both succeed. If another
/// process created it meanwhile with another configuration (the server says the name is in
/// use, or, from 2.9 in a race, that the subjects overlap), the bucket is looked up again and
/// returned as it is; the caller checks it against what it asked for.
pub(crate) async fn create(
    jetstream: &jetstream::Context,
    config: &BucketConfig,
) -> Result<DeclaredBucket> {
    config.validate()?;
    let error = match jetstream.create_stream(config.to_stream_config()).await {
        Ok(stream) => return Ok(DeclaredBucket::from_stream(&config.bucket, stream)),
        Err(error) => error,
    };
    // nats-server 2.9 may answer a creation racing another with "subjects overlap" rather than
    // "name in use": both mean the stream may have just been created, so look it up.
    let created_meanwhile = matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
                || js.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP
    );
    if created_meanwhile {
        if let Some(existing) = lookup(jetstream, &config.bucket).await? {
            tracing::debug!(bucket = %config.bucket, "bucket created meanwhile by another client");
            return Ok(existing);
        }
    }
    Err(Error::DeclareBucket {
        bucket: config.bucket.clone(),
        source: DeclareBucketError::Create(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_markers() {
        let config = BucketConfig::new("b").limit_markers(Duration::from_secs(1));
        assert!(config.validate().is_ok());
        let stream = config.to_stream_config();
        assert!(stream.allow_message_ttl);
        assert_eq!(
            stream.subject_delete_marker_ttl,
            Some(Duration::from_secs(1))
        );
        let plain = BucketConfig::new("b").to_stream_config();
        assert!(!plain.allow_message_ttl);
        assert_eq!(plain.subject_delete_marker_ttl, None);

        let error = BucketConfig::new("b")
            .limit_markers(Duration::from_millis(999))
            .validate()
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidBucketConfig { problem, .. }
                if problem.starts_with("limit_markers must be at least 1s") && problem.ends_with("got 999ms")),
            "{error}"
        );

        assert_eq!(
            config.differences(&plain),
            ["limit_markers: existing none, requested 1s"]
        );
        assert_eq!(
            BucketConfig::new("b").differences(&stream),
            ["limit_markers: existing 1s, requested none"]
        );
        assert!(config.differences(&stream).is_empty());
    }

    #[test]
    fn limit_markers_need_2_11() {
        let config = BucketConfig::new("b").limit_markers(Duration::from_secs(1));
        assert!(config.check_server("2.11.0").is_ok());
        assert!(BucketConfig::new("b").check_server("2.9.10").is_ok());
        let error = config.check_server("2.9.10").unwrap_err();
        assert_eq!(
            error.to_string(),
            "limit markers (BucketConfig::limit_markers) need nats-server 2.11 or newer; the \
             server is 2.9.10"
        );
    }
}
