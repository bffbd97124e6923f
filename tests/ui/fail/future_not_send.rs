use std::rc::Rc;

use faststream_core::subscriber;

async fn yield_now() {}

#[subscriber("key", kv_watch = "bucket")]
async fn handler(msg: String) {
    let shared = Rc::new(msg);
    yield_now().await;
    let _ = shared;
}

fn main() {}
