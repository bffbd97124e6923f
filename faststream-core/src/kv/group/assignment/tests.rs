//! The assignment rule's properties over many random states, and the partitions it moves per
//! join and leave against the rule it replaced (`p % n`).

use std::collections::BTreeMap;

use super::{assign, modulo, Holder};

/// A small deterministic generator (xorshift64*), so that every run tries the same states.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound).unwrap_or(u64::MAX)).unwrap_or(0)
    }
}

/// Members by id, each with what it holds.
type State = BTreeMap<String, Vec<u16>>;

fn apply(partitions: u16, state: &State) -> State {
    let holders: Vec<Holder<'_>> = state.iter().map(|(id, held)| Holder { id, held }).collect();
    let shares = assign(partitions, &holders);
    state.keys().cloned().zip(shares).collect()
}

/// Random holdings: any subset (overlapping others', some partitions held by nobody), now and
/// then a partition of another configuration, now and then nothing at all.
fn random_state(random: &mut Random, partitions: u16, members: usize) -> State {
    (0..members)
        .map(|index| {
            let id = format!("m{:04}-{index}", random.below(10_000));
            let held = match random.below(4) {
                0 => Vec::new(),
                _ => {
                    let density = 1 + random.below(4);
                    (0..partitions + 2)
                        .filter(|_| random.below(density + 1) == 0)
                        .collect()
                }
            };
            (id, held)
        })
        .collect()
}

/// Whose each partition is.
fn owners(state: &State) -> BTreeMap<u16, &str> {
    state
        .iter()
        .flat_map(|(id, held)| held.iter().map(move |partition| (*partition, id.as_str())))
        .collect()
}

/// Partitions whose owner differs between two states (a partition of a member gone counts).
fn moved(before: &State, after: &State) -> usize {
    let (before, after) = (owners(before), owners(after));
    after
        .iter()
        .filter(|(partition, owner)| before.get(partition) != Some(owner))
        .count()
}

fn assert_balanced(partitions: u16, state: &State, shares: &State) {
    let sizes: Vec<usize> = shares.values().map(Vec::len).collect();
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    assert!(
        min.zip(max).is_some_and(|(min, max)| max - min <= 1),
        "{sizes:?} from {state:?}"
    );
    let mut all: Vec<u16> = shares.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..partitions).collect::<Vec<_>>(), "from {state:?}");
}

#[test]
fn balanced_to_one_for_any_holdings() {
    let mut random = Random(0x5EED_0001);
    for members in 1..=20 {
        for partitions in 1..=64 {
            for _ in 0..8 {
                let state = random_state(&mut random, partitions, members);
                let shares = apply(partitions, &state);
                assert_balanced(partitions, &state, &shares);
            }
        }
    }
    assert!(assign(16, &[]).is_empty());
}

#[test]
fn the_same_whatever_the_order_of_the_members() {
    let mut random = Random(0x5EED_0002);
    for _ in 0..500 {
        let partitions = u16::try_from(1 + random.below(64)).unwrap_or(16);
        let members = 1 + random.below(20);
        let state = random_state(&mut random, partitions, members);
        let mut holders: Vec<Holder<'_>> =
            state.iter().map(|(id, held)| Holder { id, held }).collect();
        let sorted: BTreeMap<&str, Vec<u16>> = holders
            .iter()
            .map(|holder| holder.id)
            .zip(assign(partitions, &holders))
            .collect();
        holders.reverse();
        let swap = random.below(holders.len());
        holders.swap(0, swap);
        let shuffled: BTreeMap<&str, Vec<u16>> = holders
            .iter()
            .map(|holder| holder.id)
            .zip(assign(partitions, &holders))
            .collect();
        assert_eq!(sorted, shuffled);
    }
}

#[test]
fn the_output_is_kept_even_when_only_some_members_hold_their_share_yet() {
    let mut random = Random(0x5EED_0003);
    for _ in 0..3000 {
        let partitions = u16::try_from(1 + random.below(64)).unwrap_or(16);
        let members = 1 + random.below(20);
        let state = random_state(&mut random, partitions, members);
        let shares = apply(partitions, &state);
        // All members hold their share: a fixed point.
        assert_eq!(apply(partitions, &shares), shares, "from {state:?}");
        // Some hold their share, the others still what they held.
        let mut partly = state.clone();
        for (id, share) in &shares {
            if random.below(2) == 0 {
                partly.insert(id.clone(), share.clone());
            }
        }
        assert_eq!(
            apply(partitions, &partly),
            shares,
            "from {state:?} via {partly:?}"
        );
    }
}

/// A settled state: the rule's output from random holdings.
fn settled(random: &mut Random, partitions: u16, members: usize) -> State {
    let state = random_state(random, partitions, members);
    apply(partitions, &state)
}

