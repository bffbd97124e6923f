//! JSON values on `KeyValue`: round trips beside the byte-level methods, and errors naming the
//! bucket and the key (a stored value that does not decode is an error, not a panic).

use faststream_core::error::chain;
use faststream_core::kv::Versioned;
use faststream_core::Error;
use serde::{Deserialize, Serialize};

use crate::common::{connected_broker, on_each_server};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    items: Vec<String>,
    paid: bool,
}

#[tokio::test]
async fn json_values_round_trip() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let kv = broker.key_value("typed").await?;
        let order = Order {
            id: 7,
            items: vec!["tea".into(), "cake".into()],
            paid: false,
        };
        let first = kv.put_json("orders.7", &order).await?;
        assert_eq!(kv.get_json::<Order>("orders.7").await?, Some(order.clone()));
        // Stored as plain JSON, readable by any client.
        let raw = kv.get("orders.7").await?.expect("stored");
        assert_eq!(serde_json::from_slice::<Order>(&raw)?, order);

        let Some(Versioned { value, revision }) = kv.entry_json::<Order>("orders.7").await? else {
            anyhow::bail!("no entry");
        };
        assert_eq!((value.id, revision), (7, first));
        let paid = Order {
            paid: true,
            ..value
        };
        let second = kv.update_json("orders.7", &paid, revision).await?;
        assert!(second > first);
        let stale = kv
            .update_json("orders.7", &paid, revision)
            .await
            .expect_err("stale revision");
        assert!(stale.is_key_changed(), "{stale:?}");

        kv.create_json("orders.8", &order).await?;
        let exists = kv
            .create_json("orders.8", &order)
            .await
            .expect_err("exists");
        assert!(exists.is_key_changed(), "{exists:?}");
        // Unsized values too.
        kv.put_json("names", &["a", "b"][..]).await?;
        assert_eq!(
            kv.get_json::<Vec<String>>("names").await?,
            Some(vec!["a".into(), "b".into()])
        );

        // No value: never written, or deleted.
        assert_eq!(kv.get_json::<Order>("orders.none").await?, None);
        kv.delete("orders.8").await?;
        assert_eq!(kv.get_json::<Order>("orders.8").await?, None);
        assert_eq!(kv.entry_json::<Order>("orders.8").await?, None);
        kv.create_json("orders.8", &order).await?; // over the delete marker
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_value_that_does_not_decode_is_an_error_naming_bucket_key_and_revision(
) -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let kv = broker.key_value("typed_bad").await?;
        let revision = kv.put("orders.1", "not json".into()).await?;
        let error = kv
            .get_json::<Order>("orders.1")
            .await
            .expect_err("not JSON");
        match &error {
            Error::Decode {
                bucket,
                key,
                revision: at,
                type_name,
                ..
            } => {
                assert_eq!(
                    (bucket.as_str(), key.as_str(), *at),
                    ("typed_bad", "orders.1", revision)
                );
                assert!(type_name.ends_with("Order"), "{type_name}");
            }
            other => anyhow::bail!("expected Decode, got {other:?}"),
        }
        let text = chain(&error);
        assert!(
            text.starts_with(&format!(
                "the value of `orders.1` in bucket `typed_bad` (revision {revision}) is not a `"
            )) && text.contains("expected ident"),
            "{text}"
        );
        // Valid JSON of another shape, too.
        kv.put_json("orders.2", &serde_json::json!({ "id": "seven" }))
            .await?;
        let error = kv
            .entry_json::<Order>("orders.2")
            .await
            .expect_err("wrong shape");
        assert!(
            matches!(&error, Error::Decode { key, .. } if key == "orders.2"),
            "{error:?}"
        );

        // A value that does not encode: named, nothing sent.
        let mut not_json = std::collections::HashMap::new();
        not_json.insert(vec![1], "non-string map keys");
        let error = kv
            .put_json("orders.3", &not_json)
            .await
            .expect_err("does not encode");
        assert!(
            matches!(&error, Error::KeyValue { operation: "put", key, bucket, .. }
                if key == "orders.3" && bucket == "typed_bad"),
            "{error:?}"
        );
        assert_eq!(kv.entry("orders.3").await?, None);
        let error = kv
            .get_json::<Order>("bad..key")
            .await
            .expect_err("invalid key");
        assert!(
            matches!(&error, Error::KeyValue { key, .. } if key == "bad..key"),
            "{error:?}"
        );
        Ok(())
    })
    .await
}
