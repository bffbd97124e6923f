//! The command line: one subcommand per workload, its sizes as positional arguments with
//! defaults (so `kv_bench view 100000 10000 10000 2` reads as before); with none, every workload
//! at its default sizes. The commands the benchmark runs in its child processes are hidden
//! (`child.rs`).

use clap::{Args, FromArgMatches, Parser, Subcommand};

use crate::child::ChildCommand;

/// The benchmark: the workloads of the FastStream anchor scripts (`examples/bench/`) through
/// `#[subscriber]` handlers and through a raw async-nats watcher, side by side against the
/// server at `NATS_URL`. Prints one JSON line per result, then one summary line with the ratios.
///
/// Every consumer runs in a process of its own (this binary, started with a hidden command), so
/// that its peak RSS and CPU time are its own; the parent writes the data first. Each comparison
/// runs three times, alternating (observe five times, latency five times with the best run
/// beside the median), and the medians are compared.
#[derive(Parser, Debug)]
#[command(
    name = "kv_bench",
    after_help = "Environment: NATS_URL (the server), NATS_SERVER_PID (if set, the live runs also \
                  report the server's CPU time).",
    after_long_help = "Environment:\n  \
        NATS_URL         the server (default nats://127.0.0.1:4222)\n  \
        NATS_SERVER_PID  the server's process on this machine: the live runs also report its \
                         CPU time\n\n\
        To profile one consumer alone (e.g. under valgrind --tool=callgrind):\n  \
        kv_bench prefill bench 20000 1000\n  \
        kv_bench consume replay faststream-rs bench 20000    # or async-nats-raw\n  \
        kv_bench prefill-view bench 100000\n  \
        kv_bench catchup faststream-rs-view bench 100000    # or async-nats-raw, ...\n  \
        kv_bench prefill-stream 20000\n  \
        kv_bench msg-consumer pull faststream-rs 20000 100    # or async-nats-raw\n  \
        (sleep 5; kv_bench msg-publish 50000) | kv_bench msg-consumer core faststream-rs 50000\n  \
        kv_bench prefill-objects bench_obj 10000\n  \
        kv_bench objwatch faststream-rs bench_obj 10000    # or async-nats-raw, faststream-rs-watcher"
)]
pub struct Cli {
    /// Also runs the FastStream 0.7.8 anchor scripts (python3, `faststream[nats]==0.7.8`)
    /// against the same server, for the workloads that have one (replay, latency, slow,
    /// core-publish, request-reply, js-pull).
    #[arg(long, global = true)]
    pub python: bool,
    /// The workload; every one at its default sizes if none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A workload, or a command of the child-process protocol.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// One workload.
    #[command(flatten)]
    Workload(Workload),
    /// One consumer, run by the benchmark in a child process.
    #[command(flatten)]
    Child(ChildCommand),
}

