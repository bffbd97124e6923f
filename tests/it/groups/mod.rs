//! Consumer groups against a real nats-server: several members, each an `App` with its own
//! connection, in one process. Handlers record when each call began and ended, on which member,
//! for which key, revision and attempt; the tests assert the group's promises from those
//! records: each change handled once, by one member; a key's calls never overlap and follow
//! revision order; retries, dead letters and replays; hand-over on stop and rebalance on join;
//! progress kept on the server; settings fixed at creation; and the cleanup of a group.
//!
//! No sleep is a proof: every wait is for an event (a record, a dead letter, an assignment),
//! bounded by `EVENT_TIMEOUT`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{
    bucket_with_history, connected_broker, jetstream, on_each_server_before, on_each_server_since,
    startup_error, Events, Recorder, RunningApp, EVENT_TIMEOUT,
};
use anyhow::Context as _;
use faststream_core::error::GroupError;
use faststream_core::kv::group::GroupInfo;
use faststream_core::kv::group::GroupSettings;
use faststream_core::{
    App, BrokerConfig, Error, HookStage, KeyValue, KvMessage, KvWatch, NatsBroker, Operation, State,
};
use faststream_testing::NatsServer;

mod aborted_member;
mod bucket_reads;
mod calls;
mod hand_backs;
mod hand_over;
mod in_flight;
mod info;
mod long_call;
mod membership_rules;
mod operator_reads;
mod panicking_task;
mod probe;
mod recreated_bucket;
mod retries;
mod settings;
mod sharing;
mod unreadable_delivery;
mod workers;

const BUCKET: &str = "shop";
const PATTERN: &str = "orders.{id}";
/// How long each call works before it returns.
const WORK: Duration = Duration::from_millis(1);
/// The session timeout of the groups here: short, so that anything that waits for it shows.
const SESSION: Duration = Duration::from_secs(2);

/// One handler call, as the handler saw it.
#[derive(Debug, Clone)]
struct Call {
    member: Arc<str>,
    message: KvMessage,
    /// 1 for the first call of this key and revision (counted by the handlers).
    attempt: u32,
    begin: Instant,
    end: Instant,
    /// What the call returned as `Err`.
    error: Option<String>,
}

impl Call {
    fn key(&self) -> &str {
        self.message.key()
    }

    fn revision(&self) -> u64 {
        self.message.revision()
    }

    fn change(&self) -> (String, u64) {
        (self.key().to_owned(), self.revision())
    }

    fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Decides whether a call fails: `Some(error)` for the key, revision and attempt.
type Failure = dyn Fn(&KvMessage, u32) -> Option<String> + Send + Sync;

/// The calls of a test's handlers, shared by its members.
#[derive(Clone)]
struct Calls {
    /// A line per member start, for [`start_member`] to wait on.
    events: Events,
    log: Recorder<Call>,
    attempts: Arc<Mutex<HashMap<(String, u64), u32>>>,
    failure: Arc<Mutex<Option<Arc<Failure>>>>,
    /// Calls wait while it is closed (`false`).
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            events: Events::default(),
            log: Recorder::default(),
            attempts: Arc::default(),
            failure: Arc::default(),
            gate: Arc::new(tokio::sync::watch::Sender::new(true)),
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Calls {
    fn all(&self) -> Vec<Call> {
        self.log.snapshot()
    }

    fn of(&self, member: &str) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|call| &*call.member == member)
            .collect()
    }

    fn fail_with(
        &self,
        failure: impl Fn(&KvMessage, u32) -> Option<String> + Send + Sync + 'static,
    ) {
        *locked(&self.failure) = Some(Arc::new(failure));
    }

    fn heal(&self) {
        *locked(&self.failure) = None;
    }

    /// Calls starting from now wait until [`open`](Self::open).
    fn hold(&self) {
        self.gate.send_replace(false);
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Waits until `done` holds for the calls so far; returns them.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[Call]) -> bool,
    ) -> anyhow::Result<Vec<Call>> {
        self.log.wait_for(what, done).await
    }

    /// Waits until `count` calls were made in all.
    async fn wait_for_count(&self, count: usize) -> anyhow::Result<Vec<Call>> {
        self.log.wait_for_count(count).await
    }

    /// Waits until every one of `changes` was handled (returned `Ok`).
    async fn wait_for_handled(
        &self,
        what: &str,
        changes: &BTreeSet<(String, u64)>,
    ) -> anyhow::Result<Vec<Call>> {
        self.wait_for(what, |calls| handled(calls).is_superset(changes))
            .await
    }
}

