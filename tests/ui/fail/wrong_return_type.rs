use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
async fn handler(msg: String) -> u32 {
    msg.len() as u32
}

fn main() {}
