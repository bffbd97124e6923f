use faststream_core::subscriber;

#[subscriber("orders.{id}", kv_watch = "shop", group = "billing", group = "shipping")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
