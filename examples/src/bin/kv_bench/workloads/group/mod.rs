//! `group N KEYS SLOW_N SLOW_KEYS SLOW_WORKERS SLOW_PARTITIONS RATE REPEATS`: consumer groups
//! (nats-server 2.11+). One member against raw pull consumers (and the plain watch) on live
//! traffic (`live.rs`); three members against one with a slow handler (the same runs); the
//! times of membership changes (`membership.rs`). Each run in a child process of its own, on a
//! fresh bucket (so a fresh group, deleted after).

pub mod live;
pub mod membership;

use std::time::{Duration, Instant};

use faststream_core::kv::group::{GroupInfo, KvGroup, DEFAULT_PARTITIONS};
use faststream_core::{App, State};
use serde_json::json;
use tokio::sync::mpsc;

use crate::child::{child, compare_children, group_live_args, Compared};
use crate::cli::GroupSizes;
use crate::common::url;
use crate::report::{compare, Runs, Summary};
use live::LiveRun;

/// Members of a consumer group (`KvWatch::group`), each an `App` with its own connection.
const GROUP: &str = "faststream-rs-group";
/// A durable pull consumer on the bucket's stream `KV_<bucket>`, explicit acks, reading
/// `messages()` and acknowledging each message.
const RAW_PULL: &str = "async-nats-raw-pull";
/// Today's plain watch subscriber (`KvWatch::new(bucket)` without a group).
const PLAIN: &str = "faststream-rs-plain-watch";
/// For information, the group's design without faststream-rs: a partitioned mirror of the
/// bucket made with async-nats, read by one raw pull consumer ...
const RAW_MIRROR: &str = "async-nats-raw-pull-mirror";
/// ... or by one raw pull consumer per partition with `max_ack_pending` 1, as a group's.
const RAW_PARTITIONS: &str = "async-nats-raw-pull-partitions";
/// The group of every group workload (each run has a fresh bucket, so a fresh group).
const GROUP_NAME: &str = "bench";
/// The session timeout of every group workload (the default is 5 s): the membership changes
/// take about that long; the others start sooner (members heartbeat every fifth of it).
const GROUP_SESSION: Duration = Duration::from_secs(2);
/// How long a group workload waits for members to join, balance or take over.
const GROUP_WAIT: Duration = Duration::from_secs(60);

/// Each app's `after_startup` hook reports here: with `wait_for_catch_up`, a group member has
/// joined and a plain watch has caught up.
#[derive(Clone)]
struct Started(mpsc::UnboundedSender<()>);

async fn report_started(State(started): State<Started>) {
    let _ = started.0.send(());
}

/// An app running in a task of this process, stopped gracefully through `stop`.
struct RunningApp {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<faststream_core::Result<()>>,
}

