use faststream_core::{subscriber, Json};

struct NoSchema;

#[subscriber("orders", title = "", include_in_schema = "no", schema = 1 + 2)]
async fn bad_values(_order: Json<u32>) {}

#[subscriber("orders.new", schema = NoSchema)]
async fn schema_without_derive(_order: bytes::Bytes) {}

fn main() {}
