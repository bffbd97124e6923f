use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket", kv_watch = "other")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
