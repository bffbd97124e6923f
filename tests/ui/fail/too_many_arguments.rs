use faststream_core::subscriber;

#[subscriber("key", kv_watch = "bucket")]
async fn handler(
    a1: String,
    a2: String,
    a3: String,
    a4: String,
    a5: String,
    a6: String,
    a7: String,
    a8: String,
    a9: String,
    a10: String,
    a11: String,
    a12: String,
    a13: String,
) {
    let _ = (a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13);
}

fn main() {}