/// The workloads, in the order a full run takes them.
#[derive(Subcommand, Debug)]
pub enum Workload {
    /// [N=20000 KEYS=1000] replay N entries over KEYS keys with history: throughput and CPU per
    /// entry, faststream-rs vs raw async-nats
    ///
    /// The bucket is written first (history 64); then each side, in a process of its own, reads
    /// every revision from the start (`include_history`), three runs each, alternating.
    Replay(ReplaySizes),
    /// [N=20000 KEYS=1000] the replay workload with /metrics served, with OTLP spans (every
    /// entry; the default sampling) and without, against raw async-nats
    ///
    /// Five runs of each side, alternating: the plain subscriber (spans compiled in, disabled
    /// at their level), the same with `/metrics` served (every call counted and timed), with
    /// every entry's span exported through the OpenTelemetry layer and the SDK's batch
    /// processor (to an exporter that drops the batches), with the default share of entries
    /// traced (1%), and raw async-nats.
    Observe(ReplaySizes),
    /// [M=500] put -> handler latency over M round trips, faststream-rs vs raw async-nats
    ///
    /// Writer and consumer in one process, as in the anchor script: the watch reports each
    /// latency through a channel, the writer (a task on the same connection) waits for it before
    /// the next put; 20 warm-up rounds first. Five runs of each side, alternating; the median
    /// and the best run's p50 are compared.
    Latency(LatencySizes),
    /// [N=20000 KEYS=1000] a handler awaiting 1 ms over N entries of KEYS keys: max_workers 64
    /// vs 1
    Slow(SlowSizes),
    /// [K=10000] peak RSS watching K keys (the latest value of each), faststream-rs vs raw
    /// async-nats
    Keys(KeysSizes),
    /// [N=100000 K=10000 RATE=10000 SECONDS=2] KvView: catch-up over N keys vs a raw watch, and
    /// get on K keys for SECONDS, idle and while RATE keys a second change
    ///
    /// A `KvView`'s catch-up over N keys against a raw `watch_with_history` (counting, and
    /// decoding into a `HashMap`), with the RSS each adds per key; then `get` on a view of K keys
    /// for SECONDS, idle and while a writer on its own connection changes RATE keys a second.
    View(ViewSizes),
    /// [N=50000 KEYS=1000 SLOW_N=40000 SLOW_KEYS=10000 SLOW_WORKERS=8 SLOW_PARTITIONS=48
    /// RATE=2000 REPEATS=3] consumer groups (nats-server 2.11+): live traffic, three members vs
    /// one, membership changes
    ///
    /// Every group with `session_timeout` 2 s, each run on a fresh bucket in a process of its
    /// own, REPEATS runs of each side, alternating:
    ///
    /// - a writer puts N changes over KEYS keys as fast as it can (pipelined) while the consumer
    ///   handles them (counts, returns `Ok`), timed from the first put to the last change
    ///   handled: one group member against a raw durable pull consumer on `KV_<bucket>`
    ///   (explicit acks, one per message) and, for information, the plain watch subscriber and
    ///   the group's design built with async-nats alone (a partitioned mirror read by one pull
    ///   consumer, or by one per partition with `max_ack_pending` 1);
    ///
    /// - the same with a handler awaiting 1 ms, SLOW_N changes over SLOW_KEYS keys: three members
    ///   (three apps in one process) against one, `max_workers` SLOW_WORKERS on each and
    ///   SLOW_PARTITIONS partitions; then with `max_workers` 16 and the default 16 partitions
    ///   (whose 32 changes in flight each leave the workers to bound the calls at once);
    ///
    /// - membership changes while a writer changes RATE random keys of KEYS a second: a second
    ///   member joins (rebalance), it stops (graceful hand-over), a member in a child process
    ///   is killed with SIGKILL (takeover); the time until the survivor handles the moved
    ///   partitions.
    ///
    /// In a full run the group workloads are skipped on a server older than 2.11; run alone,
    /// they fail there with the server's reason.
    Group(GroupSizes),
    /// [N=50000] core publish -> handler throughput: a raw async-nats publisher sends N
    /// messages to a subject, faststream-rs vs raw async-nats (vs FastStream with --python)
    ///
    /// Each consumer in a process of its own: a `#[subscriber("bench.msg.core")]` app, a raw
    /// `subscribe` loop, FastStream's `@broker.subscriber`. Once it is subscribed, the parent
    /// publishes `m<i>` N times, a flush every 1,000; timed from the first message received to
    /// the Nth handled, with the consumer's CPU time and peak RSS. N at most 65,536 (the
    /// subscription's capacity in async-nats) cannot overflow a consumer; a message that never
    /// arrives is reported as lost. Three runs of each side, alternating.
    CorePublish(CorePublishSizes),
    /// [M=2000] request/reply round trips to a responder, faststream-rs vs raw async-nats
    /// (vs FastStream with --python)
    ///
    /// M sequential requests (after 20 warm-up ones) from the parent's raw async-nats client to
    /// `svc.echo`, answered by a `#[subscriber]` returning `Bytes`, a raw `subscribe` +
    /// `publish(reply)` loop or FastStream's subscriber returning the body, each in a process
    /// of its own. Five runs of each side, alternating; p50 (median and best run) and p99.
    RequestReply(RequestReplySizes),
    /// [N=20000 BATCH=100] a durable JetStream pull consumer handling and acknowledging N
    /// stored messages, faststream-rs vs raw async-nats (vs FastStream with --python)
    ///
    /// The stream is filled first; each run, in a process of its own with a fresh durable
    /// consumer, pulls BATCH at a time: `#[subscriber(.., stream, durable, pull_sub)]`, raw
    /// `consumer.messages()` + `ack()`, FastStream's `pull_sub=PullSub(BATCH)`. Timed from the
    /// first message received until the server reports every one acknowledged. Three runs of
    /// each side, alternating.
    JsPull(JsPullSizes),
    /// [MODE] object storage, each mode a comparison of its own; every mode at its default
    /// sizes if none is given
    ///
    /// `stream`: one large object read to the end through `ObjectStore::get` (as `AsyncRead`
    /// and as a stream of chunks) against raw async-nats `get`, each reader in a process of its
    /// own: MB/s, CPU time and peak RSS above the reader's idle RSS.
    ///
    /// `watch`: N objects of 100 bytes written to a fresh store, then watched from the start
    /// until each has been seen once (the latest version of every object), in a process of its
    /// own each: an `App` with an `obj_subscriber` handler taking the name and the `ObjMessage`,
    /// and `NatsBroker::obj_watch` without a handler, against raw async-nats
    /// `watch_with_history`: objects/s, CPU time per object, peak RSS.
    Objects(ObjectsArgs),
    /// [OPS=2000] read-modify-write under contention: OPS increments by 1, 4 and 16 tasks on 1
    /// and on 16 keys, faststream-rs `modify_json` vs a raw async-nats loop
    ///
    /// Each configuration on a fresh bucket, both sides in this process on one connection each:
    /// `KeyValue::modify_json` (conflicts retried with its jittered backoff) against the loop
    /// written by hand (`entry`, `update` at its revision, again at once on a conflict). Three
    /// runs of each side, alternating; ops/s, their ratio, and conflicts retried per op. A run
    /// counts only if the counters end exactly OPS higher.
    Modify(ModifySizes),
}

