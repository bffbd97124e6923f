use super::*;

fn started(order: &mut KeyOrder<&'static str>) -> Vec<u64> {
    order.start_ready().into_iter().map(|(s, _)| s).collect()
}

#[test]
fn nothing_starts_before_the_fence() {
    let mut order = KeyOrder::default();
    order.hold(5, "a", "5");
    assert_eq!(started(&mut order), Vec::<u64>::new());
    order.fence(4, [], None);
    assert_eq!(started(&mut order), vec![5]);
}

#[test]
fn a_key_runs_one_change_at_a_time_in_order_and_other_keys_run_alongside() {
    let mut order = KeyOrder::default();
    order.fence(0, [], None);
    order.hold(1, "a", "1");
    order.hold(2, "b", "2");
    order.hold(3, "a", "3");
    order.hold(4, "c", "4");
    assert_eq!(started(&mut order), vec![1, 2, 4]);
    assert_eq!(started(&mut order), Vec::<u64>::new());
    order.settled(1);
    assert_eq!(started(&mut order), vec![3]);
}

#[test]
fn a_retry_keeps_its_key_waiting_until_it_comes_back() {
    let mut order = KeyOrder::default();
    order.fence(0, [], None);
    order.hold(1, "a", "1");
    order.hold(2, "a", "2");
    assert_eq!(started(&mut order), vec![1]);
    order.retrying(1);
    assert_eq!(order.known(1), Known::Waiting);
    assert_eq!(started(&mut order), Vec::<u64>::new());
    order.hold(1, "a", "1 again");
    assert_eq!(started(&mut order), vec![1]);
    order.settled(1);
    assert_eq!(started(&mut order), vec![2]);
}

#[test]
fn the_old_range_holds_back_newer_changes_of_its_keys_only() {
    let mut order = KeyOrder::default();
    // A dead member held 3 (a) and 4 (b); 5 (a) was acknowledged above the floor.
    order.hold(7, "a", "7");
    order.hold(8, "c", "8");
    order.fence(2, [(3, "a".into()), (4, "b".into()), (5, "a".into())], None);
    assert!(order.awaits_old());
    assert_eq!(started(&mut order), vec![8]);
    // 3 comes back here after its ack wait.
    assert_eq!(order.known(3), Known::Waiting);
    order.hold(3, "a", "3");
    assert_eq!(started(&mut order), vec![3]);
    order.settled(3);
    // 5 is still unsettled as far as this member knows, until the floor passes it.
    assert_eq!(started(&mut order), Vec::<u64>::new());
    order.passed(5);
    assert_eq!(started(&mut order), vec![7]);
    // 4 (b) is below the floor too: nothing old is left.
    assert!(!order.awaits_old());
}

#[test]
fn sequences_of_unknown_key_hold_back_everything_above_them() {
    let mut order = KeyOrder::default();
    order.hold(4, "a", "4");
    order.hold(9, "b", "9");
    order.fence(3, [], Some((3, 6)));
    // 4 is the lowest unsettled sequence: nothing of unknown key lies below it.
    assert_eq!(started(&mut order), vec![4]);
    order.settled(4);
    order.passed(5);
    assert_eq!(started(&mut order), Vec::<u64>::new());
    order.passed(6);
    assert!(!order.awaits_old());
    assert_eq!(started(&mut order), vec![9]);
}

#[test]
fn a_new_pin_forgets_the_old_range_but_keeps_what_is_in_hand() {
    let mut order = KeyOrder::default();
    order.fence(0, [(1, "a".into())], None);
    order.hold(2, "a", "2");
    order.hold(3, "b", "3");
    assert_eq!(started(&mut order), vec![3]);
    order.unfence();
    assert!(!order.fenced);
    assert_eq!(order.known(1), Known::Nothing);
    assert_eq!(order.known(3), Known::Running);
    assert_eq!(order.take_held().len(), 1);
    assert_eq!(order.in_hand(), 1);
}

