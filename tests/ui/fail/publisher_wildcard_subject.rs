use faststream_core::{publisher, subscriber};

// A message is published to one concrete subject: no wildcard.
#[subscriber("orders.created")]
#[publisher("billing.*")]
async fn handler(msg: String) -> String {
    msg
}

fn main() {}
