use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket", prefetch = true)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
