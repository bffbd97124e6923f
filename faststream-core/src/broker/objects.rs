//! Object stores through the broker: the watch of a store's changes, with or without a handler.

use async_nats::jetstream::kv;

use super::{NatsBroker, WatchOwner};
use crate::error::{Error, Result};
use crate::kv::key_value::KeyValue;
use crate::kv::options::KvWatch;
use crate::object::{ObjWatch, ObjWatcher};

impl NatsBroker {
    /// Watches the changes of the object store `bucket` without a handler: FastStream's
    /// `get_one` and async iteration over an `obj_watch` subscriber. The store is declared as
    /// `options` says, and the watch starts as a subscriber's would (every object's latest
    /// metadata first, unless `updates_only`).
    ///
    /// ```no_run
    /// use faststream_core::{NatsBroker, ObjWatch};
    ///
    /// # async fn demo(broker: NatsBroker) -> anyhow::Result<()> {
    /// let mut reports = broker.obj_watch("reports", ObjWatch::new()).await?;
    /// while let Some(report) = reports.next().await {
    ///     println!("{} changed: {} bytes", report.name(), report.size());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn obj_watch(&self, bucket: &str, options: ObjWatch) -> Result<ObjWatcher> {
        let watch = options.watch_of(bucket.to_owned().into());
        watch.validate()?;
        let ignore_deletes = watch.ignore_deletes;
        let pattern = faststream_rules::KeyPattern::parse(">")?;
        let watcher = self.watch(&pattern, watch, WatchOwner::Objects).await?;
        Ok(ObjWatcher::new(watcher, ignore_deletes))
    }

    /// The metadata subjects of the object store an object watch reads, as a bucket: the
    /// Key-Value watcher reads them unchanged (one message per object, rolled up, keyed by
    /// the name's base64).
    pub(crate) async fn object_meta_bucket(&self, options: &KvWatch) -> Result<KeyValue> {
        let bucket = options.bucket();
        faststream_rules::validate_bucket(bucket)?;
        let jetstream = self.jetstream()?;
        let stream_name = format!("OBJ_{bucket}");
        let stream = match jetstream.get_stream(&stream_name).await {
            Ok(stream) => stream,
            Err(_) if options.declares() => {
                jetstream
                    .create_object_store(async_nats::jetstream::object_store::Config {
                        bucket: bucket.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|source| Error::Bucket {
                        bucket: bucket.to_owned(),
                        operation: "create the object store",
                        source: Box::new(source),
                    })?;
                jetstream
                    .get_stream(&stream_name)
                    .await
                    .map_err(|source| Error::Bucket {
                        bucket: bucket.to_owned(),
                        operation: "look up the object store",
                        source: Box::new(source),
                    })?
            }
            Err(source) => {
                return Err(Error::Bucket {
                    bucket: bucket.to_owned(),
                    operation: "look up the object store",
                    source: Box::new(source),
                })
            }
        };
        let store = kv::Store {
            name: bucket.to_owned(),
            stream_name,
            prefix: format!("$O.{bucket}.M."),
            put_prefix: None,
            use_jetstream_prefix: false,
            stream,
        };
        Ok(KeyValue::new(store, self.client()?))
    }
}
