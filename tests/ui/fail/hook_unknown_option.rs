use faststream_core::after_startup;

#[after_startup(priority = 1)]
async fn setup() {}

fn main() {}
