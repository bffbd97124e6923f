use faststream_core::on_shutdown;

#[on_shutdown]
fn cleanup() {}

fn main() {}
