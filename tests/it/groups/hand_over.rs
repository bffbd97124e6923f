//! Partitions moving between members: at once on a graceful stop, within about a heartbeat on
//! a join.

use super::*;

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
                info.is_balanced(2)
            })
            .await?;
            let base = round * PER_ROUND;
            let before = tokio::spawn(write(store.clone(), base..base + 300, 30, Duration::ZERO));
            let start = calls.all().len();
            calls.wait_for_count(start + 40).await?;
            // Calls wait while the rest is written, so that changes are waiting in every
            // partition with keys when the member stops (the survivor's first call of each
            // measures the hand-over); then they flow again, and the member stops amid calls
            // and acknowledgements, while more are written.
            calls.hold();
            let mut round_written = before.await??;
            let held = calls.all().len();
            calls.open();
            calls.wait_for_count(held + 20).await?;
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
                |info| info.is_balanced(1),
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
        calls.wait_for_count(40).await?;
        let join_requested = Instant::now();
        let second = RunningApp::spawn(member_app(&server, "second", &calls, watch.clone()));
        calls.events.wait_for_event("second started").await?;
        let joined_after = join_requested.elapsed();
        let info = info_until(&broker, "billing", "8 partitions each", |info| {
            info.is_balanced(2)
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
