//! Attempts are calls: a change handed back without a call is still called `max_attempts`
//! times before it is given up, although every hand-back raised the server's delivery count.
//!
//! The hand-backs happen at shutdown: the change waits for the member's only worker, held by
//! a call of another partition that outlives the shutdown timeout. Before, the change waited
//! on, was abandoned unstarted with the member, and came back after the ack wait counted as an
//! attempt; now it is handed back when the member stops, recorded as a hand-back.

use super::*;

const GROUP: &str = "counted";
const PARTITIONS: u16 = 2;
const MAX_ATTEMPTS: u32 = 3;
const HAND_BACKS: u32 = 2;
/// Long enough for the test to give the worker to a blocker before the retry: the blocker
/// abandoned in the previous round comes back first, after the ack wait (the session timeout,
/// 2 s), and the new one, in the same partition, only after it.
const BACKOFF: Duration = Duration::from_secs(3);

/// What the handler of this test does: `orders.x` always fails; `orders.b<n>` (a blocker)
/// holds the member's worker until `released` reaches `n`.
#[derive(Clone)]
struct Script {
    events: Events,
    released: Arc<tokio::sync::watch::Sender<u32>>,
    blockers: Arc<Mutex<HashMap<String, u32>>>,
}

async fn scripted(message: KvMessage, State(script): State<Script>) -> anyhow::Result<()> {
    let key = message.key().to_owned();
    let blocker = locked(&script.blockers).get(&key).copied();
    match blocker {
        Some(number) => {
            script.events.push(format!("began {key}"));
            let mut released = script.released.subscribe();
            let _ = released.wait_for(|released| *released >= number).await;
            Ok(())
        }
        None => {
            script.events.push(format!("call {key}"));
            anyhow::bail!("{key} fails")
        }
    }
}

async fn script_started(State(script): State<Script>) {
    script.events.push("started");
}

/// The partition of each of `keys`, from a throw-away group with the same number of
/// partitions (a key's partition depends only on its subject and that number).
async fn partitions_by_probe(
    server: &NatsServer,
    store: &KeyValue,
    keys: &[String],
) -> anyhow::Result<BTreeMap<String, u16>> {
    let calls = Calls::default();
    let probe = start_member(server, "probe", &calls, group_watch("probe", PARTITIONS)).await?;
    let mut written = Vec::new();
    for key in keys {
        written.push((key.clone(), store.put(key, "probe".into()).await?));
    }
    let written_ref = &written;
    let partitions = faststream_testing::wait_for(
        "the probe group to copy the keys",
        EVENT_TIMEOUT,
        || async {
            let found = partitions_of(server, "probe", written_ref.iter().cloned()).await?;
            let seen = format!("{} of {}", found.len(), written_ref.len());
            anyhow::Ok(((found.len() == written_ref.len()).then_some(found), seen))
        },
    )
    .await?;
    probe.stop().await??;
    Ok(partitions)
}

/// A member of the group `counted`, with one worker, abandoning its calls after 1 s at
/// shutdown.
fn counted_member(server: &NatsServer, script: &Script) -> RunningApp {
    let watch = KvWatch::new(BUCKET)
        .updates_only(true)
        .max_workers(1)
        .group(
            settings(GROUP, PARTITIONS)
                .max_attempts(MAX_ATTEMPTS)
                .backoff([BACKOFF]),
        );
    RunningApp::spawn(
        App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(script.clone())
            .wait_for_catch_up(EVENT_TIMEOUT)
            .shutdown_timeout(Duration::from_secs(1))
            .subscriber("bill", PATTERN, watch, scripted)
            .hook(HookStage::AfterStartup, "started", script_started),
    )
}

fn calls_of_x(script: &Script) -> usize {
    script
        .events
        .snapshot()
        .iter()
        .filter(|e| *e == "call orders.x")
        .count()
}

