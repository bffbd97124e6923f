use faststream_core::subscriber;

// With options applied on top, a value of the wrong type is still reported at `kv_watch`.
#[subscriber("key", kv_watch = String::from("bucket"), max_workers = 8, group = "billing")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
