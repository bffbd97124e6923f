//! A handler that records when each call began and how it ended (returned, failed, panicked,
//! or was cancelled mid-call), doing what the test's plan says for the key, revision and
//! attempt: for the tests of how a group treats a call (timeouts, panics, long calls, workers
//! at once) and of what `KvGroup::info` reports while calls run.

use super::*;

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    Ok,
    Err(String),
    Panicked,
    /// Dropped before it returned: the group cancelled it.
    Cancelled,
}

/// A call's begin, or its end.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub member: Arc<str>,
    pub key: String,
    pub revision: u64,
    /// 1 for the first call of this key and revision (counted by the handler).
    pub attempt: u32,
    pub at: Instant,
    /// `None` for a begin.
    pub ended: Option<Ending>,
    pub value: bytes::Bytes,
    pub value_size: usize,
}

impl Step {
    pub fn is_begin(&self) -> bool {
        self.ended.is_none()
    }

    pub fn of(&self, key: &str, revision: u64) -> bool {
        self.key == key && self.revision == revision
    }
}

/// What one call does: work for `work` (after waiting for the gate if `held`), then end so.
#[derive(Debug, Clone)]
pub(super) struct Act {
    pub work: Duration,
    pub held: bool,
    pub then: Then,
}

#[derive(Debug, Clone)]
pub(super) enum Then {
    Ok,
    Err(String),
    Panic(String),
}

impl Act {
    pub fn ok(work: Duration) -> Self {
        Self {
            work,
            held: false,
            then: Then::Ok,
        }
    }
}

type Plan = dyn Fn(&KvMessage, u32) -> Act + Send + Sync;

/// What the calls of a test share: the steps, the attempts counted, the plan and the gate.
#[derive(Clone)]
pub(super) struct Probe {
    pub steps: Recorder<Step>,
    /// `<member> started` per member start.
    pub events: Events,
    attempts: Arc<Mutex<HashMap<(String, u64), u32>>>,
    plan: Arc<Mutex<Arc<Plan>>>,
    /// Calls whose act is `held` wait while it is closed (`false`).
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Probe {
    /// Every call returns `Ok` at once, until [`plan`](Self::plan) says otherwise.
    pub fn new() -> Self {
        Self {
            steps: Recorder::default(),
            events: Events::default(),
            attempts: Arc::default(),
            plan: Arc::new(Mutex::new(Arc::new(|_: &KvMessage, _| {
                Act::ok(Duration::ZERO)
            }))),
            gate: Arc::new(tokio::sync::watch::Sender::new(true)),
        }
    }

    pub fn plan(&self, plan: impl Fn(&KvMessage, u32) -> Act + Send + Sync + 'static) {
        *locked(&self.plan) = Arc::new(plan);
    }

    /// Held calls starting from now wait until [`open`](Self::open).
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// The ends so far.
    pub fn ends(&self) -> Vec<Step> {
        self.steps
            .snapshot()
            .into_iter()
            .filter(|step| !step.is_begin())
            .collect()
    }

    /// Waits until a step matching `found` is recorded; returns it.
    pub async fn wait_for_step(
        &self,
        what: &str,
        found: impl Fn(&Step) -> bool,
    ) -> anyhow::Result<Step> {
        let steps = self
            .steps
            .wait_for(what, |steps| steps.iter().any(&found))
            .await?;
        steps
            .into_iter()
            .find(|step| found(step))
            .context("the step waited for")
    }

    /// Waits until each of `changes` has a call that returned `Ok`.
    pub async fn wait_for_ok(&self, changes: &BTreeSet<(String, u64)>) -> anyhow::Result<()> {
        let what = format!("{} changes handled", changes.len());
        self.steps
            .wait_for(&what, |steps| {
                let handled: BTreeSet<(String, u64)> = steps
                    .iter()
                    .filter(|step| step.ended == Some(Ending::Ok))
                    .map(|step| (step.key.clone(), step.revision))
                    .collect();
                handled.is_superset(changes)
            })
            .await
            .map(drop)
    }
}

/// The probe as one member's handler sees it.
#[derive(Clone)]
pub(super) struct ProbeMember {
    pub name: Arc<str>,
    pub probe: Probe,
}

/// Records the end of a call when dropped: as `Cancelled` unless the call said otherwise.
struct EndGuard {
    member: Arc<str>,
    steps: Recorder<Step>,
    begin: Step,
    ended: Ending,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.steps.push(Step {
            member: Arc::clone(&self.member),
            at: Instant::now(),
            ended: Some(self.ended.clone()),
            ..self.begin.clone()
        });
    }
}

