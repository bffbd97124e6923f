//! Reads of a bucket that has a group: nats-server has every mirror of a bucket that allows
//! direct gets answer them too, the group's mirror (whose subjects are its own) among them, so
//! a direct get alone may say "nothing there" for a key that exists. `KeyValue::get`,
//! `entry` and `entry_for_revision` confirm a miss with the stream leader.

use super::*;

#[tokio::test]
async fn every_key_is_read_while_a_group_mirrors_the_bucket() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const KEYS: usize = 40;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let watch = KvWatch::new(BUCKET).group(settings("readers", 4));
        let member = start_member(&server, "m1", &calls, watch).await?;
        let mut revisions = Vec::new();
        for key in 0..KEYS {
            revisions.push(store.put(format!("orders.{key}"), "v".into()).await?);
        }
        let kv = connected_broker(&server).await?.key_value(BUCKET).await?;
        let mut missed = Vec::new();
        for (key, revision) in revisions.into_iter().enumerate() {
            let key = format!("orders.{key}");
            if kv.get(&key).await?.is_none()
                || kv.entry(&key).await?.is_none()
                || kv.entry_for_revision(&key, revision).await?.is_none()
            {
                missed.push(key);
            }
        }
        assert_eq!(kv.get("orders.none").await?, None);
        member.stop().await??;
        assert!(missed.is_empty(), "read as missing: {missed:?}");
        Ok(())
    })
    .await
}
