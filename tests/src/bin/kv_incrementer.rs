//! Read-modify-write from a process of its own, for the test that has processes and tasks
//! increment the same counters (tests/it/writes/processes.rs).
//!
//! Increments the JSON counters `<prefix>.0` .. `<prefix>.<keys - 1>` in turn, `--increments`
//! times in all, each with `KeyValue::modify_json` (a patient conflict retry), and prints one JSON
//! line: `{"name", "increments", "conflicts"}`. Any failure exits non-zero with the error.
//!
//! Arguments, each `--name value`: `--url`, `--bucket`, `--prefix`, `--keys`, `--increments`,
//! `--name`.

use anyhow::Context as _;
use faststream_core::{BrokerConfig, NatsBroker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut arguments = tests::Arguments::from_env()?;
    let mut take = |name: &str| arguments.take(name);
    let url = take("url")?;
    let bucket = take("bucket")?;
    let prefix = take("prefix")?;
    let keys: usize = take("keys")?.parse()?;
    let increments: usize = take("increments")?.parse()?;
    let name = take("name")?;
    arguments.finish()?;
    anyhow::ensure!(keys > 0, "--keys must be at least 1");

    let broker = NatsBroker::connect(BrokerConfig::new(url).connection_name(name.clone())).await?;
    // Patient: the test proves that no increment is lost, not that the default bound suffices
    // for processes and tasks sharing a loaded machine.
    let kv = broker
        .key_value(&bucket)
        .await?
        .with_conflict_retry(faststream_core::kv::ConflictRetry::new().attempts(1_000));
    let mut conflicts = 0;
    for round in 0..increments {
        let key = format!("{prefix}.{}", round % keys);
        let done = kv
            .modify_json(&key, |count: Option<u64>| {
                Ok::<_, std::convert::Infallible>(Some(count.unwrap_or(0) + 1))
            })
            .await
            .with_context(|| format!("{name}: increment {round} of {key}"))?;
        conflicts += done.conflicts();
    }
    println!(
        "{}",
        serde_json::json!({ "name": name, "increments": increments, "conflicts": conflicts })
    );
    Ok(())
}
