use faststream_core::subscriber;

const KEY: &str = "key";

#[subscriber(KEY, kv_watch = "bucket")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