impl Workload {
    /// Every workload at its default sizes, in the order a full run takes them.
    pub fn every() -> anyhow::Result<Vec<Self>> {
        Ok(vec![
            Self::Replay(defaults()?),
            Self::Observe(defaults()?),
            Self::Latency(defaults()?),
            Self::Slow(defaults()?),
            Self::Keys(defaults()?),
            Self::View(defaults()?),
            Self::Group(defaults()?),
            Self::CorePublish(defaults()?),
            Self::RequestReply(defaults()?),
            Self::JsPull(defaults()?),
            Self::Objects(ObjectsArgs { mode: None }),
            Self::Modify(defaults()?),
        ])
    }
}

/// The sizes given no arguments: the defaults, written once, in the arguments' declarations.
pub fn defaults<T: Args + FromArgMatches>() -> anyhow::Result<T> {
    let matches = T::augment_args(clap::Command::new("defaults")).try_get_matches_from(["x"])?;
    Ok(T::from_arg_matches(&matches)?)
}

/// The sizes of `replay` and `observe`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ReplaySizes {
    /// Entries written before the consumers start, each replayed by every consumer.
    #[arg(value_name = "N", default_value_t = 20_000)]
    pub n: usize,
    /// Keys the entries are spread over (`k.0` ...; bucket history 64).
    #[arg(value_name = "KEYS", default_value_t = 1_000)]
    pub keys: usize,
}

/// The size of `latency`.
#[derive(Args, Debug, Clone, Copy)]
pub struct LatencySizes {
    /// Round trips measured in each run (after 20 warm-up rounds).
    #[arg(value_name = "M", default_value_t = 500)]
    pub m: usize,
}

/// The sizes of `slow`.
#[derive(Args, Debug, Clone, Copy)]
pub struct SlowSizes {
    /// Entries written before the consumers start, each handled once per consumer.
    #[arg(value_name = "N", default_value_t = 20_000)]
    pub n: usize,
    /// Keys the entries are spread over.
    #[arg(value_name = "KEYS", default_value_t = 1_000)]
    pub keys: usize,
}

/// The size of `keys`.
#[derive(Args, Debug, Clone, Copy)]
pub struct KeysSizes {
    /// Keys of the bucket, one entry each; the consumers watch their latest values.
    #[arg(value_name = "K", default_value_t = 10_000)]
    pub keys: usize,
}

/// The sizes of `view`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ViewSizes {
    /// Keys of the catch-up bucket (`{"enabled":true,"n":i}` each).
    #[arg(value_name = "N", default_value_t = 100_000)]
    pub n: usize,
    /// Keys of the bucket the reads run on.
    #[arg(value_name = "K", default_value_t = 10_000)]
    pub keys: usize,
    /// Changes a second the writer makes while the view is read.
    #[arg(value_name = "RATE", default_value_t = 10_000)]
    pub rate: usize,
    /// Seconds of reading in each run.
    #[arg(value_name = "SECONDS", default_value_t = 2.0)]
    pub seconds: f64,
}

/// The sizes of `group`.
#[derive(Args, Debug, Clone, Copy)]
pub struct GroupSizes {
    /// Changes of the live-traffic runs with the fast handler.
    #[arg(value_name = "N", default_value_t = 50_000)]
    pub n: usize,
    /// Keys of those runs and of the membership changes.
    #[arg(value_name = "KEYS", default_value_t = 1_000)]
    pub keys: usize,
    /// Changes of the slow-handler runs. 40,000: three members handle 20,000 in about 2 s, of
    /// which the start and the draining of the last partitions are a noticeable part.
    #[arg(value_name = "SLOW_N", default_value_t = 40_000)]
    pub slow_n: usize,
    /// Keys of the slow-handler runs.
    #[arg(value_name = "SLOW_KEYS", default_value_t = 10_000)]
    pub slow_keys: usize,
    /// `max_workers` of every member in the slow-handler runs.
    #[arg(value_name = "SLOW_WORKERS", default_value_t = 8)]
    pub slow_workers: usize,
    /// Partitions of the group in the slow-handler runs.
    #[arg(value_name = "SLOW_PARTITIONS", default_value_t = 48)]
    pub slow_partitions: u16,
    /// Changes a second written during the membership changes.
    #[arg(value_name = "RATE", default_value_t = 2_000)]
    pub rate: usize,
    /// Runs of each side of each comparison.
    #[arg(value_name = "REPEATS", default_value_t = 3)]
    pub repeats: usize,
}

