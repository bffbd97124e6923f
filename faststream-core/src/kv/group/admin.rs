//! `KvGroup`: what an operator sees of a group, and how to clean it up.

use std::time::SystemTime;

use async_nats::jetstream;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::dead_letters::{self, DeadLetter};
use super::declare::{is_not_found, META_PARTITIONS, META_PATTERN, META_SESSION};
use super::layout::{GroupLayout, PRIORITY_GROUP};
use super::roster::{self, Listed};
use crate::error::{Error, GroupError, Result};
use crate::kv::message::Operation;

/// A consumer group on a bucket, as an operator sees it: members, partitions, pending work and
/// the changes given up. From [`NatsBroker::kv_group`](crate::NatsBroker::kv_group).
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// let group = broker.kv_group("shop", "billing").await?;
/// let info = group.info().await?;
/// println!("{} members, {} changes pending", info.members.len(), info.pending());
/// for letter in group.dead_letters().await? {
///     println!("{} revision {} failed: {}", letter.key, letter.revision, letter.error);
///     group.replay(letter.sequence).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KvGroup {
    context: jetstream::Context,
    layout: GroupLayout,
}

/// A group's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The key pattern the group handles.
    pub pattern: String,
    /// The members heard from within the last session timeout (by the server's clock), sorted
    /// by id.
    pub members: Vec<MemberInfo>,
    /// Every partition, in order.
    pub partitions: Vec<PartitionInfo>,
    /// How many changes were given up and are kept as dead letters.
    pub dead_letters: u64,
}

impl GroupInfo {
    /// Changes not yet handled, over all partitions (in flight or waiting).
    pub fn pending(&self) -> u64 {
        self.partitions
            .iter()
            .map(|partition| partition.pending + partition.in_flight)
            .sum()
    }

    /// Whether exactly `members` members share the work evenly: every partition assigned to
    /// exactly one of them, and no member holding two more than another. What a fleet reaches
    /// once joins and departures have settled; for a deployment check or a test waiting for it.
    pub fn is_balanced(&self, members: usize) -> bool {
        if self.members.len() != members {
            return false;
        }
        let mut assigned: Vec<u16> = self
            .members
            .iter()
            .flat_map(|member| member.partitions.iter().copied())
            .collect();
        assigned.sort_unstable();
        let every_partition_once = assigned.len() == self.partitions.len()
            && assigned
                .iter()
                .zip(0u16..)
                .all(|(assigned, partition)| *assigned == partition);
        let sizes = self.members.iter().map(|member| member.partitions.len());
        let spread = sizes
            .clone()
            .max()
            .zip(sizes.min())
            .is_some_and(|(max, min)| max - min <= 1);
        every_partition_once && spread
    }
}

/// One member of a group, as its last heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The member's id: host, process id and a unique suffix.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The partitions assigned to it.
    pub partitions: Vec<u16>,
    /// The partitions the server has pinned to it.
    pub pinned: Vec<u16>,
    /// When its last heartbeat was stored, by the server's clock.
    pub last_seen: SystemTime,
}

/// One partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// The partition's number.
    pub partition: u16,
    /// The member the server has pinned it to, if any (matched by the pin id members report).
    pub pinned_to: Option<String>,
    /// Changes waiting to be delivered.
    pub pending: u64,
    /// Changes delivered and not yet settled (0 or 1).
    pub in_flight: u64,
    /// Of the changes in flight, those delivered more than once (0 or 1): a retry under way.
    /// Not a running total: back to 0 once the change is settled.
    pub redelivered: u64,
    /// The bucket revision of the last change settled.
    pub last_settled_revision: u64,
}

impl KvGroup {
    pub(crate) async fn open(
        context: jetstream::Context,
        bucket: &str,
        group: &str,
    ) -> Result<Self> {
        let layout = GroupLayout::new(bucket, group);
        let this = Self { context, layout };
        this.stream().await?;
        Ok(this)
    }