#[test]
fn a_member_leaving_moves_only_its_partitions() {
    let mut random = Random(0x5EED_0004);
    for members in 2..=20 {
        for partitions in 1..=64 {
            let before = settled(&mut random, partitions, members);
            let leaving = before.keys().nth(random.below(members)).cloned();
            let Some(leaving) = leaving else { continue };
            let mut left = before.clone();
            let its = left.remove(&leaving).map_or(0, |held| held.len());
            let after = apply(partitions, &left);
            assert_eq!(moved(&before, &after), its, "{leaving} leaving {before:?}");
        }
    }
}

#[test]
fn a_member_joining_moves_only_what_it_takes() {
    let mut random = Random(0x5EED_0005);
    for members in 1..=20 {
        for partitions in 1..=64 {
            let before = settled(&mut random, partitions, members);
            let mut joined = before.clone();
            // Anywhere in the order of ids.
            let id = format!("m{:04}-new", random.below(10_000));
            joined.insert(id.clone(), Vec::new());
            let after = apply(partitions, &joined);
            let most = usize::from(partitions).div_ceil(members + 1);
            let moves = moved(&before, &after);
            assert!(moves <= most, "{moves} > {most}: {id} joining {before:?}");
            assert_eq!(moves, after[&id].len());
        }
    }
}

/// Members heartbeat what they computed from the heartbeats they had read, each reading the
/// log of heartbeats a random number of entries late, while members join and leave; once the
/// membership stops changing, every member computes the same assignment and the heartbeats
/// carry it.
#[test]
fn members_reading_heartbeats_late_agree_once_the_membership_settles() {
    /// One entry of the members bucket: a heartbeat, or a member leaving (`None`).
    type Entry = (String, Option<Vec<u16>>);
    fn view(log: &[Entry]) -> State {
        let mut state = State::new();
        for (id, held) in log {
            match held {
                Some(held) => state.insert(id.clone(), held.clone()),
                None => state.remove(id),
            };
        }
        state
    }
    let mut random = Random(0x5EED_0006);
    let mut rounds_needed = Vec::new();
    for run in 0..300 {
        let partitions = u16::try_from(1 + random.below(40)).unwrap_or(16);
        let lag = [0, 1, 3][run % 3];
        let mut log: Vec<Entry> = Vec::new();
        let mut next_id = 0;
        let beat = |log: &mut Vec<Entry>, random: &mut Random, id: &String| {
            let seen = log.len() - random.below(lag + 1).min(log.len());
            let share = apply(partitions, &view(&log[..seen])).remove(id);
            log.push((id.clone(), Some(share.unwrap_or_default())));
        };
        for _ in 0..20 {
            let live: Vec<String> = view(&log).into_keys().collect();
            match random.below(6) {
                0 if live.len() < 12 => {
                    next_id += 1;
                    log.push((
                        format!("m{:04}-{next_id}", random.below(10_000)),
                        Some(vec![]),
                    ));
                }
                1 if live.len() > 1 => {
                    log.push((live[random.below(live.len())].clone(), None));
                }
                _ if !live.is_empty() => {
                    let member = random.below(live.len());
                    beat(&mut log, &mut random, &live[member]);
                }
                _ => log.push(("m0000-0".to_owned(), Some(vec![]))),
            }
        }
        // Membership settled: members beat in rounds, in a random order each round.
        let live: Vec<String> = view(&log).into_keys().collect();
        let mut rounds = 0;
        loop {
            // Settled when the heartbeats carry the assignment and every member computes it,
            // however late it reads.
            let state = view(&log);
            let settled = (log.len().saturating_sub(lag)..=log.len())
                .all(|seen| apply(partitions, &view(&log[..seen])) == state);
            if settled {
                break;
            }
            rounds += 1;
            assert!(rounds <= 20, "no agreement after 20 rounds: {state:?}");
            let mut order = live.clone();
            for index in (1..order.len()).rev() {
                order.swap(index, random.below(index + 1));
            }
            for id in &order {
                beat(&mut log, &mut random, id);
            }
        }
        if lag == 0 {
            assert!(
                rounds <= 1,
                "reading every heartbeat at once takes one round"
            );
        }
        rounds_needed.push(rounds);
    }
    println!(
        "rounds of heartbeats to settle: at most {:?}",
        rounds_needed.iter().max()
    );
}

#[test]
fn modulo_gives_p_to_the_p_mod_n_th() {
    assert_eq!(modulo(4, 2, 1), vec![1, 3]);
    assert_eq!(modulo(7, 3, 0), vec![0, 3, 6]);
    assert_eq!(modulo(2, 3, 2), Vec::<u16>::new());
}

#[test]
fn the_modulo_assignment_is_settled_for_the_sticky_rule() {
    for members in 1..=20 {
        let ids: Vec<String> = (0..members).map(|index| format!("m{index:02}")).collect();
        for partitions in 1..=64 {
            let state = by_modulo(partitions, &ids);
            assert_eq!(apply(partitions, &state), state);
        }
    }
}

