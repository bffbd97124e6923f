//! `objects [MODE]`: object storage, one file per mode; with no mode, every mode at its default
//! sizes. `stream.rs`: one large object streamed through `ObjectStore::get` against raw
//! async-nats `get`, each reader in a process of its own (MB/s, peak RSS above idle).
//! `watch.rs`: N small objects watched from the start, an `obj_subscriber` handler and
//! `NatsBroker::obj_watch` against raw async-nats `watch_with_history` (objects/s, CPU per
//! object, peak RSS).

pub mod stream;
pub mod watch;

use crate::cli::{defaults, ObjectsArgs, ObjectsMode};
use crate::report::Summary;

/// The object stores of the modes, made afresh by each and deleted after.
pub fn store_name(mode: &str, pid: u32) -> String {
    format!("bench_obj_{mode}_{pid}")
}

/// Runs the mode asked for, or every mode at its defaults.
pub async fn run(args: ObjectsArgs, pid: u32, summary: &mut Summary) -> anyhow::Result<()> {
    let modes = match args.mode {
        Some(mode) => vec![mode],
        None => vec![
            ObjectsMode::Stream(defaults()?),
            ObjectsMode::Watch(defaults()?),
        ],
    };
    for mode in modes {
        match mode {
            ObjectsMode::Stream(sizes) => stream::run(sizes, pid, summary).await?,
            ObjectsMode::Watch(sizes) => watch::run(sizes, pid, summary).await?,
        }
    }
    Ok(())
}

/// Deletes the store's stream `OBJ_<store>` (if it is gone already, nothing happens).
pub async fn drop_store(store: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(crate::common::url()).await?;
    let _ = async_nats::jetstream::new(client)
        .delete_stream(format!("OBJ_{store}"))
        .await;
    Ok(())
}
