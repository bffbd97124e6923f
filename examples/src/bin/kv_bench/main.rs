//! The benchmark: the workloads of the FastStream anchor scripts (the project keeps its copy in
//! `examples/bench/`), through a `#[subscriber]` handler and through a raw async-nats watcher,
//! side by side in one run against the server at `NATS_URL`. Prints one JSON line per result,
//! then one summary line with the ratios. `kv_bench --help` lists the workloads and their sizes.
//!
//! ```text
//! cargo run --release -p examples --bin kv_bench                    # everything, default sizes
//! cargo run --release -p examples --bin kv_bench -- --python        # plus the FastStream anchors
//! cargo run --release -p examples --bin kv_bench -- replay 20000 1000
//! cargo run --release -p examples --bin kv_bench -- observe 20000 1000
//! cargo run --release -p examples --bin kv_bench -- latency 500
//! cargo run --release -p examples --bin kv_bench -- slow 2000 1000
//! cargo run --release -p examples --bin kv_bench -- keys 10000
//! cargo run --release -p examples --bin kv_bench -- view 100000 10000 10000 2
//! cargo run --release -p examples --bin kv_bench -- group 50000 1000 40000 10000 8 48 2000 3
//! cargo run --release -p examples --bin kv_bench -- core-publish 50000
//! cargo run --release -p examples --bin kv_bench -- request-reply 2000
//! cargo run --release -p examples --bin kv_bench -- js-pull 20000 100
//! cargo run --release -p examples --bin kv_bench -- objects stream 100 5
//! cargo run --release -p examples --bin kv_bench -- objects watch 10000 3
//! cargo run --release -p examples --bin kv_bench -- modify 2000
//! ```
//!
//! With `NATS_SERVER_PID` set (the server on this machine), the live runs also report the
//! server's CPU time.
//!
//! Every consumer runs in its own process (this binary, started with a hidden command of
//! `child.rs`), so that its peak RSS and CPU time are its own; the parent writes the data first.
//! To profile one consumer alone (e.g. under `valgrind --tool=callgrind`):
//!
//! ```text
//! kv_bench prefill bench 20000 1000
//! kv_bench consume replay faststream-rs bench 20000     # or async-nats-raw
//! kv_bench prefill-view bench 100000
//! kv_bench catchup faststream-rs-view bench 100000     # or async-nats-raw, ...
//! kv_bench prefill-stream 20000
//! kv_bench msg-consumer pull faststream-rs 20000 100   # or async-nats-raw
//! (sleep 5; kv_bench msg-publish 50000) | kv_bench msg-consumer core faststream-rs 50000
//! kv_bench prefill-objects bench_obj 10000
//! kv_bench objwatch faststream-rs bench_obj 10000      # or async-nats-raw, faststream-rs-watcher
//! ```
//!
//! The files: `cli.rs` (the command line), `child.rs` (the child-process protocol),
//! `measure.rs` (rusage, RSS, the server's CPU), `report.rs` (results, medians, the summary),
//! `broker.rs` (every construction of a faststream-core broker or app), `data.rs` (writing the
//! buckets), `anchors.rs` (the FastStream scripts), `common.rs` (what the workloads share) and
//! `workloads/` (one file per workload, the consumer groups a folder).

mod anchors;
mod broker;
mod child;
mod cli;
mod common;
mod data;
mod measure;
mod report;
mod workloads;

use clap::Parser as _;

use cli::{Cli, Command, Workload};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => workloads::run(Workload::every()?, cli.python, false).await,
        Some(Command::Workload(workload)) => workloads::run(vec![workload], cli.python, true).await,
        Some(Command::Child(command)) => child::run(command).await,
    }
}