#[tokio::test]
async fn a_change_handed_back_at_shutdown_is_still_called_max_attempts_times() -> anyhow::Result<()>
{
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let candidates: Vec<String> = (0..20).map(|i| format!("orders.b{i}")).collect();
        let mut keys = vec!["orders.x".to_owned()];
        keys.extend(candidates.iter().cloned());
        let partitions = partitions_by_probe(&server, &store, &keys).await?;
        let x_partition = partitions["orders.x"];
        let blockers: Vec<String> = candidates
            .iter()
            .filter(|key| partitions[*key] != x_partition)
            .take(HAND_BACKS as usize)
            .cloned()
            .collect();
        anyhow::ensure!(
            blockers.len() == HAND_BACKS as usize,
            "not enough keys outside partition {x_partition}: {partitions:?}"
        );
        let script = Script {
            events: Events::default(),
            released: Arc::new(tokio::sync::watch::Sender::new(0)),
            blockers: Arc::new(Mutex::new(
                blockers
                    .iter()
                    .enumerate()
                    .map(|(i, key)| (key.clone(), i as u32 + 1))
                    .collect(),
            )),
        };
        let x_consumer = format!("p{x_partition}");

        for round in 1..=HAND_BACKS {
            let member = counted_member(&server, &script);
            script
                .events
                .wait_for(&format!("member {round} started"), |events| {
                    events.iter().filter(|e| *e == "started").count() == round as usize
                })
                .await?;
            if round == 1 {
                store.put("orders.x", "x".into()).await?;
            }
            // A call of orders.x, which fails; it comes back after the backoff.
            script
                .events
                .wait_for(&format!("call {round} of orders.x"), |_| {
                    calls_of_x(&script) == round as usize
                })
                .await?;
            let stream = jetstream(&server)
                .await?
                .get_stream(format!("KVG_{BUCKET}_{GROUP}"))
                .await?;
            let called_at = stream
                .consumer_info(&x_consumer)
                .await?
                .delivered
                .consumer_sequence;
            // Meanwhile a call of another partition takes the worker, for longer than the
            // shutdown timeout.
            let blocker = &blockers[round as usize - 1];
            store.put(blocker, "b".into()).await?;
            script
                .events
                .wait_for_event(&format!("began {blocker}"))
                .await?;
            let group = broker.kv_group(BUCKET, GROUP).await?;
            let (stream_ref, group_ref, x_ref) = (&stream, &group, &x_consumer);
            faststream_testing::wait_for(
                "orders.x back, waiting for the worker",
                EVENT_TIMEOUT,
                || async {
                    let letters = group_ref.dead_letters().await?;
                    anyhow::ensure!(
                        letters.is_empty(),
                        "orders.x given up after {} call(s): {letters:?}",
                        calls_of_x(&script)
                    );
                    let info = stream_ref.consumer_info(x_ref).await?;
                    let back =
                        info.delivered.consumer_sequence > called_at && info.num_ack_pending == 1;
                    anyhow::Ok((back.then_some(()), format!("{:?}", info.delivered)))
                },
            )
            .await?;
            // Stopped with orders.x unstarted: it is handed back; the blocker is abandoned at
            // the shutdown timeout (and handled by the next member).
            member.stop().await??;
            script.released.send_replace(round);
        }
        // The last member: orders.x is called until its attempts are used up.
        let last = counted_member(&server, &script);
        let group = broker.kv_group(BUCKET, GROUP).await?;
        let group_ref = &group;
        let letters = faststream_testing::wait_for("the dead letter", EVENT_TIMEOUT, || async {
            let letters = group_ref.dead_letters().await?;
            let seen = format!("{letters:?}");
            anyhow::Ok(((!letters.is_empty()).then_some(letters), seen))
        })
        .await?;
        last.stop().await??;
        let calls = calls_of_x(&script);
        println!(
            "orders.x: handed back {HAND_BACKS} times, called {calls} times, given up after {} \
             attempts",
            letters[0].attempts
        );
        assert_eq!(letters.len(), 1, "{letters:#?}");
        assert_eq!(letters[0].key, "orders.x");
        assert_eq!(calls, MAX_ATTEMPTS as usize, "calls of orders.x");
        assert_eq!(letters[0].attempts, u64::from(MAX_ATTEMPTS));
        Ok(())
    })
    .await
}
