use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
async fn handler(msg: u32) {
    let _ = msg;
}

fn main() {}
