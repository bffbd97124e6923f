//! Shared by the consumer-group tests with several members (group_processes.rs,
//! group_cluster.rs): the `begin`/`end` records of handler calls, a steady writer, waiting for
//! the group to form, and the checks of what the calls recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Deserialize;

use faststream_core::kv::group::GroupInfo;

pub mod cluster;

use crate::common::Recorder;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One side of a handler call: `begin` before the work, `end` after it (so an `end` means the
/// call completed; the change is acknowledged after it).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Position in the order the records were stored (1-based). Each member waits for its
    /// record to be stored before going on, and a change is acknowledged only after its `end`,
    /// so this order follows causality across members.
    #[serde(default)]
    pub seq: u64,
    pub member: String,
    pub event: String,
    pub key: String,
    pub revision: u64,
    /// Wall-clock time of the record, nanoseconds since the epoch.
    pub nanos: u64,
}

impl Record {
    pub fn is_begin(&self) -> bool {
        self.event == "begin"
    }

    pub fn is_end(&self) -> bool {
        self.event == "end"
    }
}

/// Wall-clock now in nanoseconds since the epoch, as records carry it.
pub fn now_nanos() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// The time from `from` to `to` (nanoseconds since the epoch).
pub fn between(from: u64, to: u64) -> Duration {
    Duration::from_nanos(to.saturating_sub(from))
}

/// The records in stored order; tests wait for conditions on them.
pub type Records = Recorder<Record>;

impl Records {
    /// Appends `record`, numbering it.
    pub fn push_numbered(&self, record: Record) {
        self.push_with(|before| Record {
            seq: before as u64 + 1,
            ..record
        });
    }

    /// Waits until at least `count` calls have ended.
    pub async fn wait_for_ends(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_within(&format!("{count} ends"), timeout, |records| {
            ends(records) >= count
        })
        .await
        .map_err(|error| error.context(format!("{} ends", ends(&self.snapshot()))))
        .map(drop)
    }

