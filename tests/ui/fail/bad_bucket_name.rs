use faststream_core::subscriber;

#[subscriber("key", kv_watch = "my.bucket")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