/// What each member's handler gets: its name and the test's calls.
#[derive(Clone)]
struct Member {
    name: Arc<str>,
    calls: Calls,
}

async fn handle(message: KvMessage, State(member): State<Member>) -> anyhow::Result<()> {
    let begin = Instant::now();
    let calls = &member.calls;
    let attempt = {
        let mut attempts = locked(&calls.attempts);
        let attempt = attempts
            .entry((message.key().to_owned(), message.revision()))
            .or_default();
        *attempt += 1;
        *attempt
    };
    let mut gate = calls.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    tokio::time::sleep(WORK).await;
    let failure = locked(&calls.failure).clone();
    let error = failure.and_then(|failure| failure(&message, attempt));
    let end = Instant::now();
    calls.log.push(Call {
        member: Arc::clone(&member.name),
        message,
        attempt,
        begin,
        end,
        error: error.clone(),
    });
    match error {
        Some(error) => Err(anyhow::anyhow!(error)),
        None => Ok(()),
    }
}

async fn started(State(member): State<Member>) {
    member.calls.events.push(format!("{} started", member.name));
}

/// A member: its own app and connection, the group subscriber `bill` on `orders.{id}`, joined
/// before its `after_startup` hook records `<name> started`.
fn member_app(server: &NatsServer, name: &str, calls: &Calls, watch: KvWatch) -> App {
    App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .with_state(Member {
            name: Arc::from(name),
            calls: calls.clone(),
        })
        .wait_for_catch_up(EVENT_TIMEOUT)
        .subscriber("bill", PATTERN, watch, handle)
        .hook(HookStage::AfterStartup, "started", started)
}

/// Starts a member and waits until it has joined.
async fn start_member(
    server: &NatsServer,
    name: &str,
    calls: &Calls,
    watch: KvWatch,
) -> anyhow::Result<RunningApp> {
    let running = RunningApp::spawn(member_app(server, name, calls, watch));
    calls
        .events
        .wait_for_event(&format!("{name} started"))
        .await?;
    Ok(running)
}

/// The settings of the groups here: short session timeout and backoff.
fn settings(group: &'static str, partitions: u16) -> GroupSettings {
    GroupSettings::new(group)
        .partitions(partitions)
        .session_timeout(SESSION)
        .backoff([Duration::from_millis(100)])
}

fn group_watch(group: &'static str, partitions: u16) -> KvWatch {
    KvWatch::new(BUCKET).group(settings(group, partitions))
}

/// A change written, and when its put returned.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    revision: u64,
    at: Instant,
}

/// Puts changes `range` to `keys` keys in turn (`orders.<i % keys>`), `pace` apart.
async fn write(
    store: KeyValue,
    range: std::ops::Range<usize>,
    keys: usize,
    pace: Duration,
) -> anyhow::Result<Vec<Written>> {
    let mut written = Vec::with_capacity(range.len());
    for i in range {
        let key = format!("orders.{}", i % keys);
        let revision = store.put(&key, i.to_string().into()).await?;
        written.push(Written {
            key,
            revision,
            at: Instant::now(),
        });
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    Ok(written)
}

fn changes(written: &[Written]) -> BTreeSet<(String, u64)> {
    written
        .iter()
        .map(|w| (w.key.clone(), w.revision))
        .collect()
}

/// The changes handled (calls that returned `Ok`).
fn handled(calls: &[Call]) -> BTreeSet<(String, u64)> {
    calls.iter().filter(|c| c.ok()).map(Call::change).collect()
}

/// The group's promises, from the calls: each of `expected` handled exactly once (so by one
/// member) and nothing else handled; per key, no two calls overlap, and in the order they
/// began the revisions never go back and the handled ones strictly increase.
fn assert_once_and_in_order(calls: &[Call], expected: &BTreeSet<(String, u64)>) {
    let mut counts: BTreeMap<(String, u64), Vec<&Call>> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.ok()) {
        counts.entry(call.change()).or_default().push(call);
    }
    for (change, handlers) in &counts {
        assert_eq!(
            handlers.len(),
            1,
            "{change:?} handled {} times: {handlers:#?}",
            handlers.len()
        );
    }
    let seen: BTreeSet<_> = counts.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(expected).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    assert!(extra.is_empty(), "handled but not expected: {extra:?}");
    assert_per_key_order(calls);
}

