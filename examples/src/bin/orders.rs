//! A whole NATS service on one framework: it answers requests, works a queue, consumes a
//! JetStream stream and publishes what it bills, beside a Key-Value subscriber.
//!
//! ```text
//! cargo run -p examples --bin orders      # run it twice: `jobs` go to one of them each
//! nats request orders.7.get ''            # {"id":7,"status":"open"}
//! nats request orders.0.get ''            # an error reply: Nats-Service-Error-Code 500
//! nats pub jobs '{"id":1}'
//! nats pub orders.created '{"id":7,"amount":12}'   # stored by ORDERS, billed once
//! nats sub billing.done                   # {"order":7,"amount":12}
//! ```

use faststream_core::{
    after_startup, publisher, subscriber, App, BrokerConfig, Json, NatsBroker, NatsMessage, Path,
    State,
};

/// What the handlers share: here, a stand-in for a database handle.
#[derive(Clone, Default)]
struct Db;

impl Db {
    fn order(&self, id: u64) -> Option<Order> {
        (id != 0).then(|| Order {
            id,
            status: "open".to_owned(),
        })
    }
}

#[derive(Debug, serde::Serialize)]
struct Order {
    id: u64,
    status: String,
}

#[derive(Debug, serde::Deserialize)]
struct Job {
    id: u64,
}

#[derive(Debug, serde::Deserialize)]
struct NewOrder {
    id: u64,
    amount: i64,
}

#[derive(Debug, serde::Serialize)]
struct Bill {
    order: u64,
    amount: i64,
}

/// Request/reply: the returned `Json` is the reply; an `Err` is an error reply.
#[subscriber("orders.{id}.get")]
async fn get_order(Path(id): Path<u64>, State(db): State<Db>) -> anyhow::Result<Json<Order>> {
    db.order(id)
        .map(Json)
        .ok_or_else(|| anyhow::anyhow!("no order {id}"))
}

/// A queue group: each job goes to one instance of the service.
#[subscriber("jobs", queue = "workers")]
async fn job(Json(job): Json<Job>) -> anyhow::Result<()> {
    tracing::info!(job = job.id, "working");
    Ok(())
}

/// A JetStream stream, declared at start-up, read by a durable consumer the instances share;
/// what it returns is published to `billing.done`.
#[subscriber("orders.created", stream = "ORDERS", durable = "billing")]
#[publisher("billing.done")]
async fn bill(Json(order): Json<NewOrder>, msg: NatsMessage) -> anyhow::Result<Json<Bill>> {
    anyhow::ensure!(order.amount >= 0, "order {}: negative amount", order.id);
    let delivered = msg.jetstream_info().map_or(1, |info| info.delivered);
    tracing::info!(order = order.id, delivered, "billing");
    Ok(Json(Bill {
        order: order.id,
        amount: order.amount,
    }))
}

/// A Key-Value change, on the same handlers.
#[subscriber("orders.{id}", kv_watch = "order_notes")]
async fn note(Path(id): Path<u64>, note: String) {
    tracing::info!(order = id, note, "note changed");
}

#[after_startup]
async fn ready(broker: NatsBroker) -> anyhow::Result<()> {
    let reply = broker.request("orders.1.get", "").await?;
    tracing::info!(reply = %String::from_utf8_lossy(reply.payload()), "answering requests");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    App::new(BrokerConfig::from_env())
        .with_state(Db)
        .run()
        .await?;
    Ok(())
}
