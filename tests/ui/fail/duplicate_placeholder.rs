use faststream_core::subscriber;

#[subscriber("users.{id}.friends.{id}", kv_watch = "bucket")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
