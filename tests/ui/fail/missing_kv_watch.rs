use faststream_core::subscriber;

#[subscriber("key")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
