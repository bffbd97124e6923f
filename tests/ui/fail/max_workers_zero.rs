use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket", max_workers = 0)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
