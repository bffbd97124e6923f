//! Counting attempts: the server's delivery count of a change, less the deliveries that were
//! handed back without a call.
//!
//! The attempt number of a delivery is the server's delivery count, so that it survives the
//! member that made the earlier attempts (a member that died mid-call counts that attempt).
//! But a delivery a member hands back without calling the handler (it lost the partition's pin
//! or its connection before the call could start, or held it while giving the partition up)
//! raises that count too. So a member that hands deliveries back first records them, per
//! partition, in the group's hand-backs bucket (`KVG_<bucket>_<group>_handbacks`, key
//! `p<partition>`, one line `<stream sequence> <deliveries handed back>` per change), and a
//! member receiving a redelivery (a delivery count above 1) reads it and subtracts. Several
//! changes of a partition are in flight at once, so the entry lists the newest
//! [`KEPT_PER_PARTITION`] changes handed back; it is rewritten with a compare-and-set, so that
//! two members recording at once do not lose each other's lines. Only hand-backs and
//! redeliveries touch the bucket, never a first delivery.
//!
//! What cannot be recorded still counts as an attempt: a delivery to a member that died, or
//! was stopped at the shutdown timeout, before calling; one handed back while the connection
//! was down; a line dropped from a full entry.

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind};
use bytes::Bytes;

/// The hand-back counts of one group.
#[derive(Debug, Clone)]
pub(crate) struct Handbacks {
    pub(crate) store: kv::Store,
}

impl Handbacks {
    fn key(partition: u16) -> String {
        format!("p{partition}")
    }

    /// How many deliveries of the change at `sequence` in `partition` were handed back
    /// without a call (0 if none was recorded). Read from the stream's leader, not with a
    /// direct get that a replica lagging behind could answer.
    pub(crate) async fn of(
        &self,
        partition: u16,
        sequence: u64,
    ) -> Result<u64, LastRawMessageError> {
        let subject = format!("{}{}", self.store.prefix, Self::key(partition));
        let value = match self
            .store
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => message.payload,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0),
            Err(error) => return Err(error),
        };
        Ok(parse(&value)
            .into_iter()
            .find(|(recorded, _)| *recorded == sequence)
            .map_or(0, |(_, count)| count))
    }

    /// Records, for each `(sequence, count)`, that `count` deliveries of the change at
    /// `sequence` in `partition` were handed back without a call, once the server has stored it.
    pub(crate) async fn record(
        &self,
        partition: u16,
        counts: &[(u64, u64)],
    ) -> Result<(), kv::UpdateError> {
        let key = Self::key(partition);
        let mut tries = 0;
        loop {
            tries += 1;
            // From the stream's leader, as `of` reads: a lagging replica's answer would only
            // fail the compare-and-set.
            let subject = format!("{}{key}", self.store.prefix);
            let (lines, revision) = match self
                .store
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(message) => (parse(&message.payload), message.sequence),
                Err(_) => (Vec::new(), 0),
            };
            let value = Bytes::from(render(merge(lines, counts)));
            match self.store.update(&key, value, revision).await {
                Ok(_) => return Ok(()),
                // Another member wrote meanwhile: merge into its entry.
                Err(error)
                    if error.kind() == kv::UpdateErrorKind::WrongLastRevision && tries < 5 => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// The most changes one partition's entry lists: the newest are kept.
const KEPT_PER_PARTITION: usize = 4_096;

fn parse(value: &[u8]) -> Vec<(u64, u64)> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (sequence, count) = line.split_once(' ')?;
            Some((sequence.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// `lines` with `counts` put in (a sequence's newer count replaces its older one), sorted, the
/// newest [`KEPT_PER_PARTITION`] kept.
fn merge(lines: Vec<(u64, u64)>, counts: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut merged: std::collections::BTreeMap<u64, u64> = lines.into_iter().collect();
    merged.extend(counts.iter().copied());
    let skip = merged.len().saturating_sub(KEPT_PER_PARTITION);
    merged.into_iter().skip(skip).collect()
}

fn render(lines: Vec<(u64, u64)>) -> String {
    lines
        .into_iter()
        .map(|(sequence, count)| format!("{sequence} {count}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        // One line is what earlier versions wrote.
        assert_eq!(parse(b"42 3"), vec![(42, 3)]);
        assert_eq!(parse(b"42 3\n50 1\n"), vec![(42, 3), (50, 1)]);
        assert_eq!(parse(b"42\nx 3\n7 1"), vec![(7, 1)]);
    }

    #[test]
    fn merging_replaces_counts_and_keeps_the_newest() {
        let merged = merge(vec![(5, 1), (9, 2)], &[(9, 3), (12, 1)]);
        assert_eq!(merged, vec![(5, 1), (9, 3), (12, 1)]);
        assert_eq!(
            parse(render(merged).as_bytes()),
            vec![(5, 1), (9, 3), (12, 1)]
        );
        let many: Vec<(u64, u64)> = (0..KEPT_PER_PARTITION as u64 + 10)
            .map(|s| (s, 1))
            .collect();
        let kept = merge(Vec::new(), &many);
        assert_eq!(kept.len(), KEPT_PER_PARTITION);
        assert_eq!(kept.first(), Some(&(10, 1)));
    }
}
