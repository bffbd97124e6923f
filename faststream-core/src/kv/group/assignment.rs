//! Which member pulls which partition: a sticky rule, balanced to within one partition.
//!
//! The input is the number of partitions `P` and the live members, each with the partitions its
//! latest heartbeat says it holds (nothing for a member whose heartbeat has not been read). The
//! output is every member's share. With `n` members:
//!
//! 1. **Targets.** Every member gets `P / n`; `P % n` of them get one more. Those are taken
//!    first among the members already holding more than `P / n`, then among the others, each
//!    time in the order of their ids.
//! 2. **Keeping.** In the order of their ids, each member keeps the partitions it holds, lowest
//!    first, up to its target, skipping any an earlier member kept (two members claim one
//!    partition only while one of them has not heard of the latest assignment).
//! 3. **The rest.** The partitions nobody kept, lowest first, fill the members still below
//!    their target, in the order of their ids.
//!
//! **Balanced**: the targets differ by at most one and sum to `P`, and every member ends at its
//! target: step 2 keeps at most the target, and step 3 has exactly the partitions missing.
//!
//! **Deterministic**: a pure function of its input, whatever the order the members are given
//! in. Members that have read the same heartbeats compute the same assignment.
//!
//! **Stable**: applying the rule to a state in which some members already hold their share of
//! its output gives the same output. Take one member `j` now holding its share `o_j`. In step 1
//! it holds more than `P / n` exactly when its target is the larger one: it can only have moved
//! up the order if it had the larger target, down if it had not, so the targets stay. In step
//! 2 the members before it keep what they kept; it keeps all of `o_j` (what it kept is still
//! free, and what it was given in step 3 nobody keeps); a member after it finds taken only
//! partitions it had not kept, all above those it kept, so it keeps the same. The partitions
//! left for step 3 are those of before less `j`'s, handed out as before. One member at a time,
//! this holds for any set of them, all of them included: the output is a fixed point. So while
//! each member heartbeats its new share, whether the others read its old heartbeat or its new,
//! everyone computes the same assignment; once the membership stops changing, the group settles
//! within a round of heartbeats (a few rounds when members read each other's heartbeats late;
//! the tests simulate that).
//!
//! **Sticky**: from a settled state, a member leaving moves only its partitions (each other
//! member's new target is at least what it holds), and a member joining moves only the
//! `P / (n+1)` it takes (it holds nothing, so the larger targets go to members who had more):
//! the least any balanced rule can move.
//!
//! Members of the versions that gave partition `p` to the `p % n`-th member do not say in their
//! heartbeats that they use this rule; while one of them is live, every member assigns
//! [`modulo`] instead, as they do, so that no partition is left to a member that does not pull
//! it. Their assignment is a settled state of the sticky rule (the members given one more are
//! the first by id, holding more), so once the last of them leaves, only its partitions move.

/// A live member and the partitions its latest heartbeat says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder<'a> {
    /// The member's id; ids are distinct.
    pub(crate) id: &'a str,
    /// What its latest heartbeat says it holds, in any order; partitions at or above the
    /// group's count (from another configuration) are ignored.
    pub(crate) held: &'a [u16],
}

/// Every member's share of `partitions`, in the order `members` are given, each sorted.
pub(crate) fn assign(partitions: u16, members: &[Holder<'_>]) -> Vec<Vec<u16>> {
    let count = members.len();
    if count == 0 {
        return Vec::new();
    }
    let total = usize::from(partitions);
    let base = total / count;
    let mut by_id: Vec<usize> = (0..count).collect();
    by_id.sort_by(|a, b| members[*a].id.cmp(members[*b].id));
    let claims: Vec<Vec<u16>> = members
        .iter()
        .map(|member| {
            let mut claim: Vec<u16> = member
                .held
                .iter()
                .copied()
                .filter(|partition| *partition < partitions)
                .collect();
            claim.sort_unstable();
            claim.dedup();
            claim
        })
        .collect();

    // Only "more than the base or not" ranks a member: ranking by how many it holds would let a
    // member that shed its surplus fall behind one holding fewer, and change the targets.
    let mut larger_first = by_id.clone();
    larger_first.sort_by_key(|member| claims[*member].len() <= base);
    let mut targets = vec![base; count];
    for member in larger_first.iter().take(total % count) {
        targets[*member] += 1;
    }

    let mut taken = vec![false; total];
    let mut shares: Vec<Vec<u16>> = vec![Vec::new(); count];
    for &member in &by_id {
        for &partition in &claims[member] {
            if shares[member].len() == targets[member] {
                break;
            }
            let slot = &mut taken[usize::from(partition)];
            if !*slot {
                *slot = true;
                shares[member].push(partition);
            }
        }
    }

    let mut free = (0..partitions).filter(|partition| !taken[usize::from(*partition)]);
    for &member in &by_id {
        let missing = targets[member] - shares[member].len();
        shares[member].extend(free.by_ref().take(missing));
        shares[member].sort_unstable();
    }
    shares
}

/// The rule of the versions before this one, which members fall back to while one of those is
/// live: partition `p` to the `p % count`-th of the members sorted by id. The partitions of the
/// `index`-th.
pub(crate) fn modulo(partitions: u16, count: usize, index: usize) -> Vec<u16> {
    (0..partitions)
        .filter(|partition| usize::from(*partition) % count.max(1) == index)
        .collect()
}

#[cfg(test)]
mod tests;
