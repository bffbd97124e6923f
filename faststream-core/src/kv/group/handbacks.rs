//! Counting attempts: the server's delivery count of a change, less the deliveries that were
//! handed back without a call.
//!
//! The attempt number of a delivery is the server's delivery count, so that it survives the
//! member that made the earlier attempts (a member that died mid-call counts that attempt).
//! But a delivery a member hands back without calling the handler (it lost the partition's pin
//! or its connection before the call could start, or received the change while giving the
//! partition up) raises that count too. So a member that hands a delivery back first records
//! it, per partition, in the group's hand-backs bucket (`KVG_<bucket>_<group>_handbacks`, key
//! `p<partition>`, value `<stream sequence> <deliveries handed back>`), and a member receiving
//! a redelivery (a delivery count above 1) reads it and subtracts. One change is in flight per
//! partition, so one entry per partition is enough: an entry of another sequence is stale.
//! Only hand-backs and redeliveries touch the bucket, never a first delivery.
//!
//! What cannot be recorded still counts as an attempt: a delivery to a member that died, or
//! was stopped at the shutdown timeout, before calling; one handed back while the connection
//! was down.

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
            .filter(|(recorded, _)| *recorded == sequence)
            .map_or(0, |(_, count)| count))
    }

    /// Records that `count` deliveries of the change at `sequence` in `partition` were handed
    /// back without a call, once the server has stored it.
    pub(crate) async fn record(
        &self,
        partition: u16,
        sequence: u64,
        count: u64,
    ) -> Result<(), kv::PutError> {
        let value = Bytes::from(format!("{sequence} {count}"));
        self.store.put(Self::key(partition), value).await.map(drop)
    }
}

fn parse(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (sequence, count) = text.split_once(' ')?;
    Some((sequence.parse().ok()?, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        assert_eq!(parse(b"42 3"), Some((42, 3)));
        assert_eq!(parse(b"42"), None);
        assert_eq!(parse(b"x 3"), None);
    }
}
