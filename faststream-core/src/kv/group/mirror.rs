//! A stalled mirror started again.
//!
//! The group's stream copies the bucket's through a consumer that the server creates on the
//! leader of the bucket's stream. When that node dies the consumer dies with it, and the mirror
//! notices only at its own health check, every 10 s, once it has heard nothing for 10 s: it
//! copies again 10 to 20 s after the node died (nats-server 2.15.1), and meanwhile no partition
//! gets anything, whatever the elections. If the group stream's leader died too, its new leader
//! asks the bucket's stream for a consumer while that stream has no leader either, and tries
//! again only 40 to 50 s later. A new leader of the group's stream sets its mirror up at once,
//! so running members look at the mirror when they look the bucket up (`replaced`): once per
//! session timeout while all is well, every [`QUICK_CHECK`] while something is not (a lookup
//! unanswered, the mirror not heard from lately), so that a stall is seen within about a second
//! of the bucket's stream having a leader again. When the mirror has been silent for
//! [`MIRROR_SILENCE`] (not even the heartbeat its consumer sends every second), or not heard
//! from at all for [`UNHEARD_GRACE`] since its stream's leader was elected (at once if that
//! leader was seen while the bucket's stream had none, or was elected before the bucket's
//! leader: its mirror was set up against nothing),
//! while the bucket holds changes it has not copied, one member asks the group stream's leader to step down: the
//! mirror copies again about a second after the bucket's stream has a leader.
//!
//! The mirror is looked at before the bucket, so the silence is timed while the bucket's stream
//! is still electing its leader: the first lookup of the bucket that is answered can ask at once.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, response::Response, stream};
use time::OffsetDateTime;

use super::layout::GroupLayout;
use crate::error::chain;

/// Three of the heartbeats the mirror's consumer sends every second while the bucket is idle.
const MIRROR_SILENCE: Duration = Duration::from_secs(3);
/// How long a mirror not heard from since its stream's leader was elected, and copying nothing,
/// is given to set itself up (it does in about a second) before it counts as stalled.
const UNHEARD_GRACE: Duration = Duration::from_secs(2);
/// A mirror heard from within this is well; beyond it, checks come every [`QUICK_CHECK`].
const HEARD_LATELY: Duration = Duration::from_millis(1_500);
/// The period of the checks while something is not well.
pub(crate) const QUICK_CHECK: Duration = Duration::from_millis(250);
/// After asking for a step-down, how long to give the new leader before asking again.
const RESTART_PAUSE: Duration = Duration::from_secs(5);
/// How much longer a member other than the first waits before asking itself (the first
/// member's view of the group may be out of date, or it may be gone).
const FIRST_MEMBER_GRACE: Duration = Duration::from_secs(1);

/// What a look at the group's stream found of its mirror.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MirrorSeen {
    /// The group stream's last sequence: the last change copied.
    copied: u64,
    /// Whether the mirror is silent: since when, by this member's clock.
    silent_since: Option<Instant>,
    /// Whether the mirror was heard from within [`HEARD_LATELY`].
    heard_lately: bool,
    /// Whether the mirror has not been heard from since its stream's leader was elected.
    unheard: bool,
    /// Since when the group stream's leader has led, by its clock (nats-server 2.11+).
    leader_since: Option<OffsetDateTime>,
}

impl MirrorSeen {
    /// The mirror seen as stalled from `now` if its stream's leader, not having heard from it,
    /// was elected before the bucket's stream's leader (`bucket_leader_since`): it set the mirror
    /// up while the bucket had no leader, and the server tries again only 40 to 50 s later. Two
    /// servers' clocks are compared: skewed, they cost a step-down not needed (a moment without
    /// changes) or the grace given to a mirror setting itself up, nothing more.
    fn set_up_before(self, bucket_leader_since: Option<OffsetDateTime>, now: Instant) -> Self {
        let before = matches!((self.leader_since, bucket_leader_since),
            (Some(group), Some(bucket)) if group < bucket);
        if self.unheard && self.silent_since.is_none() && before {
            Self {
                silent_since: Some(now),
                ..self
            }
        } else {
            self
        }
    }
}

/// One member's look at the group's mirror, check after check.
#[derive(Debug, Default)]
pub(crate) struct MirrorCheck {
    /// The group stream's last sequence, and since when it has been so, while the mirror has
    /// not been heard from since the stream's leader was elected.
    unheard: Option<(u64, Instant)>,
    /// When this member first found the mirror stalled, this time.
    stalled_seen: Option<Instant>,
    /// Whether the group stream's leader was seen, not yet having heard from its mirror, while
    /// the bucket's stream answered no lookup: that leader set its mirror up against a bucket
    /// without a leader, and the server tries again only 40 to 50 s later.
    set_up_without_bucket: bool,
    /// When this member last asked for a step-down.
    restarted: Option<Instant>,
}

