//! NATS subjects: every option of a subject `#[subscriber]`, as a literal and as an expression;
//! `#[publisher]` stacked above and below `#[subscriber]`, several on one function and under
//! another name; every kind of value to publish; and `router!` in modules.
//! Compiling is the test: each option's value is checked against the runtime's types.

use bytes::Bytes;
use faststream_core::publisher as emit;
use faststream_core::{
    publisher, subscriber, AckPolicy, DeliverPolicy, Json, NatsMessage, Path, PullSub,
};

#[derive(serde::Deserialize)]
struct Order {
    total: u64,
}

#[derive(serde::Serialize)]
struct Bill {
    total: u64,
}

const ORDERS: &str = "ORDERS";
const BATCH: usize = 32;
const START: u64 = 42;

// Core NATS: no option at all, then a queue group, workers and `no_reply`.
#[subscriber("orders.>")]
async fn everything(msg: NatsMessage) {
    let _ = msg;
}

#[subscriber(
    "emails.{id}",
    queue = "workers",
    max_workers = 8,
    ordered_by = "id",
    no_reply = true
)]
async fn send(Path(id): Path<String>, body: String) {
    let _ = (id, body);
}

#[subscriber(
    "$JS.events:eu.*",
    queue = "audit.eu-1",
    no_reply = false,
    ordered_by = "subject"
)]
async fn audit(body: Vec<u8>) {
    let _ = body;
}

// JetStream, every option as a literal.
#[subscriber(
    "orders.{id}.lines.{line}",
    stream = "ORDERS",
    durable = "billing",
    pull_sub = 16,
    deliver_policy = DeliverPolicy::New,
    ack_policy = AckPolicy::NackOnError,
    max_workers = 4,
    ordered_by = "id",
    no_reply = true,
)]
async fn lines(Path((id, line)): Path<(String, u32)>, order: Json<Order>) -> anyhow::Result<()> {
    let _ = (id, line, order.0.total);
    Ok(())
}

// JetStream, every option that takes one as an expression.
#[subscriber(
    "invoices.*",
    stream = ORDERS,
    pull_sub = PullSub::new(BATCH),
    deliver_policy = DeliverPolicy::ByStartSequence(START),
    ack_policy = AckPolicy::Manual,
)]
async fn invoices(msg: NatsMessage) {
    let _ = msg;
}

#[subscriber(
    "refunds.>",
    stream = "REFUNDS",
    pull_sub = true,
    deliver_policy = DeliverPolicy::LastPerSubject,
    ack_policy = AckPolicy::AckFirst,
)]
async fn refunds(msg: NatsMessage) {
    let _ = msg;
}

#[subscriber(
    "returns.>",
    stream = "RETURNS",
    pull_sub = PullSub::default(),
    deliver_policy = if START > 0 { DeliverPolicy::All } else { DeliverPolicy::Last },
    ack_policy = AckPolicy::RejectOnError,
    durable = "returns",
)]
async fn returns(msg: NatsMessage) {
    let _ = msg;
}

#[subscriber("acks.>", stream = "ACKS", ack_policy = AckPolicy::Ack)]
async fn acks(msg: NatsMessage) {
    let _ = msg;
}

// Settings without an option of their own, as the base of the others.
#[subscriber("audited.>")]
#[publisher(
    "audit.done",
    publisher = faststream_core::Publisher::new().retries(8),
    stream = "AUDIT"
)]
async fn audited(msg: NatsMessage) -> String {
    msg.subject().to_owned()
}

#[subscriber(
    "retried.>",
    stream = "RETRIED",
    subscription = faststream_core::Subscription::new()
        .max_attempts(3)
        .ack_wait(std::time::Duration::from_secs(60)),
    durable = "retrier"
)]
async fn retried(msg: NatsMessage) {
    let _ = msg;
}

// Publishers above and below the subscriber, several, one renamed, with and without a stream.
#[publisher("billing.done")]
#[subscriber("orders.created", queue = "billing")]
#[emit("audit.bills", stream = "AUDIT")]
#[publisher("archive.bills", stream = ORDERS)]
async fn bill(order: Json<Order>) -> anyhow::Result<Json<Bill>> {
    Ok(Json(Bill {
        total: order.0.total,
    }))
}

#[subscriber("text.in")]
#[emit("text.out")]
async fn text(msg: String) -> String {
    msg
}

#[emit("raw.out")]
#[subscriber("raw.in")]
async fn raw(msg: Vec<u8>) -> Result<Vec<u8>, std::io::Error> {
    Ok(msg)
}

#[subscriber("bytes.in")]
#[publisher("bytes.out")]
async fn bytes(msg: Bytes) -> Bytes {
    msg
}

mod orders {
    use faststream_core::{publisher, router, subscriber};

    // `orders.` + `created`, and `orders.` + `billed`.
    router!(prefix = "orders.");

    #[subscriber("created")]
    #[publisher("billed")]
    async fn bill(order: String) -> String {
        order
    }

    pub mod eu {
        // A router in a module below another one, written with a trailing comma.
        faststream_core::router!(prefix = "eu-",);

        #[faststream_core::subscriber("created", queue = "eu")]
        async fn bill_eu(order: String) {
            let _ = order;
        }
    }
}

fn main() {
    // The functions stay callable as written.
    let _ = (bill, text, raw, bytes, everything, send, audit);
    let _ = (lines, invoices, refunds, returns, acks);
}