    fn error(&self, source: GroupError) -> Error {
        Error::Group {
            bucket: self.layout.bucket.clone(),
            group: self.layout.group.clone(),
            source: Box::new(source),
        }
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream> {
        match self.context.get_stream(&self.layout.stream).await {
            Ok(stream) => Ok(stream),
            Err(error) if is_not_found(&error) => Err(self.error(GroupError::NotFound {
                stream: self.layout.stream.clone(),
            })),
            Err(error) => Err(self.error(GroupError::Stream {
                operation: "look up",
                stream: self.layout.stream.clone(),
                source: Box::new(error),
            })),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.layout.group
    }

    /// The bucket it handles.
    pub fn bucket(&self) -> &str {
        &self.layout.bucket
    }

    /// Members, partition assignment, pending work and the number of dead letters.
    ///
    /// Every lookup that fails is an error ([`Error::Group`], its source the step that
    /// failed), as is an entry of the members bucket that is not a heartbeat
    /// ([`GroupError::Members`], naming the entry): nothing is reported as 0 or as an empty
    /// member. Only the dead-letter stream's absence counts as 0 dead letters.
    pub async fn info(&self) -> Result<GroupInfo> {
        let stream = self.stream().await?;
        let metadata = &stream.cached_info().config.metadata;
        let pattern = metadata.get(META_PATTERN).cloned().unwrap_or_default();
        let partitions: u16 = metadata
            .get(META_PARTITIONS)
            .and_then(|count| count.parse().ok())
            .unwrap_or_default();
        let session = metadata
            .get(META_SESSION)
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis)
            .unwrap_or(super::DEFAULT_SESSION_TIMEOUT);
        let members = roster::live_members(&self.context, &self.layout.members_bucket, session)
            .await
            .map_err(|source| {
                self.error(GroupError::Members {
                    operation: "read",
                    bucket: self.layout.members_bucket.clone(),
                    source: Box::new(source),
                })
            })?;
        let mut infos = Vec::with_capacity(usize::from(partitions));
        for partition in 0..partitions {
            let mut consumer: jetstream::consumer::PullConsumer = stream
                .get_consumer(&GroupLayout::consumer(partition))
                .await
                .map_err(|source| {
                    self.error(GroupError::Consumer {
                        operation: "read",
                        partition,
                        source,
                    })
                })?;
            let info = consumer.info().await.map_err(|source| {
                self.error(GroupError::Consumer {
                    operation: "read",
                    partition,
                    source: Box::new(source),
                })
            })?;
            let pin = info
                .priority_groups
                .iter()
                .find(|group| group.group == PRIORITY_GROUP)
                .and_then(|group| group.pinned_client_id.clone());
            let pinned_to = pin.and_then(|pin| {
                members
                    .iter()
                    .find(|member| {
                        member
                            .heartbeat
                            .pinned
                            .iter()
                            .any(|(held, id)| *held == partition && *id == pin)
                    })
                    .map(|member| member.id.clone())
            });
            infos.push(PartitionInfo {
                partition,
                pinned_to,
                pending: info.num_pending,
                in_flight: u64::try_from(info.num_ack_pending).unwrap_or_default(),
                redelivered: u64::try_from(info.num_redelivered).unwrap_or_default(),
                last_settled_revision: info.ack_floor.stream_sequence,
            });
        }
        let dead_letters = match self.dead_stream().await? {
            Some(dead) => dead.cached_info().state.messages,
            None => 0,
        };
        Ok(GroupInfo {
            pattern,
            members: members.into_iter().map(member_info).collect(),
            partitions: infos,
            dead_letters,
        })
    }

    /// The dead-letter stream; `None` if it does not exist (nothing was ever given up in a
    /// group whose stream was deleted by hand), an error if the lookup failed.
    async fn dead_stream(&self) -> Result<Option<jetstream::stream::Stream>> {
        match self.context.get_stream(&self.layout.dead_stream).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(self.error(GroupError::Stream {
                operation: "look up",
                stream: self.layout.dead_stream.clone(),
                source: Box::new(error),
            })),
        }
    }

