//! The child-process protocol: the benchmark runs every consumer as this binary with one of the
//! hidden commands below, so that its peak RSS and CPU time are its own; the child prints one
//! JSON line, which the parent reads. Both sides are here: the commands a child understands
//! ([`ChildCommand`], [`run`]) and the parent's ways of starting one.

use std::process::Stdio;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::Value;

use crate::common::set_bucket;
use crate::data::{prefill, prefill_flags};
use crate::report::{compare, emit, Runs};
use crate::workloads::group::live::{group_live, LiveRun};
use crate::workloads::group::membership::{group_member, group_times};
use crate::workloads::{consume, latency, messaging, objects, view};

/// The commands the benchmark runs in its child processes (hidden from `--help`).
#[derive(Subcommand, Debug)]
pub enum ChildCommand {
    /// One replay, keys or slow consumer (MODE replay, keys, slow1 or slow64) on BUCKET until it
    /// has handled N entries.
    #[command(hide = true)]
    Consume {
        /// replay, keys, slow1 or slow64.
        mode: String,
        /// faststream-rs, async-nats-raw, or for replay also faststream-rs-metrics,
        /// faststream-rs-traced or faststream-rs-traced-default.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The bucket, written before.
        bucket: String,
        /// Entries to handle.
        #[arg(default_value_t = 0)]
        n: usize,
    },
    /// Writes N entries over KEYS keys to a fresh BUCKET: for profiling `consume` alone.
    #[command(hide = true)]
    Prefill {
        /// The bucket, made afresh.
        bucket: String,
        /// Entries.
        #[arg(default_value_t = 20_000)]
        n: usize,
        /// Keys.
        #[arg(default_value_t = 1_000)]
        keys: usize,
    },
    /// Writes N keys of JSON flags to a fresh BUCKET: for profiling `catchup` alone.
    #[command(hide = true)]
    PrefillView {
        /// The bucket, made afresh.
        bucket: String,
        /// Keys.
        #[arg(default_value_t = 100_000)]
        n: usize,
    },
    /// One view catch-up consumer on BUCKET of N keys.
    #[command(hide = true)]
    Catchup {
        /// faststream-rs-view, faststream-rs-view-raw, faststream-rs-watch,
        /// faststream-rs-view-batched, faststream-rs-watch-batched, async-nats-raw or
        /// async-nats-raw-map.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The bucket, written before.
        bucket: String,
        /// Its keys.
        #[arg(default_value_t = 0)]
        n: usize,
    },
    /// Reads from a view of BUCKET's K keys for SECONDS, idle or while a writer changes RATE
    /// keys a second.
    #[command(hide = true)]
    Viewget {
        /// idle or writer.
        mode: String,
        /// The bucket, written before.
        bucket: String,
        /// Its keys.
        #[arg(default_value_t = 10_000)]
        keys: usize,
        /// Changes a second of the writer.
        #[arg(default_value_t = 10_000)]
        rate: usize,
        /// Seconds of reading.
        #[arg(default_value_t = 2.0)]
        seconds: f64,
    },
    /// One live-traffic run of the group workloads on a fresh bucket PREFIX_<pid>.
    #[command(hide = true)]
    Grouplive {
        /// faststream-rs-group, async-nats-raw-pull, faststream-rs-plain-watch,
        /// async-nats-raw-pull-mirror or async-nats-raw-pull-partitions.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The bucket's prefix.
        prefix: String,
        /// The run's sizes.
        #[command(flatten)]
        run: LiveRun,
    },
    /// The membership changes of the group workloads on a fresh bucket PREFIX_<pid>.
    #[command(hide = true)]
    Grouptimes {
        /// faststream-rs-group (the only one).
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The bucket's prefix.
        prefix: String,
        /// Keys of the bucket.
        #[arg(default_value_t = 1_000)]
        keys: usize,
        /// Changes a second of the writer.
        #[arg(default_value_t = 2_000)]
        rate: usize,
    },
    /// A member of the membership workload's group on BUCKET, until it is stopped or killed.
    #[command(hide = true)]
    Groupmember {
        /// The bucket.
        bucket: String,
    },
    /// One latency run (writer and consumer in this process) on BUCKET, M round trips.
    #[command(hide = true)]
    LatencyRun {
        /// faststream-rs or async-nats-raw.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The bucket, made before.
        bucket: String,
        /// Round trips.
        #[arg(default_value_t = 500)]
        m: usize,
    },
    /// One messaging consumer (MODE core, reply or pull): prints `{"ready":true}` once
    /// subscribed, then its result when it has handled N messages (core, pull) or when its
    /// stdin is closed (reply).
    #[command(hide = true)]
    MsgConsumer {
        /// core, reply or pull.
        mode: String,
        /// faststream-rs or async-nats-raw.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// Messages to handle (core, pull).
        #[arg(default_value_t = 0)]
        n: usize,
        /// Messages a pull request asks for (pull).
        #[arg(default_value_t = 100)]
        batch: usize,
    },
    /// Makes the stream of `js-pull` afresh with N messages: for profiling `msg-consumer pull`
    /// alone.
    #[command(hide = true)]
    PrefillStream {
        /// Messages.
        #[arg(default_value_t = 20_000)]
        n: usize,
    },
    /// Reads object NAME of object store STORE (SIZE bytes) to the end, as the `objects stream`
    /// workload does.
    #[command(hide = true)]
    Objget {
        /// faststream-rs, faststream-rs-chunks or async-nats-raw.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The object store, written before.
        store: String,
        /// The object.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// Makes object store STORE afresh with N objects of 100 bytes, as `objects watch` does:
    /// for profiling `objwatch` alone.
    #[command(hide = true)]
    PrefillObjects {
        /// The object store, made afresh.
        store: String,
        /// Objects.
        #[arg(default_value_t = 10_000)]
        n: usize,
    },
    /// Watches object store STORE of N objects until it has seen each, as the `objects watch`
    /// workload does.
    #[command(hide = true)]
    Objwatch {
        /// faststream-rs, faststream-rs-watcher or async-nats-raw.
        #[arg(value_name = "IMPL")]
        implementation: String,
        /// The object store, written before.
        store: String,
        /// Its objects.
        n: usize,
    },
    /// Publishes N messages to the subject of `core-publish`, as its parent does: for
    /// profiling `msg-consumer core` alone.
    #[command(hide = true)]
    MsgPublish {
        /// Messages.
        #[arg(default_value_t = 50_000)]
        n: usize,
    },
}

/// Runs one child command; prints its JSON line, if it has one.
pub async fn run(command: ChildCommand) -> anyhow::Result<()> {
    match command {
        ChildCommand::Consume {
            mode,
            implementation,
            bucket,
            n,
        } => {
            set_bucket(&bucket);
            emit(&consume::consume(&mode, &implementation, n).await?);
        }
        ChildCommand::Prefill { bucket, n, keys } => prefill(&bucket, n, keys).await?,
        ChildCommand::PrefillView { bucket, n } => prefill_flags(&bucket, n).await?,
        ChildCommand::Catchup {
            implementation,
            bucket,
            n,
        } => {
            set_bucket(&bucket);
            emit(&view::catchup::view_catchup(&implementation, n).await?);
        }
        ChildCommand::Viewget {
            mode,
            bucket,
            keys,
            rate,
            seconds,
        } => {
            set_bucket(&bucket);
            emit(&view::reads::view_reads(&mode, keys, rate, seconds).await?);
        }
        ChildCommand::Grouplive {
            implementation,
            prefix,
            run,
        } => emit(&group_live(&implementation, &prefix, run).await?),
        ChildCommand::Grouptimes {
            implementation: _,
            prefix,
            keys,
            rate,
        } => emit(&group_times(&prefix, keys, rate).await?),
        ChildCommand::Groupmember { bucket } => group_member(&bucket).await?,
        ChildCommand::LatencyRun {
            implementation,
            bucket,
            m,
        } => {
            set_bucket(&bucket);
            emit(&latency::latency(&implementation, m).await?);
        }
        ChildCommand::MsgConsumer {
            mode,
            implementation,
            n,
            batch,
        } => emit(&messaging::consumer(&mode, &implementation, n, batch).await?),
        ChildCommand::PrefillStream { n } => messaging::pull::prefill_stream(n).await?,
        ChildCommand::MsgPublish { n } => emit(&messaging::core_publish::publish_alone(n).await?),
        ChildCommand::Objget {
            implementation,
            store,
            name,
            size,
        } => emit(&objects::stream::read_object(&implementation, &store, &name, size).await?),
        ChildCommand::PrefillObjects { store, n } => {
            objects::watch::prefill_objects(&store, n).await?
        }
        ChildCommand::Objwatch {
            implementation,
            store,
            n,
        } => emit(&objects::watch::watch_objects(&implementation, &store, n).await?),
    }
    Ok(())
}

/// Runs this binary with `args` and returns the JSON line it printed.
pub async fn child(args: &[String]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{args:?} failed: {}",
        output.status
    );
    let line = String::from_utf8(output.stdout)?;
    serde_json::from_str(line.trim()).with_context(|| format!("{args:?} printed {line:?}"))
}

