use faststream_core::after_shutdown;

#[after_shutdown(order = "first")]
async fn flush() {}

fn main() {}
