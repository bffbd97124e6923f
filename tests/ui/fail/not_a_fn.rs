use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
struct Handler;

fn main() {}
