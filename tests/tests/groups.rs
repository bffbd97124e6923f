//! Consumer groups against a real nats-server: several members, each an `App` with its own
//! connection, in one process. Handlers record when each call began and ended, on which member,
//! for which key, revision and attempt; the tests assert the group's promises from those
//! records: each change handled once, by one member; a key's calls never overlap and follow
//! revision order; retries, dead letters and replays; hand-over on stop and rebalance on join;
//! progress kept on the server; settings fixed at creation; and the cleanup of a group.
//!
//! No sleep is a proof: every wait is for an event (a record, a dead letter, an assignment),
//! bounded by `EVENT_TIMEOUT`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use common::{
    bucket_with_history, connected_broker, jetstream, on_each_server, on_each_server_since,
    startup_error, Recorder, RunningApp, EVENT_TIMEOUT,
};
use faststream_core::error::GroupError;
use faststream_core::kv::group::GroupInfo;
use faststream_core::kv::GroupSettings;
use faststream_core::{
    App, Error, HookStage, KeyValue, KvMessage, KvWatch, NatsBroker, Operation, State,
};
use faststream_testing::NatsServer;

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
    /// A line per call and per member start, for `wait_for`.
    events: Recorder,
    log: Arc<Mutex<Vec<Call>>>,
    attempts: Arc<Mutex<HashMap<(String, u64), u32>>>,
    failure: Arc<Mutex<Option<Arc<Failure>>>>,
    /// Calls wait while it is closed (`false`).
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            events: Recorder::default(),
            log: Arc::default(),
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
        locked(&self.log).clone()
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
        self.events
            .wait_for(what, |_| done(&locked(&self.log)))
            .await?;
        Ok(self.all())
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
    let line = format!(
        "{} {}@{} attempt {attempt}: {}",
        member.name,
        message.key(),
        message.revision(),
        error.as_deref().unwrap_or("ok")
    );
    locked(&calls.log).push(Call {
        member: Arc::clone(&member.name),
        message,
        attempt,
        begin,
        end,
        error: error.clone(),
    });
    calls.events.push(line);
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
    App::new(NatsBroker::new(server.url()))
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

/// Polls `probe` (every 50 ms) until it gives `Some`, up to `EVENT_TIMEOUT`.
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {EVENT_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let info = group.info().await?;
        if done(&info) {
            return Ok(info);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {EVENT_TIMEOUT:?} waiting for {what}; last info: {info:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `members` members, every partition assigned to exactly one, within one of each other.
fn balanced(info: &GroupInfo, members: usize, partitions: u16) -> bool {
    if info.members.len() != members {
        return false;
    }
    let mut all: Vec<u16> = info
        .members
        .iter()
        .flat_map(|member| member.partitions.iter().copied())
        .collect();
    all.sort_unstable();
    let sizes: Vec<usize> = info.members.iter().map(|m| m.partitions.len()).collect();
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    all == (0..partitions).collect::<Vec<_>>()
        && max.zip(min).is_some_and(|(max, min)| max - min <= 1)
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

// ---------------------------------------------------------------------------------------------

/// One member on its own (the smoke test): existing keys, then later changes, all handled.
#[tokio::test]
async fn one_member_handles_everything() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        let mut expected = BTreeSet::new();
        for i in 0..20 {
            let key = format!("orders.{i}");
            let revision = store.put(&key, "x".into()).await?;
            expected.insert((key, revision));
        }
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("billing", 4)).await?;
        calls
            .wait_for_handled("the 20 existing keys", &expected)
            .await?;
        for i in 20..40 {
            let key = format!("orders.{i}");
            let revision = store.put(&key, "y".into()).await?;
            expected.insert((key, revision));
        }
        calls
            .wait_for_handled("the 20 later keys", &expected)
            .await?;
        let info = info_until(
            &broker,
            "billing",
            "one member with every partition",
            |info| balanced(info, 1, 4) && settled(info),
        )
        .await?;
        assert_eq!(info.pattern, PATTERN);
        member.stop().await??;
        assert_once_and_in_order(&calls.all(), &expected);
        Ok(())
    })
    .await
}

