//! A group whose bucket is deleted and created again: the group starts over on the new bucket,
//! as a plain watch does.
//!
//! The group's stream is a mirror of the bucket's stream `KV_<bucket>`. Left alone, it would
//! outlive the bucket with its last sequence and the partitions' progress, and resume on the
//! new bucket after the old one's last sequence: the new bucket's first revisions would never
//! be copied. So the identity of the bucket's stream (its creation time, on the server's clock)
//! is recorded in the group stream's metadata when the group is declared, and:
//! - a member declaring the group finds it recorded with another identity;
//! - running members look the bucket's stream up once per session timeout, and every 250 ms
//!   while a lookup goes unanswered or the group's mirror is quiet (one stream info request
//!   each, with one of the group's stream), and compare (and, while it is the same, look at
//!   the group's mirror with it: `mirror`).
//!
//! Then the group's stream is deleted and declared again on the new bucket, copying everything
//! the new bucket holds: it was all written while the group ran. The hand-back counts go too
//! (they are of the old bucket's revisions, which the new one's reuse); the dead letters and the
//! members stay. Every member's partition loops carry on by themselves: their pulls on the
//! deleted consumers end, the new consumers of the same names answer the next ones, and a pin
//! of the old consumer is refused there, so each member pulls again without it.
//!
//! One member does it: the first of the live members (the order the assignment uses), or any
//! of them once it has waited two checks for that one. It is idempotent: the group stream's
//! identity is checked again just before deleting, so a member that finds the group already on
//! the new bucket leaves it alone, and one finding it gone creates it (or joins the one another
//! member created meanwhile).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::DeleteStreamErrorKind;
use async_nats::jetstream::{self, stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::declare::{
    create_consumers, create_stream, is_not_found, look_up, stream_error, GroupSpec, Origin,
};
use super::membership::Assignment;
use super::mirror::{MirrorCheck, QUICK_CHECK};
use crate::error::{chain, GroupError};

/// Where the group's stream records the identity of the bucket's stream it copies.
const META_BUCKET_CREATED: &str = "faststream.group.bucket_created_ns";
/// How many checks a member waits for the first member to start the group over.
const CHECKS_LEFT_TO_FIRST: u32 = 2;
/// The longest wait for the answer to a lookup (less if the session timeout is shorter).
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// The identity of a bucket's stream: when the server created it, in nanoseconds since the
/// Unix epoch. A bucket deleted and created again has another, whatever its name and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketIdentity {
    created_ns: i128,
}

impl BucketIdentity {
    pub(crate) fn of(info: &stream::Info) -> Self {
        Self {
            created_ns: info.created.unix_timestamp_nanos(),
        }
    }

    /// Its entry in the group stream's metadata.
    pub(crate) fn metadata(self) -> (String, String) {
        (META_BUCKET_CREATED.to_owned(), self.created_ns.to_string())
    }
}

/// The identity of the bucket's stream recorded in the group's stream, if any (a group declared
/// by an earlier version has none).
pub(crate) fn recorded(group_stream: &stream::Info) -> Option<BucketIdentity> {
    let created_ns = group_stream
        .config
        .metadata
        .get(META_BUCKET_CREATED)?
        .parse()
        .ok()?;
    Some(BucketIdentity { created_ns })
}

/// Records `identity` in a group stream that has none (declared by an earlier version). Best
/// effort: if the update fails, the group goes on unchecked.
pub(crate) async fn record(
    jetstream: &jetstream::Context,
    group_stream: stream::Stream,
    identity: &BucketIdentity,
) -> stream::Stream {
    let mut config = group_stream.cached_info().config.clone();
    let name = config.name.clone();
    config.metadata.extend([identity.metadata()]);
    match jetstream.update_stream(config).await {
        Ok(_) => {}
        Err(error) => tracing::warn!(stream = %name, error = %chain(&error),
            "could not record the bucket's identity in the group's stream; a re-created \
             bucket will not be noticed"),
    }
    group_stream
}

