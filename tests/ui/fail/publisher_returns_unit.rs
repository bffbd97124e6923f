use faststream_core::{publisher, subscriber};

// `()` is nothing to publish: reported at the return type, with the runtime's explanation.
#[subscriber("orders.created")]
#[publisher("billing.done")]
async fn handler(msg: String) -> () {
    let _ = msg;
}

fn main() {}