/// The rule this one replaced, for every member of `ids`.
fn by_modulo(partitions: u16, ids: &[String]) -> State {
    let mut sorted = ids.to_vec();
    sorted.sort();
    let count = sorted.len();
    sorted
        .into_iter()
        .enumerate()
        .map(|(index, id)| (id, modulo(partitions, count, index)))
        .collect()
}

/// Partitions moved on average by a member joining (each place it can take in the order of the
/// ids) or leaving (each member), for `modulo` and the sticky rule.
struct Moves {
    modulo: f64,
    sticky: f64,
}

fn average(total: usize, cases: usize) -> f64 {
    // Exact for the small counts measured here.
    f64::from(u32::try_from(total).unwrap_or(u32::MAX))
        / f64::from(u32::try_from(cases).unwrap_or(u32::MAX))
}

fn joining(partitions: u16, sticky: &State) -> Moves {
    let ids: Vec<String> = sticky.keys().cloned().collect();
    let modulo_before = by_modulo(partitions, &ids);
    let (mut modulo_total, mut sticky_total) = (0, 0);
    // An id before each member's, and one after them all.
    let newcomers: Vec<String> = ids
        .iter()
        .map(|id| format!("{}0", &id[..id.len() - 1]))
        .chain(std::iter::once("z".to_owned()))
        .collect();
    for newcomer in &newcomers {
        let mut with = ids.clone();
        with.push(newcomer.clone());
        modulo_total += moved(&modulo_before, &by_modulo(partitions, &with));
        let mut joined = sticky.clone();
        joined.insert(newcomer.clone(), Vec::new());
        sticky_total += moved(sticky, &apply(partitions, &joined));
    }
    Moves {
        modulo: average(modulo_total, newcomers.len()),
        sticky: average(sticky_total, newcomers.len()),
    }
}

fn leaving(partitions: u16, sticky: &State) -> Moves {
    let ids: Vec<String> = sticky.keys().cloned().collect();
    let modulo_before = by_modulo(partitions, &ids);
    let (mut modulo_total, mut sticky_total) = (0, 0);
    for leaver in &ids {
        let rest: Vec<String> = ids.iter().filter(|id| *id != leaver).cloned().collect();
        modulo_total += moved(&modulo_before, &by_modulo(partitions, &rest));
        let mut left = sticky.clone();
        left.remove(leaver);
        sticky_total += moved(sticky, &apply(partitions, &left));
    }
    Moves {
        modulo: average(modulo_total, ids.len()),
        sticky: average(sticky_total, ids.len()),
    }
}

/// 16 partitions, members joining one by one up to 8 and leaving back to 1 (each step averaged
/// over where the member falls in the order of ids); printed, and the sticky rule's moves
/// checked against the least any balanced rule can do.
#[test]
fn partitions_moved_per_join_and_leave_against_modulo() {
    const PARTITIONS: u16 = 16;
    let percent = |moves: f64| 100.0 * moves / f64::from(PARTITIONS);
    // Ids ending in a digit other than 0, so that an id just before each one exists.
    let ids: Vec<String> = [
        "m7315", "m2048", "m9127", "m4406", "m1583", "m6672", "m8259", "m3991",
    ]
    .iter()
    .map(|id| (*id).to_owned())
    .collect();
    let mut state = State::new();
    println!("16 partitions: partitions moved, average over the joining or leaving member");
    println!("step      p % n           sticky");
    for (count, id) in ids.iter().enumerate() {
        if count > 0 {
            let moves = joining(PARTITIONS, &state);
            println!(
                "{count} -> {}    {:>4.1} ({:>3.0}%)    {:>4.1} ({:>3.0}%)",
                count + 1,
                moves.modulo,
                percent(moves.modulo),
                moves.sticky,
                percent(moves.sticky)
            );
            // The least a balanced rule can move: what the newcomer must take.
            let least = f64::from(PARTITIONS / u16::try_from(count + 1).unwrap_or(1));
            assert!(
                (moves.sticky - least).abs() < 1e-9,
                "{count} -> {}",
                count + 1
            );
            assert!(moves.sticky <= moves.modulo);
        }
        state.insert(id.clone(), Vec::new());
        state = apply(PARTITIONS, &state);
    }
    for id in &ids[..ids.len() - 1] {
        let count = state.len();
        let moves = leaving(PARTITIONS, &state);
        println!(
            "{count} -> {}    {:>4.1} ({:>3.0}%)    {:>4.1} ({:>3.0}%)",
            count - 1,
            moves.modulo,
            percent(moves.modulo),
            moves.sticky,
            percent(moves.sticky)
        );
        // The least: the leaver's partitions, on average P / n.
        let least = f64::from(PARTITIONS) / f64::from(u16::try_from(count).unwrap_or(1));
        assert!(
            (moves.sticky - least).abs() < 1e-9,
            "{count} -> {}",
            count - 1
        );
        assert!(moves.sticky <= moves.modulo);
        state.remove(id);
        state = apply(PARTITIONS, &state);
    }
}
