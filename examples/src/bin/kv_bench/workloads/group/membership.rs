//! `grouptimes IMPL PREFIX KEYS RATE`, the child side of the group workloads' membership
//! changes, and `groupmember BUCKET`, the member it kills.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::kv::group::{GroupInfo, GroupSettings, DEFAULT_PARTITIONS};
use faststream_core::{App, HookStage, KvMessage, KvWatch, State};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    report_started, wait_balanced, RunningApp, Started, GROUP, GROUP_NAME, GROUP_SESSION,
    GROUP_WAIT,
};
use crate::broker::{app, connected_broker};
use crate::child::spawn_group_member;
use crate::common::url;
use crate::data::{drop_bucket, prefill_flags, write_paced};

/// What one app of the membership workload handled: when, and which key (`k.<index>`).
#[derive(Default)]
struct Handled(Mutex<Vec<(Instant, u32)>>);

impl Handled {
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |log| log.len())
    }

    /// The first time, from entry `from` on and not before `since`, a change of each of
    /// `partitions` was handled (`partition_of` maps a key's index to its partition).
    fn first_per_partition(
        &self,
        from: usize,
        since: Instant,
        partitions: &[u16],
        partition_of: &HashMap<u32, u16>,
    ) -> HashMap<u16, Instant> {
        let mut first = HashMap::new();
        let Ok(log) = self.0.lock() else {
            return first;
        };
        for (at, key) in log.iter().skip(from) {
            if *at < since {
                continue;
            }
            if let Some(partition) = partition_of.get(key) {
                if partitions.contains(partition) {
                    first.entry(*partition).or_insert(*at);
                }
            }
        }
        first
    }
}

/// The handler of the membership workload: awaits 1 ms (so that members are busy when they
/// join, stop or die), then records the change.
async fn track(message: KvMessage, State(handled): State<Arc<Handled>>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let key = message
        .key()
        .strip_prefix("k.")
        .and_then(|index| index.parse().ok());
    if let (Some(key), Ok(mut log)) = (key, handled.0.lock()) {
        log.push((Instant::now(), key));
    }
}

/// The watch of every member of the membership workload (`max_workers` 16: a member can use
/// all its partitions).
fn membership_watch(bucket: &str) -> KvWatch {
    KvWatch::new(bucket.to_owned())
        .declare(false)
        .max_workers(16)
        .group(
            GroupSettings::new(GROUP_NAME)
                .partitions(DEFAULT_PARTITIONS)
                .session_timeout(GROUP_SESSION),
        )
}

/// A member of the membership workload in this process, recording what it handles.
fn tracking_member(bucket: &str, handled: &Arc<Handled>, started: &Started) -> App {
    app()
        .without_registered()
        .without_default_logging()
        .wait_for_catch_up(GROUP_WAIT)
        .with_state(Arc::clone(handled))
        .with_state(started.clone())
        .hook(HookStage::AfterStartup, "started", report_started)
        .subscriber("track", "k.*", membership_watch(bucket), track)
}

/// `groupmember BUCKET`: a member of the membership workload's group in a process of its own,
/// handling changes (doing nothing with them) until it is stopped or killed.
pub async fn group_member(bucket: &str) -> anyhow::Result<()> {
    async fn ignore(message: KvMessage) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        std::hint::black_box(message);
    }
    app()
        .without_registered()
        .without_default_logging()
        .subscriber("ignore", "k.*", membership_watch(bucket), ignore)
        .run()
        .await?;
    Ok(())
}

