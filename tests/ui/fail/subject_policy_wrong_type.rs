use faststream_core::subscriber;

// A value of the wrong type is reported at the option's name ("expected due to this").
#[subscriber("orders.>", stream = "ORDERS", deliver_policy = "new", ack_policy = 1)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
