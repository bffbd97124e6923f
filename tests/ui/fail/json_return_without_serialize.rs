use faststream_core::{subscriber, Json};

struct Order {
    id: u64,
}

#[subscriber("orders.{id}.get")]
async fn get_order(id: String) -> Json<Order> {
    Json(Order { id: id.len() as u64 })
}

fn main() {}