/// The size of `core-publish`.
#[derive(Args, Debug, Clone, Copy)]
pub struct CorePublishSizes {
    /// Messages published in each run (at most 65,536, the subscription's capacity in
    /// async-nats, for a run that cannot drop any).
    #[arg(value_name = "N", default_value_t = 50_000)]
    pub n: usize,
}

/// The size of `request-reply`.
#[derive(Args, Debug, Clone, Copy)]
pub struct RequestReplySizes {
    /// Round trips measured in each run (after 20 warm-up ones).
    #[arg(value_name = "M", default_value_t = 2_000)]
    pub m: usize,
}

/// The sizes of `js-pull`.
#[derive(Args, Debug, Clone, Copy)]
pub struct JsPullSizes {
    /// Messages stored before the consumers start, each handled once per run.
    #[arg(value_name = "N", default_value_t = 20_000)]
    pub n: usize,
    /// Messages a pull request asks for.
    #[arg(value_name = "BATCH", default_value_t = 100)]
    pub batch: usize,
}

/// The mode of `objects`; none: every mode.
#[derive(Args, Debug)]
pub struct ObjectsArgs {
    /// The mode; every one at its default sizes if none is given.
    #[command(subcommand)]
    pub mode: Option<ObjectsMode>,
}

/// The modes of `objects`, one file each in `workloads/objects/`.
#[derive(Subcommand, Debug)]
pub enum ObjectsMode {
    /// [SIZE_MB=100 REPEATS=5] one SIZE_MB object streamed through `ObjectStore::get` vs raw
    /// async-nats `get`: MB/s and peak RSS above idle, each reader in a process of its own
    Stream(ObjectStreamSizes),
    /// [N=10000 REPEATS=3] N small objects watched from the start by an `obj_subscriber`
    /// handler and by `NatsBroker::obj_watch` vs raw async-nats `watch_with_history`:
    /// objects/s, CPU per object and peak RSS, each watcher in a process of its own
    Watch(ObjectWatchSizes),
}

/// The sizes of `objects stream`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ObjectStreamSizes {
    /// The object's size in megabytes (10^6 bytes), in async-nats's 128 KiB chunks.
    #[arg(value_name = "SIZE_MB", default_value_t = 100)]
    pub size_mb: usize,
    /// Runs of each reader, alternating.
    #[arg(value_name = "REPEATS", default_value_t = 5)]
    pub repeats: usize,
}

/// The sizes of `objects watch`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ObjectWatchSizes {
    /// Objects of 100 bytes (`o00000`, ...) written before the watchers start, each seen once
    /// by every watcher.
    #[arg(value_name = "N", default_value_t = 10_000)]
    pub n: usize,
    /// Runs of each watcher, alternating.
    #[arg(value_name = "REPEATS", default_value_t = 3)]
    pub repeats: usize,
}

/// The size of `modify`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ModifySizes {
    /// Increments in each run, shared by its tasks.
    #[arg(value_name = "OPS", default_value_t = 2_000)]
    pub ops: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The one-line description of each workload names its sizes with their defaults, as the
    /// arguments declare them.
    #[test]
    fn every_description_lists_the_defaults() {
        let cli = Cli::command();
        // A workload with modes (`objects`) lists the sizes of each mode instead.
        let workloads = cli
            .get_subcommands()
            .filter(|command| !command.is_hide_set())
            .flat_map(|command| {
                let modes: Vec<_> = command.get_subcommands().collect();
                if modes.is_empty() {
                    vec![command]
                } else {
                    modes
                }
            });
        for workload in workloads {
            let about = workload
                .get_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            let sizes: Vec<String> = workload
                .get_positionals()
                .map(|size| {
                    let name = size.get_value_names().unwrap_or_default().join(" ");
                    let default = size
                        .get_default_values()
                        .iter()
                        .map(|value| value.to_string_lossy());
                    format!("{name}={}", default.collect::<Vec<_>>().join(" "))
                })
                .collect();
            let listed = format!("[{}]", sizes.join(" "));
            assert!(
                about.starts_with(&listed),
                "{}: `{about}` does not start with `{listed}`",
                workload.get_name()
            );
        }
    }
}
