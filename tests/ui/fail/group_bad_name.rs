use faststream_core::subscriber;

#[subscriber("orders.{id}", kv_watch = "shop", group = "bill.ing")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
