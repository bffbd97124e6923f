use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
async fn handler<T>(msg: T) {
    let _ = msg;
}

fn main() {}
