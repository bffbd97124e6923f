use faststream_core::subscriber;

// Durable consumers belong to a JetStream stream: `durable` needs `stream`.
#[subscriber("orders.created", durable = "billing")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