/// Three members under a writer: every change handled once, by one member; a key's calls never
/// overlap and follow revision order; every member does some; the assignment is balanced.
#[tokio::test]
async fn members_share_the_changes_once_and_in_order() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 16;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let watch = group_watch("billing", PARTITIONS);
        let m1 = start_member(&server, "m1", &calls, watch.clone()).await?;
        let m2 = start_member(&server, "m2", &calls, watch.clone()).await?;
        // The third joins while the first half is written; the second half comes after.
        let first = tokio::spawn(write(store.clone(), 0..150, 30, WORK));
        let m3 = start_member(&server, "m3", &calls, watch.clone()).await?;
        let mut written = first.await??;
        written.extend(write(store.clone(), 150..300, 30, WORK).await?);
        let expected = changes(&written);
        calls.wait_for_handled("the 300 changes", &expected).await?;
        let info = info_until(&broker, "billing", "3 members, balanced", |info| {
            balanced(info, 3, PARTITIONS) && settled(info)
        })
        .await?;
        let sizes: Vec<usize> = info.members.iter().map(|m| m.partitions.len()).collect();
        println!("partitions per member: {sizes:?}");
        for running in [m1, m2, m3] {
            running.stop().await??;
        }
        let calls = calls.all();
        assert_once_and_in_order(&calls, &expected);
        for member in ["m1", "m2", "m3"] {
            let count = calls.iter().filter(|c| &*c.member == member).count();
            println!("{member} handled {count}");
            assert!(count > 0, "{member} handled nothing");
        }
        Ok(())
    })
    .await
}