/// Deletes the group's stream, unless it was started over on `bucket` already, and declares it
/// again there. `previous` is the identity the caller found recorded.
pub(crate) async fn start_over(
    jetstream: &jetstream::Context,
    bucket: &stream::Stream,
    spec: &GroupSpec,
    previous: &BucketIdentity,
) -> Result<stream::Stream, GroupError> {
    let identity = BucketIdentity::of(bucket.cached_info());
    let layout = &spec.layout;
    // Checked again just before deleting: another member may have started it over meanwhile.
    match look_up(jetstream, &layout.stream).await {
        Ok(stream) if recorded(stream.cached_info()) == Some(identity) => return Ok(stream),
        Ok(_) => match jetstream.delete_stream(&layout.stream).await {
            Ok(_) => {}
            Err(error)
                if matches!(error.kind(), DeleteStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
            Err(error) => return Err(stream_error("delete", &layout.stream, error)),
        },
        Err(error) if is_not_found(&error) => {}
        Err(error) => return Err(stream_error("look up", &layout.stream, error)),
    }
    let handbacks = format!("KV_{}", layout.handbacks_bucket);
    if let Ok(stream) = jetstream.get_stream(&handbacks).await {
        if let Err(error) = stream.purge().await {
            tracing::warn!(stream = %handbacks, error = %chain(&error),
                "could not clear the hand-back counts of the old bucket; a change of the new \
                 one with the same revision may be given fewer attempts");
        }
    }
    let stream = create_stream(jetstream, bucket, spec, Origin::StartedOver).await?;
    create_consumers(&stream, spec).await?;
    tracing::warn!(bucket = %layout.bucket, group = %layout.group,
        previous_created_ns = previous.created_ns, created_ns = identity.created_ns,
        "bucket `{}` was deleted and created again: consumer group `{}` starts over on it, \
         with every change it holds; its progress on the old bucket is dropped, its dead \
         letters are kept", layout.bucket, layout.group);
    Ok(stream)
}

/// A running member's check that the bucket was not replaced; [`run`](Self::run) until
/// cancelled.
pub(crate) struct ReplacementCheck {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) spec: GroupSpec,
    /// The bucket's stream the group copies, as far as this member knows.
    pub(crate) bucket: BucketIdentity,
    pub(crate) member: Arc<str>,
    pub(crate) assignment: watch::Receiver<Assignment>,
    pub(crate) mirror: MirrorCheck,
}

impl ReplacementCheck {
    /// Checks once per session timeout until `cancel` fires, every [`QUICK_CHECK`] while the
    /// last check found something not well (a lookup unanswered, the mirror not heard from
    /// lately).
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let every = self.spec.settings.session_timeout;
        let quick = QUICK_CHECK.min(every);
        // Lookups answered within two quick checks: one unanswered (a stream electing a
        // leader) would otherwise hold the next checks for the request timeout (10 s by
        // default), and after the election the next lookup is at most 750 ms away.
        let mut lookups = self.jetstream.clone();
        lookups.set_timeout(LOOKUP_TIMEOUT.min(every));
        let mut waited = 0;
        let mut next = every;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(next) => {
                    let well = self.check(&lookups, &mut waited, every).await;
                    next = if well { every } else { quick };
                }
            }
        }
    }

    /// One check; whether all was well.
    async fn check(
        &mut self,
        lookups: &jetstream::Context,
        waited: &mut u32,
        every: Duration,
    ) -> bool {
        let layout = &self.spec.layout;
        let name = format!("KV_{}", layout.bucket);
        // Both at once: the mirror's silence is timed while the bucket's stream elects a leader,
        // and a check waits for one lookup's timeout at most.
        let (mirror, bucket) =
            futures_util::join!(self.mirror.look(lookups, layout), lookups.get_stream(&name));
        // A bucket missing (deleted, not yet created again) is waited for.
        let bucket = match bucket {
            Ok(bucket) => bucket,
            Err(error) => {
                tracing::debug!(stream = %name, error = %chain(&error),
                    "could not look the group's bucket up");
                self.mirror.bucket_unanswered(mirror);
                return false;
            }
        };
        let identity = BucketIdentity::of(bucket.cached_info());
        if identity == self.bucket {
            *waited = 0;
            let first = self.assignment.borrow().members.first().cloned();
            let first = first.is_none_or(|first| first == self.member);
            let Some(mirror) = mirror else {
                return false;
            };
            return self
                .mirror
                .restart_if_stalled(lookups, layout, mirror, bucket.cached_info(), first)
                .await;
        }
        if let Ok(stream) = self.jetstream.get_stream(&layout.stream).await {
            if recorded(stream.cached_info()) == Some(identity) {
                tracing::info!(bucket = %layout.bucket, group = %layout.group, member = %self.member,
                    "consumer group `{}` was started over on the re-created bucket by another member",
                    layout.group);
                self.bucket = identity;
                *waited = 0;
                return true;
            }
        }
        let first = self.assignment.borrow().members.first().cloned();
        if first.is_some_and(|first| first != self.member) && *waited < CHECKS_LEFT_TO_FIRST {
            *waited += 1;
            tracing::debug!(bucket = %layout.bucket, group = %layout.group,
                "bucket re-created; waiting for the first member to start the group over");
            return true;
        }
        match start_over(&self.jetstream, &bucket, &self.spec, &self.bucket).await {
            Ok(_) => {
                self.bucket = identity;
                *waited = 0;
            }
            Err(error) => tracing::warn!(bucket = %layout.bucket, group = %layout.group,
                error = %chain(&error), retry_in = ?every,
                "could not start the group over on the re-created bucket"),
        }
        true
    }
}
