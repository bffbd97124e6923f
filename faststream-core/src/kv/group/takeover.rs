//! What a member reads when it gets a partition's pin: the partition's **old range**, the
//! changes its consumer delivered before and has not settled as far as the server says, with
//! their keys (see `dispatch::group_member::key_order` for how they hold changes back).
//!
//! Read once the member has received its first delivery under the new pin: from then on the
//! server delivers nothing to the member before, so the consumer's last delivered sequence
//! bounds whatever that member may still be working on. The range runs from the consumer's ack
//! floor (everything up to it is settled) to that sequence. Each of its sequences in the
//! partition is read from the group's stream for its key (`STREAM.MSG.GET` with
//! `next_by_subj`, answered by the stream's leader, so one request per change of the
//! partition): sequences acknowledged out of order are read too, and held back on until the ack
//! floor passes them. A range longer than [`MOST_KEYS_READ`] is read in part; the rest is
//! returned as a span of unknown keys, which holds back everything above it.

use std::time::Duration;

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};

use super::layout::{split_subject, GroupLayout};

/// The most changes whose keys are read at a takeover: a longer old range (a key retrying for
/// long while the member before handled thousands of others) is held back on whole above that.
pub(crate) const MOST_KEYS_READ: usize = 2_048;
/// How long the whole read may take before the rest of the range counts as unknown.
const READ_FOR: Duration = Duration::from_secs(2);
/// How long the consumer's position is waited for: the partition's loop waits meanwhile, and a
/// consumer electing a leader does not answer (the request timeout is seconds); it is asked
/// again soon after.
const POSITION_WITHIN: Duration = Duration::from_millis(500);

/// A partition's unsettled changes from before the takeover.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OldRange {
    /// Every sequence up to it is settled.
    pub(crate) ack_floor: u64,
    /// The sequences above the floor with their keys.
    pub(crate) keys: Vec<(u64, String)>,
    /// `(after, up_to]`: the part of the range whose keys were not read.
    pub(crate) unknown: Option<(u64, u64)>,
}

/// The consumer's ack floor and last delivered stream sequence.
pub(crate) async fn consumer_position(
    stream: &Stream,
    partition: u16,
) -> Result<(u64, u64), async_nats::Error> {
    let info = tokio::time::timeout(
        POSITION_WITHIN,
        stream.consumer_info(GroupLayout::consumer(partition)),
    )
    .await
    .map_err(|_| format!("no answer within {POSITION_WITHIN:?}"))??;
    Ok((
        info.ack_floor.stream_sequence,
        info.delivered.stream_sequence,
    ))
}

/// Reads `partition`'s old range (see the module's documentation).
pub(crate) async fn old_range(
    stream: &Stream,
    partition: u16,
) -> Result<OldRange, async_nats::Error> {
    let (ack_floor, delivered) = consumer_position(stream, partition).await?;
    let filter = GroupLayout::partition_filter(partition);
    let deadline = tokio::time::Instant::now() + READ_FOR;
    let mut range = OldRange {
        ack_floor,
        ..OldRange::default()
    };
    let mut next = ack_floor + 1;
    while next <= delivered {
        if range.keys.len() >= MOST_KEYS_READ {
            range.unknown = Some((next - 1, delivered));
            break;
        }
        let read = tokio::time::timeout_at(
            deadline,
            stream.get_first_raw_message_by_subject(&filter, next),
        )
        .await;
        let message = match read {
            Ok(Ok(message)) => message,
            // Nothing of the partition at or after `next`: the stream lost it (a limit, a purge).
            Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
            Ok(Err(error)) => {
                tracing::debug!(partition, error = %error, "reading the old range's keys");
                range.unknown = Some((next - 1, delivered));
                break;
            }
            Err(_) => {
                range.unknown = Some((next - 1, delivered));
                break;
            }
        };
        if message.sequence > delivered {
            break;
        }
        if let Some((_, key)) = split_subject(&message.subject) {
            range.keys.push((message.sequence, key.to_owned()));
        }
        next = message.sequence + 1;
    }
    Ok(range)
}