/// Retries with backoff, then the dead letter; a key's later revision waits for the failing
/// one; other partitions go on; a replay is handled and removes the dead letter.
#[tokio::test]
async fn retries_then_gives_up_and_replays() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 4;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        calls.fail_with(|message, attempt| match message.key() {
            "orders.bad" => Some(format!("bad order at revision {}", message.revision())),
            "orders.flaky" if attempt <= 2 => Some(format!("flaky, attempt {attempt}")),
            _ => None,
        });
        // A backoff long enough that the failing key is still being retried while the other
        // keys are written and handled.
        let watch = KvWatch::new(BUCKET).group(
            settings("billing", PARTITIONS)
                .max_attempts(3)
                .backoff([Duration::from_millis(250)]),
        );
        let member = start_member(&server, "m1", &calls, watch).await?;
        let bad1 = store.put("orders.bad", "1".into()).await?;
        let bad2 = store.put("orders.bad", "2".into()).await?;
        let flaky = store.put("orders.flaky", "f".into()).await?;
        calls
            .wait_for("the first failure of orders.bad", |calls| {
                calls.iter().any(|c| c.key() == "orders.bad" && !c.ok())
            })
            .await?;
        let others = write(store.clone(), 0..12, 12, Duration::ZERO).await?;
        let mut expected = changes(&others);
        expected.insert(("orders.flaky".to_owned(), flaky));
        calls.wait_for_handled("the other keys", &expected).await?;
        calls
            .wait_for("the 3 attempts of both revisions of orders.bad", |calls| {
                calls.iter().filter(|c| c.key() == "orders.bad").count() >= 6
            })
            .await?;
        let group = broker.kv_group(BUCKET, "billing").await?;
        let group_ref = &group;
        let letters = poll("2 dead letters", move || {
            let group = group_ref;
            async move {
                let letters = group.dead_letters().await?;
                Ok((letters.len() >= 2).then_some(letters))
            }
        })
        .await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        let all = calls.all();
        let attempts = |revision: u64| -> Vec<&Call> {
            all.iter().filter(|c| c.revision() == revision).collect()
        };

        // The flaky key: two failures, handled on the third attempt.
        let flaky_calls = attempts(flaky);
        assert_eq!(
            flaky_calls
                .iter()
                .map(|c| (c.attempt, c.ok()))
                .collect::<Vec<_>>(),
            [(1, false), (2, false), (3, true)],
            "{flaky_calls:#?}"
        );
        for pair in flaky_calls.windows(2) {
            let gap = pair[1].begin - pair[0].end;
            assert!(gap >= Duration::from_millis(200), "retried after {gap:?}");
        }
        // The failing key: three attempts per revision, the second revision's only after the
        // first was given up.
        let (bad1_calls, bad2_calls) = (attempts(bad1), attempts(bad2));
        for calls in [&bad1_calls, &bad2_calls] {
            assert_eq!(
                calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
                [1, 2, 3],
                "{calls:#?}"
            );
            assert!(calls.iter().all(|c| !c.ok()));
        }
        assert!(
            bad1_calls[2].end <= bad2_calls[0].begin,
            "revision {bad2} tried before {bad1} was given up"
        );
        // The dead letters.
        assert_eq!(letters.len(), 2, "{letters:#?}");
        for (letter, (revision, value, call)) in letters
            .iter()
            .zip([(bad1, "1", &bad1_calls[0]), (bad2, "2", &bad2_calls[0])])
        {
            assert_eq!(letter.key, "orders.bad");
            assert_eq!(letter.revision, revision);
            assert_eq!(letter.attempts, 3);
            assert_eq!(letter.operation, Operation::Put);
            assert_eq!(&letter.value[..], value.as_bytes());
            assert_eq!(letter.created, call.message.created());
            assert!(
                letter
                    .error
                    .contains(&format!("bad order at revision {revision}")),
                "{}",
                letter.error
            );
            assert!(!letter.member.is_empty());
        }
        assert_eq!(group.info().await?.dead_letters, 2);
        // The other keys: those of other partitions were handled while orders.bad was being
        // retried; those of its partition waited until it was given up.
        let partitions = partitions_of(
            &server,
            "billing",
            others
                .iter()
                .map(|w| (w.key.clone(), w.revision))
                .chain([("orders.bad".to_owned(), bad1)]),
        )
        .await?;
        let bad_partition = partitions["orders.bad"];
        let given_up = bad2_calls[2].end;
        let (mut flowed, mut waited) = (0, 0);
        for change in &others {
            let call = all
                .iter()
                .find(|c| c.ok() && c.key() == change.key && c.revision() == change.revision)
                .context("handled")?;
            if partitions[&change.key] == bad_partition {
                waited += 1;
                assert!(
                    call.begin >= given_up,
                    "{} (partition {bad_partition}) overtook orders.bad",
                    change.key
                );
            } else {
                flowed += 1;
                assert!(
                    call.end <= bad2_calls[2].begin,
                    "{} (partition {}) waited for orders.bad",
                    change.key,
                    partitions[&change.key]
                );
            }
        }
        println!("orders.bad in partition {bad_partition}: {flowed} other changes flowed, {waited} waited");
        assert!(flowed > 0, "no key in another partition: {partitions:?}");
        assert_per_key_order(&all);

        // Replays: the older letter's key has changed since, so it is refused; the newer one
        // is written again and handled now that the handler succeeds.
        calls.heal();
        let refused = group.replay(letters[0].sequence).await;
        assert!(
            matches!(refused, Err(Error::Group { .. })),
            "replaying over a newer revision: {refused:?}"
        );
        let replayed = group.replay(letters[1].sequence).await?;
        assert!(replayed > bad2, "replay revision {replayed}");
        let replayed_change = BTreeSet::from([("orders.bad".to_owned(), replayed)]);
        calls
            .wait_for_handled("the replayed change", &replayed_change)
            .await?;
        let remaining = group.dead_letters().await?;
        assert_eq!(
            remaining.iter().map(|l| l.sequence).collect::<Vec<_>>(),
            [letters[0].sequence]
        );
        assert_eq!(group.info().await?.dead_letters, 1);
        group.discard(letters[0].sequence).await?;
        assert!(group.dead_letters().await?.is_empty());
        assert_eq!(group.info().await?.dead_letters, 0);
        member.stop().await??;
        let replay_calls = calls
            .all()
            .into_iter()
            .filter(|c| c.revision() == replayed)
            .collect::<Vec<_>>();
        assert_eq!(replay_calls.len(), 1, "{replay_calls:#?}");
        assert_eq!(&replay_calls[0].message.value()[..], b"2");
        Ok(())
    })
    .await
}