pub(super) async fn probe_handler(
    message: KvMessage,
    State(member): State<ProbeMember>,
) -> anyhow::Result<()> {
    let probe = &member.probe;
    let attempt = {
        let mut attempts = locked(&probe.attempts);
        let attempt = attempts
            .entry((message.key().to_owned(), message.revision()))
            .or_default();
        *attempt += 1;
        *attempt
    };
    let plan = Arc::clone(&locked(&probe.plan));
    let act = plan(&message, attempt);
    let begin = Step {
        member: Arc::clone(&member.name),
        key: message.key().to_owned(),
        revision: message.revision(),
        attempt,
        at: Instant::now(),
        ended: None,
        value: message.value().clone(),
        value_size: message.value_size(),
    };
    probe.steps.push(begin.clone());
    let mut guard = EndGuard {
        member: Arc::clone(&member.name),
        steps: probe.steps.clone(),
        begin,
        ended: Ending::Cancelled,
    };
    if act.held {
        let mut gate = probe.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    tokio::time::sleep(act.work).await;
    match act.then {
        Then::Ok => {
            guard.ended = Ending::Ok;
            Ok(())
        }
        Then::Err(error) => {
            guard.ended = Ending::Err(error.clone());
            Err(anyhow::anyhow!(error))
        }
        Then::Panic(message) => {
            guard.ended = Ending::Panicked;
            panic!("{message}")
        }
    }
}

/// A member app with the subscriber `bill` running [`probe_handler`] on `pattern`, which records
/// `<name> started` once it has joined.
pub(super) fn probe_app(
    server: &NatsServer,
    name: &str,
    probe: &Probe,
    pattern: &'static str,
    watch: KvWatch,
) -> App {
    App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .with_state(ProbeMember {
            name: Arc::from(name),
            probe: probe.clone(),
        })
        .wait_for_catch_up(EVENT_TIMEOUT)
        .subscriber("bill", pattern, watch, probe_handler)
        .hook(HookStage::AfterStartup, "started", probe_started)
}

async fn probe_started(State(member): State<ProbeMember>) {
    member.probe.events.push(format!("{} started", member.name));
}

/// Runs `app` (a [`probe_app`] of member `name`) and waits until it has joined.
pub(super) async fn start_probe(app: App, probe: &Probe, name: &str) -> anyhow::Result<RunningApp> {
    let running = RunningApp::spawn(app);
    probe
        .events
        .wait_for_event(&format!("{name} started"))
        .await?;
    Ok(running)
}

/// Starts member `name` (a [`probe_app`] on `server`) and waits until it has joined.
pub(super) async fn start_probe_member(
    server: &NatsServer,
    name: &str,
    probe: &Probe,
    pattern: &'static str,
    watch: KvWatch,
) -> anyhow::Result<RunningApp> {
    start_probe(probe_app(server, name, probe, pattern, watch), probe, name).await
}

/// The most calls that ran at once, from the steps.
pub(super) fn most_at_once(steps: &[Step]) -> usize {
    let mut edges: Vec<(Instant, i32)> = steps
        .iter()
        .map(|step| (step.at, if step.is_begin() { 1 } else { -1 }))
        .collect();
    // At one instant, ends before begins: touching calls did not overlap.
    edges.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, edge) in edges {
        running += edge;
        most = most.max(running);
    }
    usize::try_from(most).unwrap_or_default()
}

/// Whether each partition is pinned to the member it is assigned to, as the members report.
pub(super) fn pinned_as_assigned(info: &GroupInfo) -> bool {
    info.partitions.iter().all(|partition| {
        let assigned = info
            .members
            .iter()
            .find(|member| member.partitions.contains(&partition.partition))
            .map(|member| member.id.as_str());
        partition.pinned_to.is_some() && partition.pinned_to.as_deref() == assigned
    })
}

/// Once the members are balanced, waits until every partition has been handed to the member
/// it is assigned to: a member that loses a partition before anything was delivered to it
/// there may still handle a change that reaches it before its pull ends, and the pin is known
/// only from a delivery. So a change is written to each partition (keys `orders.warm<i>`) until each
/// partition is pinned to its assigned member with nothing pending; returns that info.
pub(super) async fn hand_over_done(
    broker: &NatsBroker,
    store: &KeyValue,
    group: &str,
    members: usize,
) -> anyhow::Result<GroupInfo> {
    info_until(broker, group, "balanced", |info| info.is_balanced(members)).await?;
    let group = broker.kv_group(BUCKET, group).await?;
    let (group, store) = (&group, store);
    // The last revision of the last round written, and when: another round once it is
    // settled and the heartbeats (every fifth of the session timeout, at most 400 ms here)
    // have had time to report the pins.
    let last_round: Mutex<(u64, Option<Instant>)> = Mutex::new((0, None));
    let last_round = &last_round;
    faststream_testing::wait_for(
        "each partition pinned to its member",
        EVENT_TIMEOUT,
        || async move {
            let info = group.info().await?;
            let (last, at) = *locked(last_round);
            let round_settled = settled(&info)
                && info
                    .partitions
                    .iter()
                    .any(|partition| partition.last_settled_revision >= last);
            if round_settled && at.is_some() && pinned_as_assigned(&info) {
                return anyhow::Ok((Some(info), String::new()));
            }
            let due = at.is_none_or(|at| at.elapsed() >= Duration::from_millis(500));
            if round_settled && due {
                for i in 0..info.partitions.len() * 4 {
                    let revision = store.put(&format!("orders.warm{i}"), "warm".into()).await?;
                    *locked(last_round) = (revision, Some(Instant::now()));
                }
            }
            anyhow::Ok((None, format!("{info:#?}")))
        },
    )
    .await
}