/// A model check: an old range (some of it settled elsewhere), new deliveries in sequence order,
/// redeliveries of old changes and retries in any order, floors; at every step no change starts
/// while an earlier one of its key is unsettled anywhere.
#[test]
fn random_histories_never_run_a_key_out_of_order() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound.max(1)
    };
    for _ in 0..500 {
        let keys = 1 + next(5);
        let total = 40;
        let key_of: Vec<String> = (0..=total).map(|_| format!("k{}", next(keys))).collect();
        let floor = next(10);
        let old_end = floor + 10;
        // Unsettled anywhere: the old range, and every new sequence until settled here.
        let mut unsettled: BTreeSet<u64> = (floor + 1..=total).collect();
        let mut order: KeyOrder<()> = KeyOrder::default();
        let read = next(3) != 0;
        let old: Vec<(u64, String)> = (floor + 1..=old_end)
            .filter(|_| read)
            .map(|s| (s, key_of[s as usize].clone()))
            .collect();
        order.fence(floor, old, (!read).then_some((floor, old_end)));
        let mut next_new = old_end + 1;
        let mut here: BTreeSet<u64> = BTreeSet::new();
        let mut running: BTreeSet<u64> = BTreeSet::new();
        for _ in 0..400 {
            match next(5) {
                // A redelivery of an old change or of a retry.
                0 => {
                    let s = floor + 1 + next(total - floor);
                    let back = (s <= old_end && !here.contains(&s))
                        || order.known(s) == Known::Waiting && here.contains(&s);
                    if unsettled.contains(&s) && back && s < next_new.max(old_end + 1) {
                        order.hold(s, key_of[s as usize].as_str(), ());
                        here.insert(s);
                    }
                }
                // The next new change.
                1 => {
                    if next_new <= total {
                        order.hold(next_new, key_of[next_new as usize].as_str(), ());
                        here.insert(next_new);
                        next_new += 1;
                    }
                }
                2 => {
                    let pick = next(running.len() as u64 + 1) as usize;
                    if let Some(&s) = running.iter().nth(pick) {
                        running.remove(&s);
                        if next(3) == 0 {
                            order.retrying(s);
                        } else {
                            order.settled(s);
                            unsettled.remove(&s);
                            here.remove(&s);
                        }
                    }
                }
                // The old holder settles an old change it still had.
                3 => {
                    let s = floor + 1 + next(10);
                    if !here.contains(&s) {
                        unsettled.remove(&s);
                    }
                }
                _ => {
                    let lowest = unsettled.first().copied().unwrap_or(total + 1);
                    order.passed(lowest - 1);
                }
            }
            let old = order
                .entries
                .values()
                .filter(|e| matches!(e.slot, Slot::Old));
            assert_eq!(order.old, old.count(), "the count of old entries drifted");
            for (s, ()) in order.start_ready() {
                let key = &key_of[s as usize];
                let earlier = unsettled
                    .iter()
                    .filter(|u| **u < s && key_of[**u as usize] == *key)
                    .count();
                assert_eq!(
                    earlier, 0,
                    "{s} ({key}) started with an earlier change of its key unsettled"
                );
                assert!(running.insert(s));
            }
        }
        // Liveness: with every change delivered again and every call ending, all of it is
        // handled (nothing held stays unlooked at).
        for _ in 0..200 {
            if unsettled.is_empty() {
                break;
            }
            let lowest = unsettled.first().copied().unwrap_or(total + 1);
            order.passed(lowest - 1);
            for s in std::mem::take(&mut running) {
                order.settled(s);
                unsettled.remove(&s);
            }
            for s in unsettled.clone() {
                if matches!(order.known(s), Known::Nothing | Known::Waiting) {
                    order.hold(s, key_of[s as usize].as_str(), ());
                }
            }
            running.extend(order.start_ready().into_iter().map(|(s, ())| s));
        }
        assert!(unsettled.is_empty(), "never handled: {unsettled:?}");
    }
}

#[test]
fn a_change_done_with_here_is_known_when_delivered_again() {
    let mut order = KeyOrder::default();
    order.fence(0, [], None);
    order.hold(3, "a", "3");
    order.hold(7, "a", "7");
    assert_eq!(started(&mut order), vec![3]);
    order.done(3);
    assert_eq!(started(&mut order), vec![7]);
    order.done(7);
    // 3's acknowledgement was lost: it is older than what was done with of its key.
    assert!(order.done_here("a", 3));
    assert!(order.done_here("a", 7));
    assert!(!order.done_here("a", 8));
    assert!(!order.done_here("b", 3));
}
