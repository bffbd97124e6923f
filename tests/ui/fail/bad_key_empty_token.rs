use faststream_core::subscriber;

#[subscriber("users..profile", kv_watch = "bucket")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
