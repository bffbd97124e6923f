//! A `#[cfg]`-disabled handler takes its registration with it; raw identifiers are registered
//! under their plain name.

use faststream_core::{on_shutdown, subscriber};

#[cfg(any())]
#[subscriber("never", kv_watch = "bucket")]
async fn compiled_out(msg: DoesNotExist) {}

// Here the attribute sees the `#[cfg]` and must copy it onto the registration, or the
// registration would refer to a function that does not exist.
#[subscriber("never.either", kv_watch = "bucket")]
#[cfg(any())]
async fn compiled_out_after(msg: DoesNotExist) {}

#[subscriber("kept", kv_watch = "bucket")]
#[cfg(all())]
async fn r#type(msg: String) {
    let _ = msg;
}

#[cfg_attr(all(), on_shutdown(order = 2))]
async fn r#move() {}

fn main() {
    let crate_name = module_path!();
    let names: Vec<_> = faststream_core::App::registered_subscribers()
        .into_iter()
        .map(|name| &name[crate_name.len() + 2..])
        .collect();
    assert_eq!(names, ["type"]);
    let hooks: Vec<_> = faststream_core::App::registered_hooks()
        .into_iter()
        .map(|name| &name[crate_name.len() + 2..])
        .collect();
    assert_eq!(hooks, ["move"]);
}