/// A member stopped under a writer hands its partitions over at once: nothing lost, no
/// overlap, the survivor takes every partition well before the session timeout. Three rounds
/// (a member joins, then stops), as each stop lands at a different point of the calls.
#[tokio::test]
async fn graceful_stop_hands_over_at_once() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 16;
        const ROUNDS: usize = 3;
        const PER_ROUND: usize = 400;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        // One attempt: a change the hand-over delivered twice (handed back, or redelivered
        // after the ack wait) would be given up without a call.
        let watch = KvWatch::new(BUCKET).group(settings("billing", PARTITIONS).max_attempts(1));
        let staying = start_member(&server, "staying", &calls, watch.clone()).await?;
        let mut written = Vec::new();
        let mut slowest = Duration::ZERO;
        for round in 0..ROUNDS {
            let name = format!("leaving{round}");
            let leaving = start_member(&server, &name, &calls, watch.clone()).await?;
            info_until(&broker, "billing", "2 members, balanced", |info| {
                balanced(info, 2, PARTITIONS)
            })
            .await?;
            let base = round * PER_ROUND;
            let before = tokio::spawn(write(store.clone(), base..base + 300, 30, Duration::ZERO));
            let start = calls.all().len();
            calls
                .wait_for("40 changes handled", |calls| calls.len() >= start + 40)
                .await?;
            // Calls wait while the rest is written, so that changes are waiting in every
            // partition with keys when the member stops (the survivor's first call of each
            // measures the hand-over); then they flow again, and the member stops amid calls
            // and acknowledgements, while more are written.
            calls.hold();
            let mut round_written = before.await??;
            let held = calls.all().len();
            calls.open();
            calls
                .wait_for("20 more changes handled", |calls| calls.len() >= held + 20)
                .await?;
            let stop_requested = Instant::now();
            let stopping = tokio::spawn(leaving.stop());
            let after = tokio::spawn(write(
                store.clone(),
                base + 300..base + PER_ROUND,
                30,
                Duration::ZERO,
            ));
            let info = info_until(
                &broker,
                "billing",
                "the survivor owns every partition",
                |info| balanced(info, 1, PARTITIONS),
            )
            .await?;
            let owned_after = stop_requested.elapsed();
            stopping.await???;
            let stopped_after = stop_requested.elapsed();
            round_written.extend(after.await??);
            written.extend(round_written.iter().cloned());
            calls
                .wait_for_handled("the changes so far", &changes(&written))
                .await?;
            info_until(&broker, "billing", "nothing pending", settled).await?;
            assert_eq!(info.members.len(), 1);

            let all = calls.all();
            let partitions = partitions_of(&server, "billing", changes(&round_written)).await?;
            let theirs: BTreeSet<u16> = all
                .iter()
                .filter(|c| *c.member == *name)
                .map(|c| partitions[c.key()])
                .collect();
            assert!(!theirs.is_empty(), "{name} handled nothing");
            let put_at: HashMap<(String, u64), Instant> = round_written
                .iter()
                .map(|w| ((w.key.clone(), w.revision), w.at))
                .collect();
            let last_leaving = all
                .iter()
                .filter(|c| *c.member == *name)
                .map(|c| c.end)
                .max()
                .context("leaving calls")?;
            // For each of the leaving member's partitions, the survivor's first call after the
            // stop: how long after the stop it began, and whether its change was already
            // waiting then (else the time is the change's own latency, from its put).
            let mut survivor: Vec<&Call> = all
                .iter()
                .filter(|c| &*c.member == "staying" && c.begin > stop_requested)
                .collect();
            survivor.sort_by_key(|c| c.begin);
            let mut waiting: BTreeMap<u16, Duration> = BTreeMap::new();
            let mut latency: BTreeMap<u16, Duration> = BTreeMap::new();
            for call in survivor {
                let partition = partitions[call.key()];
                if !theirs.contains(&partition)
                    || waiting.contains_key(&partition)
                    || latency.contains_key(&partition)
                {
                    continue;
                }
                let put = put_at[&call.change()];
                if put < stop_requested {
                    waiting.insert(partition, call.begin - stop_requested);
                } else {
                    latency.insert(partition, call.begin - put);
                }
            }
            let handed_over = waiting.values().max().copied().unwrap_or_default();
            println!(
                "hand-over {round}: {} of the leaving member's {} partitions had changes \
                 waiting at the stop; the survivor began the first of each within {} (first \
                 after {}); the leaving member's last call ended {} after the stop; info \
                 showed the survivor owning all {PARTITIONS} after {} (its next heartbeat); \
                 stop() returned after {}",
                waiting.len(),
                theirs.len(),
                millis(handed_over),
                millis(waiting.values().min().copied().unwrap_or_default()),
                millis(last_leaving.saturating_duration_since(stop_requested)),
                millis(owned_after),
                millis(stopped_after)
            );
            println!(
                "hand-over {round}: waiting at the stop, taken over after {waiting:?}; put \
                 after the stop, handled after {latency:?}"
            );
            let taken: BTreeSet<u16> = waiting.keys().chain(latency.keys()).copied().collect();
            assert_eq!(
                taken, theirs,
                "partitions the survivor never handled after the stop"
            );
            assert!(!waiting.is_empty(), "no change was waiting at the stop");
            for (partition, took) in waiting.iter().chain(&latency) {
                assert!(
                    *took < SESSION / 2,
                    "round {round}: partition {partition} waited {took:?}: about the session \
                     timeout ({SESSION:?}), not a hand-over"
                );
            }
            assert!(
                owned_after < SESSION,
                "owned every partition after {owned_after:?}"
            );
            slowest = slowest.max(handed_over);
        }
        let dead = broker
            .kv_group(BUCKET, "billing")
            .await?
            .dead_letters()
            .await?;
        assert!(dead.is_empty(), "given up: {dead:#?}");
        staying.stop().await??;
        assert_once_and_in_order(&calls.all(), &changes(&written));
        println!(
            "hand-over: slowest over {ROUNDS} rounds {}",
            millis(slowest)
        );
        Ok(())
    })
    .await
}