    /// The changes given up, oldest first: all of them, or an error. They are read with a
    /// short-lived consumer of the dead-letter stream, a pull request per few hundred letters.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let Some(stream) = self.dead_stream().await? else {
            return Ok(Vec::new());
        };
        dead_letters::read_all(&stream, &self.layout)
            .await
            .map_err(|source| {
                self.error(GroupError::Stream {
                    operation: "read",
                    stream: self.layout.dead_stream.clone(),
                    source: Box::new(source),
                })
            })
    }

    /// Replays a dead letter: writes its change to its key again, as a new revision the group
    /// handles like any change, but only if the key has not changed since (else the newer
    /// value would be overwritten: an error says so). Then discards it. A value is put again, a
    /// deletion deleted again and a purge purged again; an expiry cannot be written (the server
    /// writes expiries when a key's time to live ends), so replaying one is refused: discard it.
    /// Returns the new revision of a value, 0 for a deletion or a purge.
    pub async fn replay(&self, sequence: u64) -> Result<u64> {
        let replay_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            self.error(GroupError::DeadLetter {
                operation: "replay",
                sequence,
                source,
            })
        };
        let no_such_letter = || replay_error("no such dead letter".into());
        let stream = self.dead_stream().await?.ok_or_else(no_such_letter)?;
        let stored = match stream.get_raw_message(sequence).await {
            Ok(stored) => stored,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Err(no_such_letter())
            }
            Err(error) => return Err(replay_error(Box::new(error))),
        };
        if self.layout.key_of_dead(&stored.subject).is_none() {
            return Err(no_such_letter());
        }
        let letter = dead_letters::from_parts(
            &self.layout,
            stored.sequence,
            &stored.subject,
            Some(&stored.headers),
            stored.payload,
        );
        let store = self
            .context
            .get_key_value(&self.layout.bucket)
            .await
            .map_err(|error| replay_error(Box::new(error)))?;
        let revision =
            match letter.operation {
                Operation::Put => store
                    .update(&letter.key, letter.value.clone(), letter.revision)
                    .await
                    .map_err(|error| replay_error(Box::new(error)))?,
                Operation::Delete => {
                    store
                        .delete_expect_revision(&letter.key, Some(letter.revision))
                        .await
                        .map_err(|error| replay_error(Box::new(error)))?;
                    0
                }
                Operation::Purge => {
                    store
                        .purge_expect_revision(&letter.key, Some(letter.revision))
                        .await
                        .map_err(|error| replay_error(Box::new(error)))?;
                    0
                }
                Operation::Expired => return Err(replay_error(
                    "an expiry cannot be written again (the server writes expiries); discard the \
                     letter instead"
                        .into(),
                )),
            };
        self.discard(sequence).await?;
        Ok(revision)
    }

    /// Removes a dead letter.
    pub async fn discard(&self, sequence: u64) -> Result<()> {
        let discard_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            self.error(GroupError::DeadLetter {
                operation: "discard",
                sequence,
                source,
            })
        };
        let stream = self
            .context
            .get_stream(&self.layout.dead_stream)
            .await
            .map_err(|error| discard_error(Box::new(error)))?;
        stream
            .delete_message(sequence)
            .await
            .map_err(|error| discard_error(Box::new(error)))?;
        Ok(())
    }

    /// Deletes the group and everything it made on the server: its mirror (with the partition
    /// consumers and the progress they hold), the members bucket and the dead letters. Members
    /// still running fail their pulls and log it; stop them first.
    pub async fn delete(&self) -> Result<()> {
        for stream in [
            &self.layout.stream,
            &format!("KV_{}", self.layout.members_bucket),
            &format!("KV_{}", self.layout.handbacks_bucket),
            &self.layout.dead_stream,
        ] {
            match self.context.delete_stream(stream).await {
                Ok(_) => {}
                Err(error)
                    if matches!(error.kind(),
                        jetstream::context::DeleteStreamErrorKind::JetStream(js)
                            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
                Err(error) => {
                    return Err(self.error(GroupError::Stream {
                        operation: "delete",
                        stream: stream.clone(),
                        source: Box::new(error),
                    }))
                }
            }
        }
        Ok(())
    }
}

fn member_info(member: Listed) -> MemberInfo {
    MemberInfo {
        id: member.id,
        host: member.heartbeat.host,
        pid: member.heartbeat.pid,
        partitions: member.heartbeat.partitions,
        pinned: member
            .heartbeat
            .pinned
            .iter()
            .map(|(partition, _)| *partition)
            .collect(),
        last_seen: member.stored,
    }
}
