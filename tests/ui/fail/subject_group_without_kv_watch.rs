use faststream_core::subscriber;

// `group` is a Key-Value consumer group: on a subject it is refused at its name.
#[subscriber("orders.{id}", group = "billing")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
