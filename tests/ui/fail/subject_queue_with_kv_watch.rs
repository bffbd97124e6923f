use faststream_core::{subscriber, KvMessage};

// Instances of a Key-Value watch share its changes with `group`, not with a queue group.
#[subscriber("orders.{id}", queue = "workers", kv_watch = "shop")]
async fn handler(entry: KvMessage) {
    let _ = entry;
}

fn main() {}