/// A second member joining under a writer gets half the partitions, within about a heartbeat
/// interval, and the move loses or repeats nothing.
#[tokio::test]
async fn joining_member_gets_half_the_partitions() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 16;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        // One attempt: a change the hand-over delivered twice (handed back, or redelivered
        // after the ack wait) would be given up without a call.
        let watch = KvWatch::new(BUCKET).group(settings("billing", PARTITIONS).max_attempts(1));
        let first = start_member(&server, "first", &calls, watch.clone()).await?;
        let writer = tokio::spawn(write(store.clone(), 0..300, 30, Duration::from_millis(2)));
        calls
            .wait_for("40 changes handled", |calls| calls.len() >= 40)
            .await?;
        let join_requested = Instant::now();
        let second = RunningApp::spawn(member_app(&server, "second", &calls, watch.clone()));
        calls.events.wait_for_event("second started").await?;
        let joined_after = join_requested.elapsed();
        let info = info_until(&broker, "billing", "8 partitions each", |info| {
            balanced(info, 2, PARTITIONS)
        })
        .await?;
        let balanced_after = join_requested.elapsed();
        let written = writer.await??;
        let expected = changes(&written);
        calls
            .wait_for_handled("the 300 changes", &expected)
            .await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        let dead = broker.kv_group(BUCKET, "billing").await?.dead_letters().await?;
        assert!(dead.is_empty(), "given up: {dead:#?}");
        for running in [first, second] {
            running.stop().await??;
        }
        let first_call = calls
            .of("second")
            .iter()
            .map(|c| c.begin - join_requested)
            .min()
            .context("the second member handled nothing")?;
        let heartbeat = SESSION / 5;
        println!(
            "rebalance on join: joined after {}, first change handled after {}, info balanced \
             (8/8) after {} (heartbeat interval {})",
            millis(joined_after),
            millis(first_call),
            millis(balanced_after),
            millis(heartbeat)
        );
        assert_eq!(
            info.members
                .iter()
                .map(|m| m.partitions.len())
                .collect::<Vec<_>>(),
            [8, 8]
        );
        assert!(
            balanced_after - joined_after < heartbeat * 3,
            "balanced {balanced_after:?} after the join was requested, joined after {joined_after:?}"
        );
        let all = calls.all();
        assert_once_and_in_order(&all, &expected);
        // No change waited for the ack wait (a session timeout) during the move.
        let put_at: HashMap<(String, u64), Instant> = written
            .iter()
            .map(|w| ((w.key.clone(), w.revision), w.at))
            .collect();
        let slowest = all
            .iter()
            .map(|c| c.begin.saturating_duration_since(put_at[&c.change()]))
            .max()
            .unwrap_or_default();
        println!("rebalance on join: slowest change handled {} after its put", millis(slowest));
        assert!(slowest < SESSION / 2, "a change waited {slowest:?}");
        Ok(())
    })
    .await
}

