use faststream_core::subscriber;

// Both values are wrong: both are reported, not only the first one found.
#[subscriber("key", kv_watch = "my.bucket", max_workers = 0)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
