use faststream_core::subscriber;

#[subscriber("reports", obj_watch = true, queue = "workers", stream = "REPORTS", group = "g")]
async fn with_subject_settings(name: String) {
    let _ = name;
}

#[subscriber("key", kv_watch = "bucket", obj_watch = true)]
async fn with_kv_watch(name: String) {
    let _ = name;
}

fn main() {}