/// Progress is kept on the server: a member started later handles exactly what came after
/// the last one stopped.
#[tokio::test]
async fn a_later_member_goes_on_where_the_group_stopped() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let watch = group_watch("billing", 4);
        let first = start_member(&server, "first", &calls, watch.clone()).await?;
        let before = changes(&write(store.clone(), 0..50, 10, Duration::ZERO).await?);
        calls.wait_for_handled("the first 50", &before).await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        first.stop().await??;

        let mut after = changes(&write(store.clone(), 50..69, 10, Duration::ZERO).await?);
        store.delete("orders.3").await?;
        let deleted = last_revision(&store, "orders.3").await?;
        after.insert(("orders.3".to_owned(), deleted));
        assert_eq!(after.len(), 20);
        let second = start_member(&server, "second", &calls, watch.clone()).await?;
        calls
            .wait_for_handled("the 20 later changes", &after)
            .await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        second.stop().await??;

        let all = calls.all();
        assert_once_and_in_order(&all, &before.union(&after).cloned().collect());
        let second_handled: BTreeSet<_> = calls
            .of("second")
            .iter()
            .filter(|c| c.ok())
            .map(Call::change)
            .collect();
        assert_eq!(second_handled, after);
        let delete = all
            .iter()
            .find(|c| c.revision() == deleted)
            .context("the delete")?;
        assert_eq!(delete.message.operation(), Operation::Delete);
        Ok(())
    })
    .await
}

