use faststream_core::on_startup;

#[on_startup]
async fn setup(name: String) {
    let _ = name;
}

fn main() {}
