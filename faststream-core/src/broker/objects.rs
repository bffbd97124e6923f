//! Object stores through the broker: the watch of a store's changes, with or without a handler.

use async_nats::jetstream::kv;

use super::{NatsBroker, WatchOwner};
use crate::error::Result;
use crate::kv::key_value::KeyValue;
use crate::kv::options::KvWatch;
use crate::object::{ObjWatch, ObjWatcher};
use crate::ObjectStore;

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
    /// the name's base64). The store is declared or only looked up as the watch says, and
    /// cached like every store.
    pub(crate) async fn object_meta_bucket(&self, options: &KvWatch) -> Result<KeyValue> {
        let objects = self.watched_object_store(options).await?;
        let bucket = objects.name().to_owned();
        let stream = objects.declared().stream.clone();
        let store = kv::Store {
            stream_name: stream.cached_info().config.name.clone(),
            prefix: format!("$O.{bucket}.M."),
            name: bucket,
            put_prefix: None,
            use_jetstream_prefix: false,
            stream,
        };
        Ok(KeyValue::new(store, self.client()?))
    }

    /// The object store an object watch is on, declared or only looked up as it says.
    pub(crate) async fn watched_object_store(&self, options: &KvWatch) -> Result<ObjectStore> {
        if options.declares() {
            self.object_storage(options.bucket()).await
        } else {
            self.lookup_object_storage(options.bucket()).await
        }
    }
}