/// Where a group starts is fixed at creation: a member asking for another start or partition
/// count is refused, naming the setting. `updates_only` handles only later changes; the
/// default, the latest value of each existing key once; `include_history`, every revision.
#[tokio::test]
async fn the_start_is_recorded_with_the_group() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let existing = write(store.clone(), 0..15, 5, Duration::ZERO).await?;
        let latest: BTreeSet<(String, u64)> = existing[10..]
            .iter()
            .map(|w| (w.key.clone(), w.revision))
            .collect();

        // The default: the latest value of each key, once.
        let latest_calls = Calls::default();
        let latest_member =
            start_member(&server, "latest", &latest_calls, group_watch("latest", 4)).await?;
        latest_calls
            .wait_for_handled("the latest value of each key", &latest)
            .await?;
        info_until(&broker, "latest", "nothing pending", settled).await?;
        assert_once_and_in_order(&latest_calls.all(), &latest);

        // Other settings for the same group are refused, naming the setting.
        let refused = Calls::default();
        let differs = |error: Error, setting: &str, values: [&str; 2]| {
            let text = error.to_string();
            let (bucket, group, source) = match error {
                Error::Group {
                    bucket,
                    group,
                    source,
                } => (bucket, group, source),
                other => panic!("not Error::Group: {other:?}"),
            };
            assert_eq!((bucket.as_str(), group.as_str()), (BUCKET, "latest"));
            let differences = match *source {
                GroupError::SettingsDiffer { differences } => differences,
                other => panic!("not SettingsDiffer: {other:?}"),
            };
            assert_eq!(differences.len(), 1, "{differences:?}");
            assert!(differences[0].starts_with(setting), "{differences:?}");
            for value in values {
                assert!(text.contains(value), "`{value}` not in: {text}");
            }
            println!("{text}");
        };
        let history = startup_error(member_app(
            &server,
            "history",
            &refused,
            group_watch("latest", 4).include_history(true),
        ))
        .await?;
        differs(
            history,
            "start",
            ["latest value of each key", "include_history"],
        );
        let partitions = startup_error(member_app(
            &server,
            "partitions",
            &refused,
            group_watch("latest", 6),
        ))
        .await?;
        differs(partitions, "partitions", ["`4`", "`6`"]);
        assert!(refused.all().is_empty(), "{:#?}", refused.all());

        // A new group with updates_only: only what comes after it started.
        let fresh_calls = Calls::default();
        let fresh = start_member(
            &server,
            "fresh",
            &fresh_calls,
            group_watch("fresh", 4).updates_only(true),
        )
        .await?;
        // And one with include_history: every revision.
        let all_calls = Calls::default();
        let everything = start_member(
            &server,
            "everything",
            &all_calls,
            group_watch("everything", 4).include_history(true),
        )
        .await?;
        let later = write(store.clone(), 15..18, 5, Duration::ZERO).await?;
        let later = changes(&later);
        fresh_calls
            .wait_for_handled("the changes after the start", &later)
            .await?;
        let every: BTreeSet<_> = changes(&existing).union(&later).cloned().collect();
        all_calls.wait_for_handled("every revision", &every).await?;
        latest_calls
            .wait_for_handled("the later changes too", &later)
            .await?;
        for group in ["fresh", "everything", "latest"] {
            info_until(&broker, group, "nothing pending", settled).await?;
        }
        for running in [latest_member, fresh, everything] {
            running.stop().await??;
        }
        assert_once_and_in_order(&fresh_calls.all(), &later);
        assert_once_and_in_order(&all_calls.all(), &every);
        assert_once_and_in_order(
            &latest_calls.all(),
            &latest.union(&later).cloned().collect(),
        );
        Ok(())
    })
    .await
}

/// What a handler is given in a group: the bucket's revision, the key, the operation and the
/// entry's creation time; deletes arrive unless the member ignores them.
#[tokio::test]
async fn messages_carry_the_bucket_entry() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let billing = start_member(&server, "billing", &calls, group_watch("billing", 4)).await?;
        let audit = start_member(
            &server,
            "audit",
            &calls,
            group_watch("audit", 4).ignore_deletes(true),
        )
        .await?;
        let r1 = store.put("orders.1", "a".into()).await?;
        let r2 = store.put("orders.2", "b".into()).await?;
        let r3 = store.put("orders.1", "c".into()).await?;
        store.delete("orders.2").await?;
        let r4 = last_revision(&store, "orders.2").await?;
        let r5 = store.put("orders.2", "d".into()).await?;
        let puts = BTreeSet::from([
            ("orders.1".to_owned(), r1),
            ("orders.2".to_owned(), r2),
            ("orders.1".to_owned(), r3),
            ("orders.2".to_owned(), r5),
        ]);
        let mut every = puts.clone();
        every.insert(("orders.2".to_owned(), r4));
        calls
            .wait_for("both groups' changes", |calls| {
                let of = |member: &str| -> BTreeSet<_> {
                    calls
                        .iter()
                        .filter(|c| &*c.member == member && c.ok())
                        .map(Call::change)
                        .collect()
                };
                of("billing").is_superset(&every) && of("audit").is_superset(&puts)
            })
            .await?;
        for group in ["billing", "audit"] {
            info_until(&broker, group, "nothing pending", settled).await?;
        }
        billing.stop().await??;
        audit.stop().await??;

        assert_once_and_in_order(&calls.of("billing"), &every);
        // The delete came before r5 in its partition: it was settled without a call.
        assert_once_and_in_order(&calls.of("audit"), &puts);
        let mut entries = history(&store, "orders.1").await?;
        entries.extend(history(&store, "orders.2").await?);
        assert_eq!(entries.len(), 5);
        for call in calls.all() {
            let message = &call.message;
            let entry = &entries[&message.revision()];
            assert_eq!(message.bucket(), BUCKET);
            assert_eq!(message.key(), entry.key);
            assert_eq!(message.revision(), entry.revision);
            assert_eq!(message.value(), &entry.value);
            assert_eq!(
                message.created(),
                SystemTime::from(entry.created),
                "{}@{}",
                message.key(),
                message.revision()
            );
            let operation = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => Operation::Put,
                async_nats::jetstream::kv::Operation::Delete => Operation::Delete,
                async_nats::jetstream::kv::Operation::Purge => Operation::Purge,
            };
            assert_eq!(message.operation(), operation);
        }
        let delete = calls
            .of("billing")
            .into_iter()
            .find(|c| c.revision() == r4)
            .context("the delete")?;
        assert_eq!(delete.message.operation(), Operation::Delete);
        assert!(delete.message.value().is_empty());
        Ok(())
    })
    .await
}

