//! The workloads, one file each (the consumer groups and the messaging workloads a folder), and the full run that takes
//! them in order and prints the summary.

pub mod consume;
pub mod group;
pub mod keys;
pub mod latency;
pub mod messaging;
pub mod modify;
pub mod objects;
pub mod observe;
pub mod replay;
pub mod slow;
pub mod view;

use serde_json::json;

use crate::cli::Workload;
use crate::report::{emit, Summary};

/// faststream-rs through `#[subscriber]` handlers.
pub const FRAMEWORK: &str = "faststream-rs";
/// A raw async-nats watcher.
pub const RAW: &str = "async-nats-raw";
/// How many times each side of a comparison runs (alternating).
pub const REPEATS: usize = 3;

/// Runs `workloads` in order, printing every result, then the summary line with the ratios.
/// `alone`: the workloads were asked for by name (the group workloads then run on any server,
/// failing on one older than 2.11, instead of being skipped).
pub async fn run(workloads: Vec<Workload>, with_python: bool, alone: bool) -> anyhow::Result<()> {
    let pid = std::process::id();
    let mut summary = Summary::new();
    for workload in workloads {
        match workload {
            Workload::Replay(sizes) => replay::run(sizes, pid, with_python, &mut summary).await?,
            Workload::Observe(sizes) => observe::run(sizes, pid, &mut summary).await?,
            Workload::Latency(sizes) => latency::run(sizes, pid, with_python, &mut summary).await?,
            Workload::Slow(sizes) => slow::run(sizes, pid, with_python, &mut summary).await?,
            Workload::Keys(sizes) => keys::run(sizes, pid, &mut summary).await?,
            Workload::View(sizes) => view::run(sizes, pid, &mut summary).await?,
            Workload::Group(sizes) => group::run(sizes, alone, &mut summary).await?,
            Workload::CorePublish(sizes) => {
                messaging::core_publish::run(sizes, with_python, &mut summary).await?;
            }
            Workload::RequestReply(sizes) => {
                messaging::request_reply::run(sizes, with_python, &mut summary).await?;
            }
            Workload::JsPull(sizes) => {
                messaging::pull::run(sizes, with_python, &mut summary).await?
            }
            Workload::Objects(args) => objects::run(args, pid, &mut summary).await?,
            Workload::Modify(sizes) => modify::run(sizes, pid, &mut summary).await?,
        }
    }
    emit(&json!({ "summary": summary }));
    Ok(())
}
