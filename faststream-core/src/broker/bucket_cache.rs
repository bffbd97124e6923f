//! The per-broker bucket cache: after the first `key_value(bucket)`, later calls make no request.

use std::collections::HashMap;

use async_nats::jetstream;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::kv::bucket::{self, BucketConfig, DeclaredBucket};
use crate::kv::key_value::KeyValue;
use crate::kv::options::KvWatch;

/// How to obtain a bucket that is not cached yet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Declare<'a> {
    /// Use the bucket as it is; create it with the default configuration if it is missing.
    UseOrCreate,
    /// The bucket must have exactly this configuration; create it with it if it is missing.
    Exactly(&'a BucketConfig),
    /// Only look the bucket up; missing is an error.
    LookupOnly,
}

/// Buckets already declared or looked up through one broker, by name.
#[derive(Debug, Default)]
pub(crate) struct BucketCache {
    // One lock for all buckets: declarations are rare (start-up) and serialising them means two
    // concurrent first calls for the same bucket make one set of requests, not two.
    buckets: Mutex<HashMap<String, DeclaredBucket>>,
}

impl<'a> Declare<'a> {
    /// What a watch's `declare` setting asks for: create if missing, or only look up.
    pub(crate) fn for_watch(watch: &KvWatch) -> Self {
        if watch.declare {
            Declare::UseOrCreate
        } else {
            Declare::LookupOnly
        }
    }
}

impl BucketCache {
    pub(crate) async fn get_or_declare(
        &self,
        jetstream: &jetstream::Context,
        bucket: &str,
        declare: Declare<'_>,
    ) -> Result<KeyValue> {
        if let Declare::Exactly(config) = declare {
            config.validate()?;
            config.check_server(&jetstream.client().server_info().version)?;
        } else {
            faststream_rules::validate_bucket(bucket)?;
        }
        let mut buckets = self.buckets.lock().await;
        if let Some(declared) = buckets.get(bucket) {
            let Declare::Exactly(config) = declare else {
                return Ok(KeyValue::new(declared.store.clone(), jetstream.client()));
            };
            let checked = declared
                .clone()
                .check_or_allow_atomic(jetstream, config)
                .await?;
            let store = KeyValue::new(checked.store.clone(), jetstream.client());
            buckets.insert(bucket.to_owned(), checked);
            return Ok(store);
        }
        let declared = match bucket::lookup(jetstream, bucket).await? {
            Some(existing) => {
                let existing = match declare {
                    Declare::Exactly(config) => {
                        existing.check_or_allow_atomic(jetstream, config).await?
                    }
                    _ => existing,
                };
                tracing::debug!(bucket, "found existing bucket");
                existing
            }
            None => {
                let created = match declare {
                    Declare::LookupOnly => {
                        return Err(Error::BucketNotFound {
                            bucket: bucket.to_owned(),
                        })
                    }
                    // Another client may have created it since the lookup: `create` then
                    // returns it as it is, used as it is here...
                    Declare::UseOrCreate => {
                        bucket::create(jetstream, &BucketConfig::new(bucket)).await?
                    }
                    // ...and checked against the configuration asked for here.
                    Declare::Exactly(config) => {
                        let created = bucket::create(jetstream, config).await?;
                        created.check(config)?;
                        created
                    }
                };
                tracing::info!(bucket, "created bucket");
                created
            }
        };
        let store = KeyValue::new(declared.store.clone(), jetstream.client());
        buckets.insert(bucket.to_owned(), declared);
        Ok(store)
    }
}