/// `KvGroup::delete` removes everything the group made on the server, and nothing else.
#[tokio::test]
async fn delete_removes_the_group_streams() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("billing", 4)).await?;
        let revision = store.put("orders.1", "x".into()).await?;
        calls
            .wait_for_handled(
                "the change",
                &BTreeSet::from([("orders.1".to_owned(), revision)]),
            )
            .await?;
        member.stop().await??;

        let js = jetstream(&server).await?;
        let streams = [
            format!("KVG_{BUCKET}_billing"),
            format!("KV_KVG_{BUCKET}_billing_members"),
            format!("KVG_{BUCKET}_billing_dead"),
        ];
        for stream in &streams {
            js.get_stream(stream)
                .await
                .with_context(|| format!("{stream} before the delete"))?;
        }
        broker.kv_group(BUCKET, "billing").await?.delete().await?;
        for stream in &streams {
            let gone = js.get_stream(stream).await;
            assert!(gone.is_err(), "{stream} is still there");
        }
        js.get_stream(format!("KV_{BUCKET}"))
            .await
            .context("the bucket went too")?;
        let missing = broker.kv_group(BUCKET, "billing").await;
        match missing {
            Err(Error::Group { source, .. }) => {
                assert!(matches!(*source, GroupError::NotFound { .. }), "{source:?}");
            }
            other => panic!("the deleted group opened: {other:?}"),
        }
        Ok(())
    })
    .await
}

/// Before 2.11 a group cannot work (no pinned priority groups): start-up fails naming the
/// version, before any handler runs, and nothing of the group is made.
#[tokio::test]
async fn servers_before_2_11_refuse_groups() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        if server.binary().version_at_least(2, 11) {
            return Ok(());
        }
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        store.put("orders.1", "x".into()).await?;
        let calls = Calls::default();
        // A plain subscriber beside the member: it must not start either.
        let app = member_app(&server, "m1", &calls, group_watch("billing", 4)).subscriber(
            "plain",
            PATTERN,
            KvWatch::new(BUCKET),
            handle,
        );
        let error = startup_error(app).await?;
        let text = error.to_string();
        match &error {
            Error::ServerTooOld {
                feature,
                required,
                server,
            } => {
                assert!(feature.contains("KvWatch::group"), "{feature}");
                assert_eq!(*required, "2.11");
                assert!(server.starts_with("2.9"), "{server}");
            }
            other => panic!("not ServerTooOld: {other:?}"),
        }
        assert!(text.contains("2.11") && text.contains("2.9"), "{text}");
        assert!(calls.all().is_empty(), "a handler ran: {:#?}", calls.all());
        assert!(
            !calls.events.events().iter().any(|e| e == "m1 started"),
            "start-up went on"
        );
        let js = jetstream(&server).await?;
        for stream in [
            format!("KVG_{BUCKET}_billing"),
            format!("KV_KVG_{BUCKET}_billing_members"),
            format!("KVG_{BUCKET}_billing_dead"),
        ] {
            assert!(js.get_stream(&stream).await.is_err(), "{stream} was made");
        }
        Ok(())
    })
    .await
}
