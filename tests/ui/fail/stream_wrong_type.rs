use faststream_core::{publisher, subscriber};

// `stream` takes a name or anything `Into<JStream>`: a wrong type is reported at the value,
// and the call that needs it at `stream`.
#[subscriber("orders.>", stream = 5u8)]
#[publisher("billing.done", stream = 7)]
async fn handler(msg: String) -> String {
    msg
}

fn main() {}
