use faststream_core::subscriber;

#[subscriber("key", kv_watch = 42)]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