/// Per key: calls never overlap (each ends before the next begins), revisions never go back,
/// and the handled revisions strictly increase.
fn assert_per_key_order(calls: &[Call]) {
    let mut per_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in calls {
        per_key.entry(call.key()).or_default().push(call);
    }
    for (key, mut calls) in per_key {
        calls.sort_by_key(|c| c.begin);
        for pair in calls.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.end <= b.begin,
                "{key}: calls overlap: {}@{} on {} and {}@{} on {}",
                a.key(),
                a.revision(),
                a.member,
                b.key(),
                b.revision(),
                b.member
            );
            assert!(
                a.revision() < b.revision() || (a.revision() == b.revision() && !a.ok()),
                "{key}: revision {} ({}) then {} on {}",
                a.revision(),
                if a.ok() { "handled" } else { "failed" },
                b.revision(),
                b.member
            );
        }
    }
}

/// Waits until the group's info satisfies `done`; returns it.
async fn info_until(
    broker: &NatsBroker,
    group: &str,
    what: &str,
    done: impl Fn(&GroupInfo) -> bool,
) -> anyhow::Result<GroupInfo> {
    let group = broker.kv_group(BUCKET, group).await?;
    faststream_testing::wait_for(what, EVENT_TIMEOUT, || async {
        let info = group.info().await?;
        let seen = format!("{info:#?}");
        anyhow::Ok((done(&info).then_some(info), seen))
    })
    .await
}

/// Nothing pending or in flight in any partition.
fn settled(info: &GroupInfo) -> bool {
    info.pending() == 0
}

/// The partition of each key of `changes`, read from the group's copy of the bucket, where the
/// change with sequence `revision` has the subject `p.<partition>.<key>`.
async fn partitions_of(
    server: &NatsServer,
    group: &str,
    changes: impl IntoIterator<Item = (String, u64)>,
) -> anyhow::Result<BTreeMap<String, u16>> {
    let stream = jetstream(server)
        .await?
        .get_stream(format!("KVG_{BUCKET}_{group}"))
        .await?;
    let mut partitions = BTreeMap::new();
    for (key, revision) in changes {
        if partitions.contains_key(&key) {
            continue;
        }
        // Removed by the per-key history limit: another revision of the key will do.
        let Ok(message) = stream.get_raw_message(revision).await else {
            continue;
        };
        let subject = message.subject.to_string();
        let (partition, copied_key) = subject
            .strip_prefix("p.")
            .and_then(|rest| rest.split_once('.'))
            .with_context(|| format!("copy subject {subject}"))?;
        assert_eq!(copied_key, key, "sequence {revision} of the copy");
        partitions.insert(key, partition.parse()?);
    }
    Ok(partitions)
}

/// Every retained entry of `key`, by revision (deletes included).
async fn history(
    store: &KeyValue,
    key: &str,
) -> anyhow::Result<BTreeMap<u64, async_nats::jetstream::kv::Entry>> {
    use futures_util::TryStreamExt as _;
    let entries: Vec<_> = store.history(key).await?.try_collect().await?;
    Ok(entries
        .into_iter()
        .map(|entry| (entry.revision, entry))
        .collect())
}

/// The revision of `key`'s latest entry (a delete marker included).
async fn last_revision(store: &KeyValue, key: &str) -> anyhow::Result<u64> {
    history(store, key)
        .await?
        .into_keys()
        .next_back()
        .with_context(|| format!("no entry of {key}"))
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The differences a refusal of a member of `group` names, and the error's text.
fn refusal(group: &str, error: Error) -> (Vec<String>, String) {
    let text = faststream_core::error::chain(&error);
    let (bucket, refused_by, source) = match error {
        Error::Group {
            bucket,
            group,
            source,
        } => (bucket, group, source),
        other => panic!("not Error::Group: {other:?}"),
    };
    assert_eq!((bucket.as_str(), refused_by.as_str()), (BUCKET, group));
    match *source {
        GroupError::SettingsDiffer { differences } => (differences, text),
        other => panic!("not SettingsDiffer: {other:?}"),
    }
}