/// Waits until `handled` (from entry `from` on) holds a change handled after `since` in each
/// of `partitions`; returns the seconds from `since` to the first such change and to the
/// last partition's first.
async fn wait_handled(
    handled: &Handled,
    from: usize,
    since: Instant,
    partitions: &[u16],
    partition_of: &HashMap<u32, u16>,
) -> anyhow::Result<(f64, f64)> {
    loop {
        let first = handled.first_per_partition(from, since, partitions, partition_of);
        if first.len() == partitions.len() {
            let seconds = |at: Option<&Instant>| {
                at.map_or(f64::NAN, |at| at.duration_since(since).as_secs_f64())
            };
            return Ok((seconds(first.values().min()), seconds(first.values().max())));
        }
        anyhow::ensure!(
            since.elapsed() < GROUP_WAIT,
            "partitions {partitions:?} not all handled after {GROUP_WAIT:?}: {:?} were",
            first.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The key index -> partition map of a group, read from its mirror's subjects
/// (`p.<partition>.k.<index>`).
async fn partitions_of_keys(bucket: &str, keys: usize) -> anyhow::Result<HashMap<u32, u16>> {
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let stream = js.get_stream(format!("KVG_{bucket}_{GROUP_NAME}")).await?;
    let mut subjects = stream.info_with_subjects("p.>").await?;
    let mut map = HashMap::with_capacity(keys);
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject?;
        let mut tokens = subject.split('.').skip(1);
        let partition = tokens.next().and_then(|token| token.parse().ok());
        let key = tokens.nth(1).and_then(|token| token.parse().ok());
        if let (Some(partition), Some(key)) = (partition, key) {
            map.insert(key, partition);
        }
    }
    anyhow::ensure!(
        map.len() == keys,
        "the mirror has {} of {keys} keys",
        map.len()
    );
    Ok(map)
}

/// The partitions assigned to the member other than `other`.
fn partitions_of_newcomer(info: &GroupInfo, other: &str) -> anyhow::Result<(String, Vec<u16>)> {
    info.members
        .iter()
        .find(|member| member.id != other)
        .map(|member| (member.id.clone(), member.partitions.clone()))
        .with_context(|| format!("no second member in {info:?}"))
}

/// Membership changes on a fresh bucket of `keys` keys while a writer changes `rate` random
/// keys a second, each member with the session timeout [`GROUP_SESSION`] and a handler
/// awaiting 1 ms (`max_workers` 16):
/// - rebalance: member B (an app in this process) joins member A's group; seconds from its
///   start until it has joined, until B has handled a change of each partition it took
///   over, and until `info()` shows the partitions balanced and pinned (heartbeats, which
///   carry the pins, are written every fifth of the session timeout);
/// - graceful hand-over: B stops; seconds until A handles a change of one of B's partitions,
///   and of each;
/// - takeover: member C (this binary, `groupmember`, in a child process) joins and is killed
///   with SIGKILL once balanced; seconds until A handles a change of one of C's partitions,
///   and of each.
pub async fn group_times(prefix: &str, keys: usize, rate: usize) -> anyhow::Result<Value> {
    let bucket = format!("{prefix}_{}", std::process::id());
    prefill_flags(&bucket, keys).await?;
    let broker = connected_broker().await?;
    let (started, mut reports) = mpsc::unbounded_channel();
    let started = Started(started);

    // Member A, then the writer.
    let handled_a = Arc::new(Handled::default());
    let a = RunningApp::spawn(tracking_member(&bucket, &handled_a, &started));
    tokio::time::timeout(GROUP_WAIT, reports.recv())
        .await
        .context("member A did not join")?;
    let group = broker.kv_group(&bucket, GROUP_NAME).await?;
    let partition_of = partitions_of_keys(&bucket, keys).await?;
    let info = wait_balanced(&group, 1, false).await?;
    let a_id = info.members[0].id.clone();
    let stop_writer = Arc::new(AtomicBool::new(false));
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let writer = tokio::spawn(write_paced(
        js,
        bucket.clone(),
        keys,
        rate,
        Arc::clone(&stop_writer),
    ));
    wait_balanced(&group, 1, true).await?;

    // Rebalance: B joins.
    let handled_b = Arc::new(Handled::default());
    let since = Instant::now();
    let b = RunningApp::spawn(tracking_member(&bucket, &handled_b, &started));
    tokio::time::timeout(GROUP_WAIT, reports.recv())
        .await
        .context("member B did not join")?;
    let joined = since.elapsed().as_secs_f64();
    // B's partitions as the balanced assignment says (its first heartbeat, written before it
    // has read the others', may claim every partition).
    let info = wait_balanced(&group, 2, false).await?;
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let (_, rebalance_handled) = wait_handled(&handled_b, 0, since, &moved, &partition_of).await?;
    let info = wait_balanced(&group, 2, true).await?;
    let rebalance_info = since.elapsed().as_secs_f64();

    // Graceful hand-over: B stops.
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let from = handled_a.len();
    let since = Instant::now();
    b.stop().await?;
    let stopped = since.elapsed().as_secs_f64();
    let (handover_first, handover_all) =
        wait_handled(&handled_a, from, since, &moved, &partition_of).await?;
    wait_balanced(&group, 1, true).await?;

    // Takeover: C joins in a child process, then dies without leaving.
    let mut c = spawn_group_member(&bucket)?;
    let info = wait_balanced(&group, 2, true).await?;
    let (_, moved) = partitions_of_newcomer(&info, &a_id)?;
    let from = handled_a.len();
    let since = Instant::now();
    c.start_kill()?;
    let (takeover_first, takeover_all) =
        wait_handled(&handled_a, from, since, &moved, &partition_of).await?;
    let _ = c.wait().await;

    stop_writer.store(true, Ordering::Relaxed);
    let (written, write_time) = writer.await??;
    a.stop().await?;
    group.delete().await?;
    drop_bucket(&bucket).await?;
    Ok(json!({
        "impl": GROUP,
        "mode": "group_times",
        "keys": keys,
        "partitions": DEFAULT_PARTITIONS,
        "session_timeout_s": GROUP_SESSION.as_secs_f64(),
        "writer_puts_per_s": written as f64 / write_time.as_secs_f64(),
        "rebalance_joined_s": joined,
        "rebalance_handled_s": rebalance_handled,
        "rebalance_info_s": rebalance_info,
        "handover_stop_s": stopped,
        "handover_first_s": handover_first,
        "handover_all_s": handover_all,
        "takeover_first_s": takeover_first,
        "takeover_all_s": takeover_all,
    }))
}
