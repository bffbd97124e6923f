use faststream_core::subscriber;

struct Service;

impl Service {
    #[subscriber("key", kv_watch = "bucket")]
    async fn handler(&self, msg: String) {
        let _ = msg;
    }
}

fn main() {}
