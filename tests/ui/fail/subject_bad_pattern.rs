use faststream_core::subscriber;

// A wildcard inside a token is no wildcard: refused at the subject literal.
#[subscriber("orders.created*", queue = "workers")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
