use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
async fn handler(msg: impl Into<String>) {
    let _ = msg.into();
}

fn main() {}
