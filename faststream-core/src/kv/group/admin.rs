//! `KvGroup`: what an operator sees of a group, and how to clean it up.

use std::time::SystemTime;

use async_nats::jetstream;
use futures_util::StreamExt as _;

use super::dead_letters::{self, DeadLetter};
use super::declare::{is_not_found, META_PARTITIONS, META_PATTERN, META_SESSION};
use super::layout::{GroupLayout, PRIORITY_GROUP};
use super::membership::Heartbeat;
use crate::error::{Error, GroupError, Result};
use crate::kv::message::{system_time, Operation};

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
    /// The members heard from within the last session timeout, sorted by id.
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
    /// When its last heartbeat was stored.
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
    /// Changes delivered more than once so far.
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
        let members = self.members(session).await?;
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
                    .find(|(member, heartbeat)| {
                        heartbeat
                            .pinned
                            .iter()
                            .any(|(held, id)| *held == partition && *id == pin)
                            && !member.id.is_empty()
                    })
                    .map(|(member, _)| member.id.clone())
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
        let dead_letters = match self.context.get_stream(&self.layout.dead_stream).await {
            Ok(mut dead) => dead
                .info()
                .await
                .map(|info| info.state.messages)
                .unwrap_or_default(),
            Err(_) => 0,
        };
        Ok(GroupInfo {
            pattern,
            members: members.into_iter().map(|(member, _)| member).collect(),
            partitions: infos,
            dead_letters,
        })
    }

    /// The members heard from within `session` (the group's session timeout), with their
    /// heartbeats.
    async fn members(&self, session: std::time::Duration) -> Result<Vec<(MemberInfo, Heartbeat)>> {
        let members_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            self.error(GroupError::Members {
                operation: "read",
                bucket: self.layout.members_bucket.clone(),
                source,
            })
        };
        // Read through the stream's subject list and last-message requests: listing the keys
        // the Key-Value way would create a consumer on the server at every call.
        let members_stream = format!("KV_{}", self.layout.members_bucket);
        let stream = self
            .context
            .get_stream(&members_stream)
            .await
            .map_err(|error| members_error(Box::new(error)))?;
        let prefix = format!("$KV.{}.", self.layout.members_bucket);
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|error| members_error(Box::new(error)))?;
        let mut members = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|error| members_error(Box::new(error)))?;
            let Some(key) = subject.strip_prefix(&prefix).map(str::to_owned) else {
                continue;
            };
            let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await else {
                continue;
            };
            if Operation::from_headers(Some(&message.headers)) != Operation::Put {
                continue;
            }
            let last_seen = system_time(message.time);
            let fresh = SystemTime::now()
                .duration_since(last_seen)
                .map_or(true, |age| age < session);
            if !fresh {
                continue;
            }
            let heartbeat: Heartbeat = serde_json::from_slice(&message.payload).unwrap_or_default();
            members.push((
                MemberInfo {
                    id: key,
                    host: heartbeat.host.clone(),
                    pid: heartbeat.pid,
                    partitions: heartbeat.partitions.clone(),
                    pinned: heartbeat
                        .pinned
                        .iter()
                        .map(|(partition, _)| *partition)
                        .collect(),
                    last_seen,
                },
                heartbeat,
            ));
        }
        members.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(members)
    }

    /// The changes given up, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let dead_error = |sequence, source: Box<dyn std::error::Error + Send + Sync>| {
            self.error(GroupError::DeadLetter {
                operation: "read",
                sequence,
                source,
            })
        };
        let mut stream = match self.context.get_stream(&self.layout.dead_stream).await {
            Ok(stream) => stream,
            Err(error) if is_not_found(&error) => return Ok(Vec::new()),
            Err(error) => return Err(dead_error(0, Box::new(error))),
        };
        let state = stream
            .info()
            .await
            .map_err(|error| dead_error(0, Box::new(error)))?
            .state
            .clone();
        let mut letters = Vec::new();
        if state.messages == 0 {
            return Ok(letters);
        }
        for sequence in state.first_sequence..=state.last_sequence {
            match stream.get_raw_message(sequence).await {
                Ok(message) => letters.push(dead_letters::from_stored(&self.layout, message)),
                // Discarded ones leave gaps.
                Err(_) => continue,
            }
        }
        Ok(letters)
    }

    /// Replays a dead letter: writes its value to its key again (a delete for a deletion), as
    /// a new revision the group handles like any change, but only if the key has not changed
    /// since (else the newer value would be overwritten: an error says so). Then discards it.
    pub async fn replay(&self, sequence: u64) -> Result<u64> {
        let letter = self
            .dead_letters()
            .await?
            .into_iter()
            .find(|letter| letter.sequence == sequence)
            .ok_or_else(|| {
                self.error(GroupError::DeadLetter {
                    operation: "replay",
                    sequence,
                    source: "no such dead letter".into(),
                })
            })?;
        let replay_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            self.error(GroupError::DeadLetter {
                operation: "replay",
                sequence,
                source,
            })
        };
        let store = self
            .context
            .get_key_value(&self.layout.bucket)
            .await
            .map_err(|error| replay_error(Box::new(error)))?;
        let revision = match letter.operation {
            Operation::Put => store
                .update(&letter.key, letter.value.clone(), letter.revision)
                .await
                .map_err(|error| replay_error(Box::new(error)))?,
            _ => {
                store
                    .delete_expect_revision(&letter.key, Some(letter.revision))
                    .await
                    .map_err(|error| replay_error(Box::new(error)))?;
                0
            }
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