/// `consume MODE IMPL BUCKET N` in a child.
pub async fn consumer(
    mode: &str,
    implementation: &str,
    bucket: &str,
    n: usize,
) -> anyhow::Result<Value> {
    let args = ["consume", mode, implementation, bucket, &n.to_string()].map(str::to_owned);
    child(&args).await
}

/// The arguments of `grouplive IMPL PREFIX <run>`.
pub fn group_live_args(implementation: &str, prefix: &str, run: &LiveRun) -> Vec<String> {
    let mut args = vec![
        "grouplive".to_owned(),
        implementation.to_owned(),
        prefix.to_owned(),
    ];
    args.extend(run.args());
    args
}

/// Starts `groupmember BUCKET` in a child, killed when dropped.
pub fn spawn_group_member(bucket: &str) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .args(["groupmember", bucket])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?)
}

/// The child command of each workload that compares variants through [`compare_children`].
#[derive(Debug, Clone, Copy)]
pub enum Compared {
    /// `catchup VARIANT BUCKET N`.
    Catchup,
    /// `viewget VARIANT BUCKET K RATE SECONDS`.
    Viewget,
    /// `grouplive VARIANT PREFIX <run>`.
    Grouplive,
    /// `grouptimes VARIANT PREFIX KEYS RATE`.
    Grouptimes,
    /// `latency-run VARIANT BUCKET M`.
    LatencyRun,
}

impl Compared {
    fn name(self) -> &'static str {
        match self {
            Self::Catchup => "catchup",
            Self::Viewget => "viewget",
            Self::Grouplive => "grouplive",
            Self::Grouptimes => "grouptimes",
            Self::LatencyRun => "latency-run",
        }
    }
}

/// [`compare`] over child processes: `kv_bench <command> <variant> <bucket> <extra...>` for each
/// variant.
pub async fn compare_children(
    variants: &[&str],
    repeats: usize,
    command: Compared,
    bucket: &str,
    extra: &[String],
) -> anyhow::Result<Vec<Runs>> {
    compare(variants, repeats, |variant| {
        let mut args = vec![command.name().to_owned(), variant, bucket.to_owned()];
        args.extend_from_slice(extra);
        async move { child(&args).await }
    })
    .await
}