    /// Waits until every written change has been handled (has an `end`).
    pub async fn wait_for_all_handled(
        &self,
        written: &BTreeMap<String, Vec<u64>>,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Record>> {
        let total: usize = written.values().map(Vec::len).sum();
        self.wait_for_within(
            &format!("all {total} written changes handled"),
            timeout,
            |records| missing(records, written).is_empty(),
        )
        .await
        .map_err(|error| {
            let missing = missing(&self.snapshot(), written);
            error.context(format!(
                "{} changes not handled, the first: {:?}",
                missing.len(),
                missing.iter().take(10).collect::<Vec<_>>()
            ))
        })
    }
}

/// How many calls have ended.
pub fn ends(records: &[Record]) -> usize {
    records.iter().filter(|r| r.is_end()).count()
}

/// The written changes without an `end`.
pub fn missing(records: &[Record], written: &BTreeMap<String, Vec<u64>>) -> Vec<(String, u64)> {
    let handled: BTreeSet<(&str, u64)> = records
        .iter()
        .filter(|r| r.is_end())
        .map(|r| (r.key.as_str(), r.revision))
        .collect();
    written
        .iter()
        .flat_map(|(key, revisions)| revisions.iter().map(move |r| (key, *r)))
        .filter(|(key, revision)| !handled.contains(&(key.as_str(), *revision)))
        .map(|(key, revision)| (key.clone(), revision))
        .collect()
}

/// What [`check_calls`] counted.
#[derive(Debug, Default)]
pub struct Checked {
    /// Calls that ended.
    pub calls: usize,
    /// Calls of a change already handled (ended) before: at-least-once redeliveries.
    pub redeliveries: usize,
    /// Calls the killed member began and never ended.
    pub unfinished: usize,
    /// Revisions handled that the writer does not know it wrote (a put that failed but was
    /// stored, retried).
    pub extras: usize,
}

/// Checks the calls, key by key in stored order, against what was written:
/// - every call that began ended before the next call of its key began (no overlap), except
///   calls of `killed` that never ended (it died in them);
/// - the ends, exact repeats of a change aside, are the written revisions in order: nothing
///   lost, nothing out of order, and nothing that was not written unless `extras_allowed`;
/// - a change is handled again only if `repeats_allowed` says so for it (given the key, the
///   revision and the members that called it before).
pub fn check_calls(
    records: &[Record],
    written: &BTreeMap<String, Vec<u64>>,
    killed: Option<&str>,
    repeats_allowed: impl Fn(&str, u64, &[&str]) -> bool,
    extras_allowed: bool,
) -> anyhow::Result<Checked> {
    let mut per_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records {
        per_key.entry(record.key.as_str()).or_default().push(record);
    }
    let mut checked = Checked::default();
    let mut problems = Vec::new();
    for (key, records) in &per_key {
        let mut open: Option<&Record> = None;
        // The handled revisions (repeats once), and who began the last one.
        let mut handled: Vec<u64> = Vec::new();
        let mut callers: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for record in records {
            if record.is_begin() {
                if let Some(previous) = open {
                    if Some(previous.member.as_str()) == killed {
                        checked.unfinished += 1;
                    } else {
                        problems.push(format!(
                            "{key}: {} began revision {} (record {}) while {} was in revision \
                             {} (record {})",
                            record.member,
                            record.revision,
                            record.seq,
                            previous.member,
                            previous.revision,
                            previous.seq
                        ));
                    }
                }
                let before = callers.get(&record.revision).cloned().unwrap_or_default();
                if handled.contains(&record.revision)
                    && !repeats_allowed(key, record.revision, &before)
                {
                    problems.push(format!(
                        "{key}: revision {} handled again by {} (record {}) after {before:?}",
                        record.revision, record.member, record.seq
                    ));
                }
                callers
                    .entry(record.revision)
                    .or_default()
                    .push(record.member.as_str());
                open = Some(record);
            } else {
                match open.take() {
                    Some(begin)
                        if begin.member == record.member && begin.revision == record.revision => {}
                    other => problems.push(format!(
                        "{key}: {} ended revision {} (record {}) but the call open was {:?}",
                        record.member, record.revision, record.seq, other
                    )),
                }
                checked.calls += 1;
                if handled.last() == Some(&record.revision) {
                    checked.redeliveries += 1;
                } else {
                    handled.push(record.revision);
                }
            }
        }
        if let Some(open) = open {
            if Some(open.member.as_str()) == killed {
                checked.unfinished += 1;
            } else {
                problems.push(format!("{key}: a call never ended: {open:?}"));
            }
        }
        let expected = written.get(*key).map(Vec::as_slice).unwrap_or_default();
        let in_order = handled.windows(2).all(|pair| pair[0] < pair[1]);
        let extras = handled.len().saturating_sub(expected.len());
        let all_written = expected.iter().all(|revision| handled.contains(revision));
        if !(in_order && all_written && (extras == 0 || extras_allowed)) {
            problems.push(format!(
                "{key}: handled {handled:?}, written {expected:?} (in order, repeats once)"
            ));
        }
        checked.extras += extras;
    }
    for (key, revisions) in written {
        if !per_key.contains_key(key.as_str()) {
            problems.push(format!("{key}: written {revisions:?}, never handled"));
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        anyhow::bail!(
            "{} problem(s) in the calls: {}",
            problems.len(),
            problems.join("; ")
        )
    }
}

/// The keys whose last record before `at` is `member`'s: the keys of the partitions it held.
pub fn keys_held(records: &[Record], member: &str, at: u64) -> BTreeSet<String> {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for record in records.iter().filter(|r| r.nanos < at) {
        last.insert(record.key.as_str(), record.member.as_str());
    }
    last.into_iter()
        .filter(|(_, holder)| *holder == member)
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// For each of `keys`, the first call ended after `at` by a member other than `gone`, as the
/// time since `at`; `None` for a key not handled yet.
pub fn taken_over(
    records: &[Record],
    keys: &BTreeSet<String>,
    gone: &str,
    at: u64,
) -> BTreeMap<String, Option<Duration>> {
    keys.iter()
        .map(|key| {
            let first = records
                .iter()
                .find(|r| r.is_end() && r.key == *key && r.member != gone && r.nanos > at)
                .map(|r| between(at, r.nanos));
            (key.clone(), first)
        })
        .collect()
}

/// The first and the last of the take-over times, once every key has one.
pub fn first_and_last(times: &BTreeMap<String, Option<Duration>>) -> Option<(Duration, Duration)> {
    let times: Option<Vec<Duration>> = times.values().copied().collect();
    let times = times?;
    Some((*times.iter().min()?, *times.iter().max()?))
}

/// A task putting `k.<i % keys>` at a steady pace until stopped, every put's revision kept.
pub struct Writer {
    /// Puts acknowledged so far.
    pub puts: Arc<std::sync::atomic::AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<Vec<(String, u64)>>>,
}

impl Writer {
    /// Puts every `period`. A failed put is retried for up to 30 s if `retry` (a cluster
    /// electing leaders), else fails the writer.
    pub fn start(
        store: async_nats::jetstream::kv::Store,
        keys: u64,
        period: Duration,
        retry: bool,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&puts);
        let task = tokio::spawn(async move {
            let mut written = Vec::new();
            let mut pace = tokio::time::interval(period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while stopped.try_recv().is_err() {
                pace.tick().await;
                let key = format!("k.{}", i % keys);
                let revision = if retry {
                    faststream_testing::wait_for(
                        &format!("putting {key}"),
                        Duration::from_secs(30),
                        || async { anyhow::Ok(Some(store.put(&key, i.to_string().into()).await?)) },
                    )
                    .await?
                } else {
                    store
                        .put(&key, i.to_string().into())
                        .await
                        .with_context(|| format!("putting {key}"))?
                };
                written.push((key, revision));
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            Ok(written)
        });
        Self { puts, stop, task }
    }

    /// Stops the writer; the revisions written, per key in order.
    pub async fn stop(self) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
        let _ = self.stop.send(());
        let written = self.task.await.context("the writer panicked")??;
        Ok(per_key(written))
    }
}

/// `(key, revision)` pairs grouped by key, revisions in order.
pub fn per_key(written: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<String, Vec<u64>> {
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, revision) in written {
        per_key.entry(key).or_default().push(revision);
    }
    for revisions in per_key.values_mut() {
        revisions.sort_unstable();
    }
    per_key
}

/// `members` members whose assignments cover the `partitions` partitions once each.
pub fn covered(info: &GroupInfo, members: usize, partitions: u16) -> bool {
    let mut assigned: Vec<u16> = info
        .members
        .iter()
        .flat_map(|member| member.partitions.iter().copied())
        .collect();
    assigned.sort_unstable();
    info.members.len() == members && assigned == (0..partitions).collect::<Vec<_>>()
}

/// Waits until the group has `members` members whose assignments cover the `partitions`
/// partitions once each (they all see the same members); the members' ids.
pub async fn wait_for_group(
    broker: &faststream_core::NatsBroker,
    bucket: &str,
    group: &str,
    members: usize,
    partitions: u16,
    timeout: Duration,
) -> anyhow::Result<Vec<faststream_core::kv::group::MemberInfo>> {
    faststream_testing::wait_for(
        &format!("the group to form with {members} members"),
        timeout,
        || async {
            let info = broker.kv_group(bucket, group).await?.info().await?;
            let formed = covered(&info, members, partitions);
            let seen = format!("{:?}", info.members);
            anyhow::Ok((formed.then_some(info.members), seen))
        },
    )
    .await
}
