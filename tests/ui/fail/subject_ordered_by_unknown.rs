use faststream_core::subscriber;

// `ordered_by` names a placeholder of the subject: the error lists the ones there are.
#[subscriber("orders.{id}.lines.{line}", max_workers = 8, ordered_by = "order_id")]
async fn handler(msg: String) {
    let _ = msg;
}

fn main() {}
