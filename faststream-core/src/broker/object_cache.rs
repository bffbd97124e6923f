//! The per-broker object store cache: after the first `object_storage(bucket)`, later calls
//! make no request.

use std::collections::HashMap;

use async_nats::jetstream;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::object::config::{self, ObjectStoreConfig};
use crate::object::store::ObjectStore;

/// How to obtain an object store that is not cached yet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeclareStore<'a> {
    /// Use the store as it is; create it with the default configuration if it is missing.
    UseOrCreate,
    /// The store must have exactly this configuration; create it with it if it is missing.
    Exactly(&'a ObjectStoreConfig),
    /// Only look the store up; missing is an error.
    LookupOnly,
}

/// Object stores already declared or looked up through one broker, by name.
#[derive(Debug, Default)]
pub(crate) struct ObjectStoreCache {
    // One lock for all stores, as for buckets: two concurrent first calls for the same store
    // make one set of requests.
    stores: Mutex<HashMap<String, ObjectStore>>,
}

impl ObjectStoreCache {
    pub(crate) async fn get_or_declare(
        &self,
        jetstream: &jetstream::Context,
        bucket: &str,
        declare: DeclareStore<'_>,
    ) -> Result<ObjectStore> {
        if let DeclareStore::Exactly(config) = declare {
            config.validate()?;
            config.check_server(&jetstream.client().server_info().version)?;
        } else {
            faststream_rules::validate_bucket(bucket)?;
        }
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(bucket) {
            if let DeclareStore::Exactly(config) = declare {
                store.declared().check(config)?;
            }
            return Ok(store.clone());
        }
        let declared = match config::lookup(jetstream, bucket).await? {
            Some(existing) => {
                if let DeclareStore::Exactly(config) = declare {
                    existing.check(config)?;
                }
                tracing::debug!(bucket, "found existing object store");
                existing
            }
            None => {
                let created = match declare {
                    DeclareStore::LookupOnly => {
                        return Err(Error::ObjectStoreNotFound {
                            bucket: bucket.to_owned(),
                        })
                    }
                    // Another client may have created it since the lookup: `create` then
                    // returns it as it is, used as it is here...
                    DeclareStore::UseOrCreate => {
                        config::create(jetstream, &ObjectStoreConfig::new(bucket)).await?
                    }
                    // ...and checked against the configuration asked for here.
                    DeclareStore::Exactly(config) => {
                        let created = config::create(jetstream, config).await?;
                        created.check(config)?;
                        created
                    }
                };
                tracing::info!(bucket, "created object store");
                created
            }
        };
        let store = ObjectStore::new(declared, jetstream.clone());
        stores.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }
}
