//! An observed service: the stock of a shop, kept per SKU from the `inventory` bucket, with
//! `/metrics`, `/health/live` and `/health/ready` served, a metric of its own beside the
//! framework's, and the per-entry spans exported over OTLP when a collector is configured.
//!
//! ```text
//! FASTSTREAM_HTTP_ADDR=127.0.0.1:9464 cargo run -p examples --bin observed
//! curl -s 127.0.0.1:9464/health/ready; curl -s 127.0.0.1:9464/metrics
//! nats kv put inventory stock.apple '{"units": 3}'
//! # with a collector: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_SERVICE_NAME=stock
//! ```
//!
//! A value that is not `{"units": N}` is counted as `outcome="rejected"` (the handler is not
//! called); a negative stock is an error the handler returns, counted as `outcome="error"`.

use std::time::Duration;

use faststream_core::otlp::Otlp;
use faststream_core::prometheus_client::metrics::gauge::Gauge;
use faststream_core::prometheus_client::registry::Registry;
use faststream_core::{subscriber, App, BrokerConfig, Json, Path, State};

#[derive(serde::Deserialize)]
struct Stock {
    units: i64,
}

/// The service's own metric: units in stock, over every SKU seen.
#[derive(Clone, Default)]
struct UnitsInStock(Gauge);

#[subscriber("stock.{sku}", kv_watch = "inventory")]
async fn on_stock(
    Path(sku): Path<String>,
    Json(stock): Json<Stock>,
    State(units): State<UnitsInStock>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        stock.units >= 0,
        "negative stock for `{sku}`: {}",
        stock.units
    );
    tracing::info!(%sku, units = stock.units, "stock changed");
    units.0.set(stock.units);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let units = UnitsInStock::default();
    let mut registry = Registry::default();
    registry.register(
        "shop_units_in_stock",
        "Units in stock of the SKU changed last",
        units.0.clone(),
    );
    let mut app = App::new(BrokerConfig::from_env())
        .with_state(units)
        .prometheus_registry(registry)
        .readiness_grace(Duration::from_secs(2))
        .wait_for_catch_up(Duration::from_secs(60));
    if std::env::var_os("FASTSTREAM_HTTP_ADDR").is_none() {
        app = app.http("127.0.0.1:9464");
    }
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        app = app.otlp(Otlp::from_env()?);
    }
    app.run().await?;
    Ok(())
}
