use faststream_core::subscriber;

#[subscriber("audit.>.events", kv_watch = "bucket")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
