//! `group = "name"` makes a subscriber a member of a consumer group, alone, with `max_workers`
//! (in any order) and on top of a `kv_watch` expression.

use faststream_core::{subscriber, KvMessage, KvWatch};

const SHOP: &str = "shop";

#[subscriber("orders.{id}", kv_watch = "shop", group = "billing")]
async fn bill(entry: KvMessage) {
    let _ = entry;
}

#[subscriber("orders.{id}", group = "shipping", kv_watch = "shop", max_workers = 8)]
async fn ship(entry: KvMessage) -> anyhow::Result<()> {
    let _ = entry;
    Ok(())
}

#[subscriber(
    "orders.>",
    kv_watch = KvWatch::new(SHOP).include_history(true),
    max_workers = 4,
    group = "audit-v2_eu",
)]
async fn audit(msg: String) {
    let _ = msg;
}

fn main() {
    let crate_name = module_path!();
    let mut names: Vec<_> = faststream_core::App::registered_subscribers()
        .into_iter()
        .map(|name| &name[crate_name.len() + 2..])
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["audit", "bill", "ship"]);
}
