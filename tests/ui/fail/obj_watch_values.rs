use faststream_core::subscriber;

#[subscriber("not a bucket", obj_watch = true)]
async fn bad_bucket(name: String) {
    let _ = name;
}

#[subscriber("reports", obj_watch = false)]
async fn watching_nothing(name: String) {
    let _ = name;
}

#[subscriber("reports", obj_watch = 42)]
async fn wrong_type(name: String) {
    let _ = name;
}

fn main() {}
