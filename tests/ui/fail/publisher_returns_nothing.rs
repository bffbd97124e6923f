use faststream_core::{publisher, subscriber};

// Without a return type there is nothing to publish: reported at the function's name.
#[publisher("billing.done")]
#[subscriber("orders.created")]
async fn bill(msg: String) {
    let _ = msg;
}

fn main() {}
