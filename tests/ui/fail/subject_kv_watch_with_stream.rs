use faststream_core::{subscriber, KvMessage};

// A Key-Value watch reads its bucket's own stream: `stream` is refused at its name.
#[subscriber("orders.{id}", kv_watch = "shop", stream = "ORDERS")]
async fn handler(entry: KvMessage) {
    let _ = entry;
}

fn main() {}
