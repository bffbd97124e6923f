//! Creating a group on the server, or joining the one that exists: its partitioned mirror of
//! the bucket, one consumer per partition, the members bucket, the hand-backs bucket and the
//! dead-letter stream.
//!
//! Every step is idempotent, so members starting together all succeed. What the group was
//! created with is recorded in its stream's metadata; a member with other settings is refused
//! with every difference named, rather than quietly watching something else. The identity of
//! the bucket's stream is recorded there too: a group found on a bucket deleted and created
//! again since is started over on it (`kv::group::replaced`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PriorityPolicy};
use async_nats::jetstream::context::{
    CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::stream::{
    self, DiscardPolicy, RetentionPolicy, Source, SubjectTransform,
};
use async_nats::jetstream::{self, kv};

use super::layout::{GroupLayout, PRIORITY_GROUP};
use super::replaced::{self, BucketIdentity};
use super::settings::GroupSettings;
use crate::error::GroupError;
use crate::kv::start_at::StartAt;

/// How many dead letters a group keeps before the oldest go.
pub(crate) const DEAD_LETTERS_KEPT: i64 = 100_000;
/// How long a new group waits for its mirror to copy the bucket before creating its consumers
/// (so that "the latest value of each key" is taken over the whole bucket).
const MIRROR_CATCH_UP: Duration = Duration::from_secs(10);
/// How long a lookup of the group's stream is retried while it goes unanswered (each attempt
/// waits for the request timeout, 5 s by default).
const LOOKUP_RETRY: Duration = Duration::from_secs(30);

const META_BUCKET: &str = "faststream.group.bucket";
const META_GROUP: &str = "faststream.group.name";
pub(crate) const META_PATTERN: &str = "faststream.group.pattern";
const META_START: &str = "faststream.group.start";
pub(crate) const META_PARTITIONS: &str = "faststream.group.partitions";
pub(crate) const META_SESSION: &str = "faststream.group.session_timeout_ms";

/// What a member asks of its group.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub(crate) layout: GroupLayout,
    /// The key pattern as written (`orders.{id}`).
    pub(crate) pattern: String,
    /// Its NATS filter (`orders.*`).
    pub(crate) filter: String,
    pub(crate) start: StartAt,
    pub(crate) settings: GroupSettings,
}

impl GroupSpec {
    /// The settings recorded when the group is created, by metadata key, with a label for
    /// error messages.
    fn recorded(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            (META_BUCKET, "bucket", self.layout.bucket.clone()),
            (META_GROUP, "group", self.layout.group.clone()),
            (META_PATTERN, "key pattern", self.pattern.clone()),
            (META_START, "start", start_name(self.start).to_owned()),
            (
                META_PARTITIONS,
                "partitions",
                self.settings.partitions.to_string(),
            ),
            (
                META_SESSION,
                "session_timeout (ms)",
                self.settings.session_timeout.as_millis().to_string(),
            ),
        ]
    }
}

fn start_name(start: StartAt) -> &'static str {
    match start {
        StartAt::LatestPerKey => "latest value of each key",
        StartAt::Beginning => "include_history",
        StartAt::NewOnly => "updates_only",
    }
}

/// The server objects of a joined group.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredGroup {
    pub(crate) stream: stream::Stream,
    pub(crate) members: kv::Store,
    pub(crate) handbacks: kv::Store,
    /// What the group was declared with, to declare it again on a replaced bucket.
    pub(crate) spec: GroupSpec,
    /// The bucket's stream the group's mirror copies.
    pub(crate) bucket: BucketIdentity,
}

/// Why the group's stream is being created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A new group: it starts where its `start` says.
    New,
    /// The group ran on a bucket that was deleted and created again: everything the new bucket
    /// holds was written while the group ran, so all of it is copied (as much history per key
    /// as the bucket keeps), whatever the group's `start`.
    StartedOver,
}