impl MirrorCheck {
    /// Looks at the group's stream; `None` if it did not answer (it is electing a leader, which
    /// sets the mirror up again).
    pub(crate) async fn look(
        &mut self,
        jetstream: &jetstream::Context,
        layout: &GroupLayout,
    ) -> Option<MirrorSeen> {
        let group = match jetstream.get_stream(&layout.stream).await {
            Ok(group) => group,
            Err(error) => {
                tracing::debug!(stream = %layout.stream, error = %chain(&error),
                    "could not look the group's stream up");
                return None;
            }
        };
        let info = group.cached_info();
        let active = info.mirror.as_ref()?.active;
        let mut seen = self.seen(active, info.state.last_sequence, Instant::now());
        seen.leader_since = info
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader_since);
        Some(seen)
    }

    /// Notes the mirror's `active` (its silence as the server measured it, `None` if not heard
    /// from since its stream's leader was elected) with `copied` its stream's last sequence.
    fn seen(&mut self, active: Option<Duration>, copied: u64, now: Instant) -> MirrorSeen {
        let silent_since = match active {
            Some(silence) => {
                self.unheard = None;
                self.set_up_without_bucket = false;
                (silence >= MIRROR_SILENCE).then(|| now.checked_sub(silence).unwrap_or(now))
            }
            None => {
                let since = match self.unheard {
                    Some((before, since)) if before == copied => since,
                    _ => now,
                };
                self.unheard = Some((copied, since));
                let waited = now.duration_since(since) >= UNHEARD_GRACE;
                (waited || self.set_up_without_bucket).then_some(since)
            }
        };
        MirrorSeen {
            copied,
            silent_since,
            heard_lately: active.is_some_and(|silence| silence < HEARD_LATELY),
            unheard: active.is_none(),
            leader_since: None,
        }
    }

    /// Notes that the bucket's stream answered no lookup while the mirror was `seen`: if its
    /// stream's leader had not heard from it yet, it is stalled as soon as the bucket has a
    /// leader, without the grace given to a mirror setting itself up.
    pub(crate) fn bucket_unanswered(&mut self, seen: Option<MirrorSeen>) {
        if seen.is_some_and(|seen| seen.unheard) {
            self.set_up_without_bucket = true;
        }
    }

    /// Asks the group stream's leader to step down if the mirror `seen` has stalled while the
    /// bucket (its stream's info, just looked up) holds newer changes. `first`: this member is
    /// the first of the live members, which asks at once. Returns whether the mirror is well:
    /// heard from lately, or with nothing to copy.
    pub(crate) async fn restart_if_stalled(
        &mut self,
        jetstream: &jetstream::Context,
        layout: &GroupLayout,
        seen: MirrorSeen,
        bucket: &stream::Info,
        first: bool,
    ) -> bool {
        let bucket_last = bucket.state.last_sequence;
        let behind = bucket_last > seen.copied;
        let now = Instant::now();
        let bucket_leader_since = bucket
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader_since);
        let seen = seen.set_up_before(bucket_leader_since, now);
        if !self.restart_due(seen, bucket_last, first, now) {
            if behind && !seen.heard_lately {
                tracing::debug!(group = %layout.group, copied = seen.copied, bucket_last,
                    silent_for = ?seen.silent_since.map(|since| since.elapsed()), first,
                    "the group's mirror is quiet, not yet long enough to start it again");
            }
            return seen.heard_lately || !behind;
        }
        let copied = seen.copied;
        tracing::warn!(group = %layout.group, bucket = %layout.bucket, copied, bucket_last,
            "the mirror of consumer group `{}` has copied nothing from bucket `{}` for {:?}, \
             while the bucket holds newer changes: its consumer on the bucket's stream is gone; \
             asking the group stream's leader to step down, which starts the mirror again",
            layout.group, layout.bucket,
            seen.silent_since.map(|since| since.elapsed()).unwrap_or_default());
        let asked: Result<Response<serde_json::Value>, _> = jetstream
            .request(
                format!("STREAM.LEADER.STEPDOWN.{}", layout.stream),
                &serde_json::json!({}),
            )
            .await;
        let refused = match asked {
            Ok(Response::Ok(_)) => return false,
            Ok(Response::Err { error }) => error.to_string(),
            Err(error) => chain(&error),
        };
        tracing::warn!(group = %layout.group, error = refused,
            "the group stream's leader did not step down; the server starts the mirror again by \
             itself, later");
        false
    }

    /// Whether to ask for a step-down now.
    fn restart_due(
        &mut self,
        seen: MirrorSeen,
        bucket_last: u64,
        first: bool,
        now: Instant,
    ) -> bool {
        if seen.silent_since.is_none() || bucket_last <= seen.copied {
            self.stalled_seen = None;
            return false;
        }
        let stalled_seen = *self.stalled_seen.get_or_insert(now);
        let paused = self
            .restarted
            .is_some_and(|at| now.duration_since(at) < RESTART_PAUSE);
        let left_to_first = !first && now.duration_since(stalled_seen) < FIRST_MEMBER_GRACE;
        if paused || left_to_first {
            return false;
        }
        self.restarted = Some(now);
        // A new leader's mirror is timed from its own election.
        self.unheard = None;
        self.stalled_seen = None;
        self.set_up_without_bucket = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARD: Option<Duration> = Some(Duration::from_millis(900));

    #[test]
    fn a_silent_mirror_behind_the_bucket_is_restarted() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        let heard = check.seen(HEARD, 10, now);
        assert!(heard.heard_lately);
        assert!(!check.restart_due(heard, 20, true, now));
        let silent = check.seen(Some(MIRROR_SILENCE), 20, now);
        assert!(!silent.heard_lately);
        // Silent, but nothing to copy: left to the server.
        assert!(!check.restart_due(silent, 20, true, now));
        let silent = check.seen(Some(MIRROR_SILENCE), 10, now);
        assert!(check.restart_due(silent, 20, true, now));
        // Not again before the pause is over.
        let later = now + RESTART_PAUSE / 2;
        assert!(!check.restart_due(silent, 30, true, later));
        assert!(check.restart_due(silent, 30, true, now + RESTART_PAUSE));
    }

    #[test]
    fn a_member_other_than_the_first_waits_for_it() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        let silent = check.seen(Some(MIRROR_SILENCE), 10, now);
        assert!(!check.restart_due(silent, 20, false, now));
        let later = now + FIRST_MEMBER_GRACE;
        assert!(check.restart_due(silent, 20, false, later));
        // A mirror heard from again starts the wait over.
        let heard = check.seen(HEARD, 10, later);
        assert!(!check.restart_due(heard, 20, false, later));
        let again = later + RESTART_PAUSE;
        let silent = check.seen(Some(MIRROR_SILENCE), 10, again);
        assert!(!check.restart_due(silent, 20, false, again));
    }

    #[test]
    fn a_mirror_never_heard_from_is_restarted_after_its_grace_without_progress() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        let unheard = check.seen(None, 10, now);
        assert!(unheard.silent_since.is_none());
        // It copied meanwhile: being set up, timed again from here.
        let copying = now + UNHEARD_GRACE;
        assert!(check.seen(None, 12, copying).silent_since.is_none());
        let still = check.seen(None, 12, copying + UNHEARD_GRACE / 2);
        assert!(!check.restart_due(still, 20, true, copying + UNHEARD_GRACE / 2));
        let stalled = check.seen(None, 12, copying + UNHEARD_GRACE);
        assert!(check.restart_due(stalled, 20, true, copying + UNHEARD_GRACE));
        // Heard from: well again.
        assert!(check.seen(HEARD, 12, copying + UNHEARD_GRACE).heard_lately);
    }

    #[test]
    fn a_mirror_whose_leader_was_elected_before_the_buckets_is_restarted_at_once() {
        let now = Instant::now();
        let elected = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let mut check = MirrorCheck::default();
        let mut unheard = check.seen(None, 10, now);
        unheard.leader_since = Some(elected);
        let later = Some(elected + time::Duration::seconds(2));
        assert!(check.restart_due(unheard.set_up_before(later, now), 20, true, now));
        // Elected after the bucket's leader: its mirror sets itself up, given the grace.
        let mut check = MirrorCheck::default();
        let mut unheard = check.seen(None, 10, now);
        unheard.leader_since = later;
        let seen = unheard.set_up_before(Some(elected), now);
        assert!(!check.restart_due(seen, 20, true, now));
        // Unknown (a server before 2.11): the grace.
        unheard.leader_since = None;
        assert!(!check.restart_due(unheard.set_up_before(later, now), 20, true, now));
    }

    #[test]
    fn a_mirror_set_up_while_the_bucket_had_no_leader_is_restarted_at_once() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        let unheard = check.seen(None, 10, now);
        // The bucket's stream did not answer in that check.
        check.bucket_unanswered(Some(unheard));
        let later = now + QUICK_CHECK;
        let stalled = check.seen(None, 10, later);
        assert!(check.restart_due(stalled, 20, true, later));
        // The new leader's mirror gets the grace again.
        let after = later + QUICK_CHECK;
        let unheard = check.seen(None, 10, after);
        assert!(!check.restart_due(unheard, 20, true, after + RESTART_PAUSE));
        // A mirror heard from while the bucket had no leader is not marked.
        let mut check = MirrorCheck::default();
        let heard = check.seen(Some(MIRROR_SILENCE), 10, now);
        check.bucket_unanswered(Some(heard));
        assert!(check.seen(None, 10, later).silent_since.is_none());
    }
}
