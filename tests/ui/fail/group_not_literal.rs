use faststream_core::subscriber;

const GROUP: &str = "billing";

#[subscriber("orders.{id}", kv_watch = "shop", group = GROUP)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
