//! Object store subscribers: `obj_watch = true`, an `ObjWatch` expression, `max_workers`, and
//! the extractors an object change gives.

use faststream_core::{subscriber, ObjMessage, ObjWatch};

#[subscriber("reports", obj_watch = true)]
async fn on_report(name: String, object: ObjMessage) {
    let _ = (name, object.size(), object.deleted());
}

#[subscriber("archive", obj_watch = ObjWatch::new().ignore_deletes(true), max_workers = 4)]
async fn on_archived(object: ObjMessage) -> anyhow::Result<()> {
    let _ = object.name();
    Ok(())
}

fn main() {}
