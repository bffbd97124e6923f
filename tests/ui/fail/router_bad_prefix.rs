// A prefix is written in front of subjects as it stands: it has no wildcard.
faststream_core::router!(prefix = "orders.*.");

fn main() {}