impl RunningApp {
    fn spawn(app: App) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Waits until `info` shows `members` members, the partitions assigned to them balanced (within
/// one) and, if `pinned`, each pinned to the member it is assigned to.
async fn wait_balanced(group: &KvGroup, members: usize, pinned: bool) -> anyhow::Result<GroupInfo> {
    let started = Instant::now();
    loop {
        let info = group.info().await?;
        if is_balanced(&info, members, pinned) {
            return Ok(info);
        }
        anyhow::ensure!(
            started.elapsed() < GROUP_WAIT,
            "the group did not balance over {members} members in {GROUP_WAIT:?}: {info:?}"
        );
        // Not faster: each `info()` leaves an ephemeral consumer on the members bucket for 30 s
        // (it lists the keys with an ordered consumer); polled every 20 ms for a minute, the
        // server refused more ("maximum consumers limit reached", members included).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_balanced(info: &GroupInfo, members: usize, pinned: bool) -> bool {
    let partitions = info.partitions.len();
    let (least, most) = (partitions / members, partitions.div_ceil(members));
    let assigned: usize = info
        .members
        .iter()
        .map(|member| member.partitions.len())
        .sum();
    info.members.len() == members
        && assigned == partitions
        && info
            .members
            .iter()
            .all(|member| (least..=most).contains(&member.partitions.len()))
        && (!pinned
            || info.partitions.iter().all(|partition| {
                info.members.iter().any(|member| {
                    partition.pinned_to.as_deref() == Some(member.id.as_str())
                        && member.partitions.contains(&partition.partition)
                })
            }))
}

/// The group workloads, unless the server is older than 2.11 and they were not asked for
/// `alone` (then they are skipped with a note; run alone, an older server fails with the
/// reason).
pub async fn run(sizes: GroupSizes, alone: bool, summary: &mut Summary) -> anyhow::Result<()> {
    let version = async_nats::connect(url()).await?.server_info().version;
    let at_least_2_11 = {
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 11)
    };
    if alone || at_least_2_11 {
        run_group(sizes, summary).await
    } else {
        eprintln!("(skipped the group workloads: nats-server {version}, groups need 2.11)");
        Ok(())
    }
}

/// The three parts of the group workloads, each printing its figures.
async fn run_group(sizes: GroupSizes, summary: &mut Summary) -> anyhow::Result<()> {
    let prefix = format!("bench_group_{}", std::process::id());
    live_traffic(sizes, &prefix, summary).await?;
    slow_members(sizes, &prefix, summary).await?;
    membership_changes(sizes, &prefix, summary).await
}

fn throughput(runs: &Runs) -> f64 {
    runs.median("msgs_per_s")
}

/// `median/s (each run)`.
fn rate(runs: &Runs) -> String {
    format!(
        "{:.0}/s ({})",
        throughput(runs),
        runs.each("msgs_per_s", 1.0)
    )
}

fn vs(of: &Runs, against: &Runs) -> f64 {
    throughput(of) / throughput(against)
}

/// One member against raw async-nats (and the plain watch), a fast handler.
async fn live_traffic(
    sizes: GroupSizes,
    prefix: &str,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let GroupSizes {
        n, keys, repeats, ..
    } = sizes;
    let fast = LiveRun {
        n,
        keys,
        members: 1,
        workers: 1,
        partitions: DEFAULT_PARTITIONS,
        handler_ms: 0,
    };
    let runs = compare_children(
        &[GROUP, RAW_PULL, PLAIN, RAW_MIRROR, RAW_PARTITIONS],
        repeats,
        Compared::Grouplive,
        prefix,
        &fast.args(),
    )
    .await?;
    let (group, raw, plain, mirror, partitions) =
        (&runs[0], &runs[1], &runs[2], &runs[3], &runs[4]);
    summary.insert("group_throughput_vs_raw_pull".into(), json!(vs(group, raw)));
    summary.insert(
        "plain_watch_throughput_vs_raw_pull".into(),
        json!(vs(plain, raw)),
    );
    summary.insert(
        "group_throughput_vs_plain_watch".into(),
        json!(vs(group, plain)),
    );
    summary.insert(
        "group_throughput_vs_raw_partitions".into(),
        json!(vs(group, partitions)),
    );
    eprintln!(
        "group, live traffic: {n} changes over {keys} keys, a writer putting them pipelined (512 \
         acks outstanding) while the consumer handles them (counts, returns Ok); timed from the \
         first put to the last change handled, so a group's copy into its mirror counts (median \
         of {repeats}; each run): 1 group member ({DEFAULT_PARTITIONS} partitions, max_workers \
         1) {}; raw durable pull consumer on KV_<bucket>, ack per message {}; plain watch \
         subscriber {}; group/raw {:.2}x (target >= 0.9x), plain/raw {:.2}x, group/plain \
         {:.2}x",
        rate(group),
        rate(raw),
        rate(plain),
        vs(group, raw),
        vs(plain, raw),
        vs(group, plain),
    );
    eprintln!(
        "  the group's design without faststream-rs (a partitioned mirror made with async-nats): \
         one raw pull consumer on the mirror {} ({:.2}x raw); one raw pull consumer per \
         partition, max_ack_pending 1 {} ({:.2}x raw); group/that {:.2}x",
        rate(mirror),
        vs(mirror, raw),
        rate(partitions),
        vs(partitions, raw),
        vs(group, partitions),
    );

    let per_change = |runs: &Runs, field: &str| runs.median(field) * 1e6 / n as f64;
    if !per_change(group, "server_cpu_s").is_nan() {
        eprintln!(
            "  CPU per change (median; the consumer's process includes the writer, the server's \
             from NATS_SERVER_PID): group {:.1} us + server {:.1} us, raw pull {:.1} us + {:.1} \
             us, plain watch {:.1} us + {:.1} us, raw pull on the mirror {:.1} us + {:.1} us, \
             raw per partition {:.1} us + {:.1} us",
            per_change(group, "cpu_s"),
            per_change(group, "server_cpu_s"),
            per_change(raw, "cpu_s"),
            per_change(raw, "server_cpu_s"),
            per_change(plain, "cpu_s"),
            per_change(plain, "server_cpu_s"),
            per_change(mirror, "cpu_s"),
            per_change(mirror, "server_cpu_s"),
            per_change(partitions, "cpu_s"),
            per_change(partitions, "server_cpu_s"),
        );
    }
    Ok(())
}

/// Three members against one, a handler awaiting 1 ms: with the sizes' workers and partitions,
/// then with `max_workers` 16 and the default partitions.
async fn slow_members(
    sizes: GroupSizes,
    prefix: &str,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let repeats = sizes.repeats;
    let slow = |members, workers, partitions| LiveRun {
        n: sizes.slow_n,
        keys: sizes.slow_keys,
        members,
        workers,
        partitions,
        handler_ms: 1,
    };
    let members = |workers: usize, partitions: u16| {
        compare(&["1", "3"], repeats, move |members| {
            let run = slow(members.parse().unwrap_or(1), workers, partitions);
            let args = group_live_args(GROUP, prefix, &run);
            async move { child(&args).await }
        })
    };
    let (workers, partitions) = (sizes.slow_workers, sizes.slow_partitions);
    let runs = members(workers, partitions).await?;
    let (one, three) = (&runs[0], &runs[1]);
    summary.insert("group_3_members_vs_1".into(), json!(vs(three, one)));
    eprintln!(
        "group, slow handler (awaits 1 ms), {} changes over {} keys, live as above; max_workers \
         {workers} on every member of both sides and {partitions} partitions, so that one member \
         is bound by its workers and each of three holds {} partitions for its {workers} workers \
         (median of {repeats}; each run): 1 member {}, 3 members (3 apps in one process) {}; 3/1 \
         {:.2}x (target >= 2.5x)",
        sizes.slow_n,
        sizes.slow_keys,
        usize::from(partitions).div_ceil(3),
        rate(one),
        rate(three),
        vs(three, one),
    );
    let runs = members(16, DEFAULT_PARTITIONS).await?;
    let (one, three) = (&runs[0], &runs[1]);
    summary.insert(
        "group_3_members_vs_1_default_partitions".into(),
        json!(vs(three, one)),
    );
    eprintln!(
        "  the same with max_workers 16 and the default {DEFAULT_PARTITIONS} partitions (each \
         with up to 32 changes in flight, so the workers bound the calls at once): 1 member {}, \
         3 members {}; 3/1 {:.2}x",
        rate(one),
        rate(three),
        vs(three, one),
    );
    Ok(())
}

/// Rebalance, graceful hand-over and takeover times.
async fn membership_changes(
    sizes: GroupSizes,
    prefix: &str,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let GroupSizes { keys, repeats, .. } = sizes;
    let extra = [keys.to_string(), sizes.rate.to_string()];
    let runs = compare_children(&[GROUP], repeats, Compared::Grouptimes, prefix, &extra).await?;
    let times = &runs[0];
    for field in [
        "rebalance_handled_s",
        "rebalance_info_s",
        "handover_first_s",
        "handover_all_s",
        "takeover_first_s",
        "takeover_all_s",
    ] {
        summary.insert(format!("group_{field}"), json!(times.median(field)));
    }
    let ms = |field: &str| {
        format!(
            "{:.0} ms ({})",
            times.median(field) * 1e3,
            times.each(field, 1e3)
        )
    };
    eprintln!(
        "group membership changes: {DEFAULT_PARTITIONS} partitions, session_timeout {:?} (the \
         default is {:?}), members awaiting 1 ms per change with max_workers 16, a writer \
         changing {} random keys of {keys} a second (median of {repeats}; each run): rebalance \
         (a 2nd member starts): joined {}, handled a change of each partition it took over {}, \
         info() balanced and pinned {} (heartbeats every {:?}); graceful hand-over (it stops): \
         the survivor handles a change of one of its partitions {}, of each {}; takeover (a \
         member in a child process killed with SIGKILL): one {}, each {}",
        GROUP_SESSION,
        faststream_core::kv::group::DEFAULT_SESSION_TIMEOUT,
        sizes.rate,
        ms("rebalance_joined_s"),
        ms("rebalance_handled_s"),
        ms("rebalance_info_s"),
        GROUP_SESSION / 5,
        ms("handover_first_s"),
        ms("handover_all_s"),
        ms("takeover_first_s"),
        ms("takeover_all_s"),
    );
    Ok(())
}
