//! A service that describes itself: every kind of subscriber and publisher, documented in the
//! AsyncAPI document it serves at `/asyncapi` (a page), `/asyncapi.json` and `/asyncapi.yaml`.
//! The payloads' schemas come from `#[derive(JsonSchema)]`; the summaries from doc comments.
//!
//! ```text
//! FASTSTREAM_HTTP_ADDR=127.0.0.1:9464 cargo run -p examples --bin storefront
//! # open http://127.0.0.1:9464/asyncapi
//! cargo run -p examples --bin storefront -- --asyncapi yaml > asyncapi.yaml   # no NATS needed
//! ```

use faststream_core::{
    app_info, publisher, subscriber, App, AppInfo, BrokerConfig, Json, KvMessage, KvView,
    ObjMessage, Path, State,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A product as the catalog bucket holds it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Product {
    /// Stock keeping unit.
    sku: String,
    /// Price in cents.
    price: u64,
    /// Labels for search.
    #[serde(default)]
    tags: Vec<String>,
}

/// A price change, as the pricing team writes it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct PriceChange {
    sku: String,
    /// The new price in cents.
    price: u64,
    /// Why it changed.
    reason: Option<String>,
}

/// A flag of the `flags` bucket, kept in memory by a view.
#[derive(Debug, Deserialize)]
struct Flag {
    enabled: bool,
}

/// An order placed by a customer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<Line>,
}

/// One line of an order.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Line {
    sku: String,
    quantity: u32,
}

/// The answer to a quote request.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Quote {
    sku: String,
    price: u64,
    available: bool,
}

/// A bill, published once an order is billed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Bill {
    order: u64,
    total: u64,
}

/// A stand-in for the service's database.
#[derive(Clone, Default)]
struct Db;

/// Re-indexes a product when its catalog entry changes.
///
/// Deletions are handled too: the product leaves the index.
#[subscriber("products.{sku}", kv_watch = "catalog")]
async fn index_product(Path(sku): Path<String>, product: Option<Json<Product>>, msg: KvMessage) {
    match product {
        Some(Json(product)) => tracing::info!(sku, price = product.price, "indexed"),
        None => tracing::info!(sku, operation = ?msg.operation(), "removed from the index"),
    }
}

/// Applies each price change once across the fleet.
#[subscriber("prices.>", kv_watch = "pricing", group = "repricers")]
async fn reprice(Json(change): Json<PriceChange>, flags: KvView<Flag>) {
    let audit = flags.get("pricing.audit").is_some_and(|flag| flag.enabled);
    tracing::info!(sku = change.sku, price = change.price, audit, "repriced");
}

/// Thumbnails each new product image.
#[subscriber("images", obj_watch = true, max_workers = 4)]
async fn thumbnail(name: String, object: ObjMessage) {
    tracing::info!(name, size = object.size(), "thumbnail");
}

/// Quotes a product's price.
#[subscriber("quotes.{sku}", title = "Quote requests")]
async fn quote(Path(sku): Path<String>, State(_db): State<Db>) -> Json<Quote> {
    Json(Quote {
        sku,
        price: 1999,
        available: true,
    })
}

/// Places an order; one instance of the service takes each.
#[subscriber("orders.place", queue = "order-takers")]
async fn place_order(Json(order): Json<Order>) -> anyhow::Result<()> {
    tracing::info!(order = order.id, customer = order.customer, "placed");
    Ok(())
}

/// Bills each order kept by the ORDERS stream, and publishes the bill.
#[subscriber("orders.placed", stream = "ORDERS", durable = "billing")]
#[publisher("billing.bills", description = "Every bill, once its order is billed")]
async fn bill(Json(order): Json<Order>) -> anyhow::Result<Json<Bill>> {
    let total = order
        .lines
        .iter()
        .map(|line| u64::from(line.quantity))
        .sum();
    Ok(Json(Bill {
        order: order.id,
        total,
    }))
}

/// Internal: left out of the document.
#[subscriber("internal.ping", include_in_schema = false)]
async fn ping() -> &'static str {
    "pong"
}

fn app() -> App {
    App::new(BrokerConfig::from_env())
        .info(AppInfo {
            title: "storefront".to_owned(),
            description: "A shop's catalog, pricing, images and orders.".to_owned(),
            ..app_info!()
        })
        .with_state(Db)
        .with_kv_view::<Flag>("flags", "pricing.>")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if let Some(flag) = args.next() {
        anyhow::ensure!(
            flag == "--asyncapi",
            "unknown argument `{flag}`: the only one is `--asyncapi json|yaml|html`"
        );
        let document = app().asyncapi()?;
        let text = match args.next().as_deref() {
            Some("json") | None => document.to_json(),
            Some("yaml") => document.to_yaml(),
            Some("html") => document.to_html(),
            Some(other) => anyhow::bail!("`--asyncapi {other}`: write json, yaml or html"),
        };
        use std::io::Write as _;
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(());
    }
    app().run().await?;
    Ok(())
}
