//! The AsyncAPI options and what the types say: a typed payload picked up from the derive
//! alone, an untyped one, `schema = T`, `include_in_schema`, a title, replies and publishers.

use faststream_core::{publisher, subscriber, App, BrokerConfig, Json, KvMessage};

#[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
struct Order {
    id: u64,
}

#[derive(serde::Deserialize)]
struct Untyped {
    _id: u64,
}

/// Typed by the derive.
#[subscriber("orders.{id}", kv_watch = "shop")]
async fn typed(order: Json<Order>, _msg: KvMessage) {
    let _ = order.0.id;
}

#[subscriber("raw", kv_watch = "shop", schema = Order, title = "Raw orders")]
async fn overridden(_value: bytes::Bytes) {}

#[subscriber("legacy", description = "No schema here")]
async fn untyped(_value: Json<Untyped>) {}

#[subscriber("hidden", include_in_schema = false)]
async fn hidden() {}

#[subscriber("quotes")]
#[publisher("quoted", schema = Order, description = "Each quote")]
async fn quote(order: Option<Json<Order>>) -> anyhow::Result<Json<Order>> {
    order.ok_or_else(|| anyhow::anyhow!("no order"))
}

fn main() {
    let document = App::new(BrokerConfig::new("nats://127.0.0.1:4222"))
        .asyncapi()
        .expect("a document");
    let value = document.as_value();
    let messages = &value["components"]["messages"];
    let payload = |key: &str| messages[key]["payload"]["$ref"].as_str().map(str::to_owned);
    assert_eq!(
        payload("orders._id__Typed_SubscribeMessage").as_deref(),
        Some("#/components/schemas/Order")
    );
    assert_eq!(
        payload("Raw_orders_SubscribeMessage").as_deref(),
        Some("#/components/schemas/Order")
    );
    assert!(messages["legacy_Untyped_SubscribeMessage"]["x-faststream-untyped"].is_string());
    assert!(value["channels"].get("hidden:Hidden").is_none());
    assert!(value["channels"].get("quotes:Quote:Reply").is_some());
    assert!(value["channels"].get("quoted:Publisher").is_some());
    assert_eq!(document.warnings().len(), 1, "{:?}", document.warnings());
}