/// Creates the group if it does not exist, else checks it was created with `spec`'s settings.
/// `bucket` is the watched bucket's stream.
pub(crate) async fn declare(
    jetstream: &jetstream::Context,
    bucket: &stream::Stream,
    spec: &GroupSpec,
) -> Result<DeclaredGroup, GroupError> {
    let bucket_config = &bucket.cached_info().config;
    let identity = BucketIdentity::of(bucket.cached_info());
    let layout = &spec.layout;
    let stream = match look_up(jetstream, &layout.stream).await {
        Ok(stream) => {
            check_recorded(&stream, spec)?;
            match replaced::recorded(stream.cached_info()) {
                Some(recorded) if recorded != identity => {
                    replaced::start_over(jetstream, bucket, spec, &recorded).await?
                }
                Some(_) => stream,
                None => replaced::record(jetstream, stream, &identity).await,
            }
        }
        Err(error) if is_not_found(&error) => {
            create_stream(jetstream, bucket, spec, Origin::New).await?
        }
        Err(error) => return Err(stream_error("look up", &layout.stream, error)),
    };
    create_consumers(&stream, spec).await?;
    let replicas = bucket_config.num_replicas;
    // Gone after a few missed beats: a member's key is refreshed every fifth of the session
    // timeout, so a dead member's key does not stay for ever.
    let members = kv_bucket(
        jetstream,
        kv::Config {
            bucket: layout.members_bucket.clone(),
            description: format!("faststream group `{}`: members", layout.group),
            history: 1,
            max_age: spec.settings.session_timeout * 4,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|source| GroupError::Members {
        operation: "create",
        bucket: layout.members_bucket.clone(),
        source: Box::new(source),
    })?;
    // No age limit: a count must last until its change is delivered again, which may be
    // after a backoff, or after every member was stopped for a while.
    let handbacks = kv_bucket(
        jetstream,
        kv::Config {
            bucket: layout.handbacks_bucket.clone(),
            description: format!(
                "faststream group `{}`: deliveries handed back without a call, per partition",
                layout.group
            ),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|source| stream_error("create", &format!("KV_{}", layout.handbacks_bucket), source))?;
    dead_stream(jetstream, layout, replicas).await?;
    Ok(DeclaredGroup {
        stream,
        members,
        handbacks,
        spec: spec.clone(),
        bucket: identity,
    })
}

/// Looks a stream up, retrying for up to [`LOOKUP_RETRY`] while the request goes unanswered:
/// in a cluster, the info request for a stream another member is creating (or whose leader is
/// being elected) can time out rather than fail, and members start together.
pub(super) async fn look_up(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<stream::Stream, jetstream::context::GetStreamError> {
    let started = Instant::now();
    loop {
        match jetstream.get_stream(name).await {
            Err(error)
                if matches!(error.kind(), GetStreamErrorKind::Request)
                    && started.elapsed() < LOOKUP_RETRY =>
            {
                tracing::debug!(stream = name, error = %error, "looking up the group's stream; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            looked_up => return looked_up,
        }
    }
}

/// Whether a stream lookup failed because the stream does not exist.
pub(crate) fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

pub(super) fn stream_error(
    operation: &'static str,
    stream: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> GroupError {
    GroupError::Stream {
        operation,
        stream: stream.to_owned(),
        source: Box::new(source),
    }
}

fn check_recorded(stream: &stream::Stream, spec: &GroupSpec) -> Result<(), GroupError> {
    let metadata = &stream.cached_info().config.metadata;
    if !metadata.contains_key(META_GROUP) {
        return Err(GroupError::NotAGroup {
            stream: spec.layout.stream.clone(),
        });
    }
    let differences = differences(metadata, spec);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(GroupError::SettingsDiffer { differences })
    }
}

fn differences(metadata: &HashMap<String, String>, spec: &GroupSpec) -> Vec<String> {
    spec.recorded()
        .into_iter()
        .filter_map(|(key, label, ours)| {
            let theirs = metadata.get(key).map_or("(none)", String::as_str);
            (theirs != ours)
                .then(|| format!("{label}: the group has `{theirs}`, this member `{ours}`"))
        })
        .collect()
}

pub(super) async fn create_stream(
    jetstream: &jetstream::Context,
    bucket: &stream::Stream,
    spec: &GroupSpec,
    origin: Origin,
) -> Result<stream::Stream, GroupError> {
    let layout = &spec.layout;
    let bucket_info = bucket.cached_info();
    let bucket_config = &bucket_info.config;
    let (src, dest) = layout.transform(&spec.filter, spec.settings.partitions);
    // Updates only: the mirror starts after the bucket's last message as of now.
    let start_sequence = if spec.start == StartAt::NewOnly && origin == Origin::New {
        let last = match bucket.clone().info().await {
            Ok(info) => info.state.last_sequence,
            Err(_) => bucket_info.state.last_sequence,
        };
        Some(last + 1)
    } else {
        None
    };
    let config = stream::Config {
        name: layout.stream.clone(),
        description: Some(format!(
            "faststream consumer group `{}`: `{}` of bucket `{}` in {} partitions",
            layout.group, spec.pattern, layout.bucket, spec.settings.partitions
        )),
        mirror: Some(Source {
            name: bucket_info.config.name.clone(),
            start_sequence,
            subject_transforms: vec![SubjectTransform {
                source: src,
                destination: dest,
            }],
            ..Default::default()
        }),
        retention: RetentionPolicy::Limits,
        // As much as the bucket keeps: its history per key and its age limit; starting from
        // the latest value of each key, one per key until the bucket's state is copied.
        max_messages_per_subject: if spec.start == StartAt::LatestPerKey && origin == Origin::New {
            1
        } else {
            bucket_config.max_messages_per_subject
        },
        max_age: bucket_config.max_age,
        storage: bucket_config.storage,
        num_replicas: bucket_config.num_replicas,
        discard: DiscardPolicy::Old,
        metadata: spec
            .recorded()
            .into_iter()
            .map(|(key, _, value)| (key.to_owned(), value))
            .chain([BucketIdentity::of(bucket_info).metadata()])
            .collect(),
        ..Default::default()
    };
    let history = bucket_config.max_messages_per_subject;
    let stream = match jetstream.create_stream(config.clone()).await {
        Ok(stream) => stream,
        // Another member created it meanwhile, perhaps with other settings.
        Err(create_error) => match look_up(jetstream, &layout.stream).await {
            Ok(stream) => {
                check_recorded(&stream, spec)?;
                return Ok(stream);
            }
            Err(_) => return Err(stream_error("create", &layout.stream, create_error)),
        },
    };
    wait_for_mirror(stream.clone(), &layout.stream).await;
    if config.max_messages_per_subject != history {
        // The latest value of each key is copied: from now on keep what the bucket keeps.
        let config = stream::Config {
            max_messages_per_subject: history,
            ..config
        };
        return jetstream
            .update_stream(config)
            .await
            .map_err(|source| stream_error("update", &layout.stream, source))
            .map(|_| stream);
    }
    Ok(stream)
}

/// Waits, boundedly, until the new mirror has copied what the bucket holds.
async fn wait_for_mirror(mut stream: stream::Stream, name: &str) {
    let started = Instant::now();
    while started.elapsed() < MIRROR_CATCH_UP {
        if let Ok(info) = stream.info().await {
            if let Some(mirror) = &info.mirror {
                if mirror.active.is_some() && mirror.lag == 0 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(stream = name, waited = ?MIRROR_CATCH_UP,
        "the group's mirror has not copied the bucket yet; its consumers start anyway");
}

/// The consumer of each partition: `in_flight` changes unacknowledged at most (the members keep
/// each key's changes in order among them, retries included), one pinned member at a time. A
/// group's consumers keep the value they were created with (groups created before the setting
/// existed: 1); a member asking another is told so once, and follows the consumers.
pub(super) async fn create_consumers(
    stream: &stream::Stream,
    spec: &GroupSpec,
) -> Result<(), GroupError> {
    let settings = &spec.settings;
    // Where the group starts is the mirror's business (one revision per key until the state is
    // copied; or from after the bucket's last message): the consumers deliver all it holds.
    // Not "deliver last per subject": nats-server 2.15.1 was seen to apply that policy again
    // after a consumer's leader changed, skipping changes not yet delivered.
    let deliver_policy = DeliverPolicy::All;
    let creations = (0..settings.partitions).map(|partition| {
        let config = pull::Config {
            durable_name: Some(GroupLayout::consumer(partition)),
            description: Some(format!(
                "faststream group `{}`, partition {partition}",
                spec.layout.group
            )),
            filter_subject: GroupLayout::partition_filter(partition),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: settings.session_timeout,
            max_deliver: -1,
            max_ack_pending: i64::from(settings.in_flight),
            priority_groups: vec![PRIORITY_GROUP.to_owned()],
            priority_policy: PriorityPolicy::PinnedClient,
            priority_timeout: settings.session_timeout,
            ..Default::default()
        };
        async move {
            // As for the lookup: in a cluster a creation can go unanswered (members creating the
            // same consumers at once, an election, a loaded machine); it is idempotent, so asked
            // again.
            let started = Instant::now();
            loop {
                let created = stream
                    .get_or_create_consumer::<pull::Config>(
                        &GroupLayout::consumer(partition),
                        config.clone(),
                    )
                    .await;
                match created {
                    Ok(consumer) => {
                        let kept = consumer.cached_info().config.max_ack_pending;
                        if kept != i64::from(settings.in_flight) && partition == 0 {
                            tracing::warn!(group = %spec.layout.group, kept,
                                asked = settings.in_flight,
                                "the group's consumers keep {kept} changes in flight per \
                                 partition, set when they were created; this member's \
                                 `in_flight` {} is not applied", settings.in_flight);
                        }
                        return Ok(());
                    }
                    Err(error)
                        if matches!(
                            error.kind(),
                            ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request
                        ) && started.elapsed() < LOOKUP_RETRY =>
                    {
                        tracing::debug!(partition, error = %error,
                            "creating a partition consumer; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(source) => {
                        return Err(GroupError::Consumer {
                            operation: "create",
                            partition,
                            source: Box::new(source),
                        })
                    }
                }
            }
        }
    });
    for created in futures_util::future::join_all(creations).await {
        created?;
    }
    Ok(())
}

/// Opens the Key-Value bucket `config` describes, creating it if it does not exist.
async fn kv_bucket(
    jetstream: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    let name = config.bucket.clone();
    if let Ok(store) = jetstream.get_key_value(&name).await {
        return Ok(store);
    }
    let started = Instant::now();
    loop {
        match jetstream.create_key_value(config.clone()).await {
            Ok(store) => return Ok(store),
            Err(create_error) => {
                if let Ok(store) = jetstream.get_key_value(&name).await {
                    return Ok(store);
                }
                let unanswered = create_error.kind() == CreateKeyValueErrorKind::TimedOut;
                if !unanswered || started.elapsed() >= LOOKUP_RETRY {
                    return Err(create_error);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

async fn dead_stream(
    jetstream: &jetstream::Context,
    layout: &GroupLayout,
    replicas: usize,
) -> Result<stream::Stream, GroupError> {
    let config = stream::Config {
        name: layout.dead_stream.clone(),
        description: Some(format!(
            "faststream group `{}`: the changes given up",
            layout.group
        )),
        subjects: vec![layout.dead_subjects()],
        max_messages: DEAD_LETTERS_KEPT,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    };
    let started = Instant::now();
    loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Err(error)
                if error.kind() == CreateStreamErrorKind::TimedOut
                    && started.elapsed() < LOOKUP_RETRY =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            created => {
                return created
                    .map_err(|source| stream_error("create", &layout.dead_stream, source))
            }
        }
    }
}
