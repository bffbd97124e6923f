//! A stalled mirror started again.
//!
//! The group's stream copies the bucket's through a consumer that the server creates on the
//! leader of the bucket's stream. When that node dies the consumer dies with it, and the mirror
//! notices only at its own health check, every 10 s, once it has heard nothing for 10 s: it
//! copies again 10 to 20 s after the node died (nats-server 2.15.1), and meanwhile no partition
//! gets anything, whatever the elections. If the group stream's leader died too, its new leader
//! asks the bucket's stream for a consumer while that stream has no leader either, and tries
//! again only 40 to 50 s later. A new leader of the group's stream sets its mirror up at once,
//! so running members look at the mirror when they look the bucket up (once per session
//! timeout, `replaced`), and when it has been silent for [`MIRROR_SILENCE`] (not even the
//! heartbeat its consumer sends every second), or not heard from at two checks in a row, while
//! the bucket holds changes it has not copied, one of them asks the group stream's leader to
//! step down: the mirror copies again about a second after the bucket's stream has a leader.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, response::Response, stream};

use super::layout::GroupLayout;
use crate::error::chain;

/// Three of the heartbeats the mirror's consumer sends every second while the bucket is idle.
const MIRROR_SILENCE: Duration = Duration::from_secs(3);
/// The server's own health check period: by then the new leader has set the mirror up, or the
/// server has tried again.
const RESTART_PAUSE: Duration = Duration::from_secs(10);
/// How many checks a member other than the first waits before asking itself (the first
/// member's view of the group may be out of date, or it may be gone).
const CHECKS_LEFT_TO_FIRST: u32 = 2;

/// One member's look at the group's mirror, check after check.
#[derive(Debug, Default)]
pub(crate) struct MirrorCheck {
    /// The group stream's last sequence at the last check, if its mirror had not been heard
    /// from since the stream's leader was elected.
    unheard_at: Option<u64>,
    /// Checks in a row that found the mirror stalled.
    stalled: u32,
    /// When this member last asked for a step-down.
    restarted: Option<Instant>,
}

impl MirrorCheck {
    /// Looks at the group's mirror against `bucket` (the bucket stream's info, just looked up)
    /// and asks the group stream's leader to step down if the mirror has stalled. `first`: this
    /// member is the first of the live members, which asks at once.
    pub(crate) async fn check(
        &mut self,
        jetstream: &jetstream::Context,
        layout: &GroupLayout,
        bucket: &stream::Info,
        first: bool,
    ) {
        // No answer: the group's stream is electing a leader, which sets the mirror up again.
        let Ok(group) = jetstream.get_stream(&layout.stream).await else {
            return;
        };
        let info = group.cached_info();
        let Some(mirror) = &info.mirror else {
            return;
        };
        let copied = info.state.last_sequence;
        let bucket_last = bucket.state.last_sequence;
        if !self.restart_due(mirror.active, copied, bucket_last, first, Instant::now()) {
            return;
        }
        let quiet = match mirror.active {
            Some(silence) => format!("for {silence:?}"),
            None => "since its stream's leader was elected".to_owned(),
        };
        tracing::warn!(group = %layout.group, bucket = %layout.bucket, copied, bucket_last,
            "the mirror of consumer group `{}` has copied nothing from bucket `{}` {quiet}, while \
             the bucket holds newer changes: its consumer on the bucket's stream is gone; asking \
             the group stream's leader to step down, which starts the mirror again",
            layout.group, layout.bucket);
        let asked: Result<Response<serde_json::Value>, _> = jetstream
            .request(
                format!("STREAM.LEADER.STEPDOWN.{}", layout.stream),
                &serde_json::json!({}),
            )
            .await;
        let refused = match asked {
            Ok(Response::Ok(_)) => return,
            Ok(Response::Err { error }) => error.to_string(),
            Err(error) => chain(&error),
        };
        tracing::warn!(group = %layout.group, error = refused,
            "the group stream's leader did not step down; the server starts the mirror again by \
             itself, later");
    }

    /// Whether to ask for a step-down now, the mirror being `active` (its silence, `None` if
    /// not heard from since its stream's leader was elected) with `copied` its stream's last
    /// sequence, and `bucket_last` the bucket's.
    fn restart_due(
        &mut self,
        active: Option<Duration>,
        copied: u64,
        bucket_last: u64,
        first: bool,
        now: Instant,
    ) -> bool {
        let unheard_before = self.unheard_at.take();
        let silent = match active {
            Some(silence) => silence >= MIRROR_SILENCE,
            // Not heard from since the leader was elected: stalled if so at the last check too,
            // with nothing copied since.
            None => {
                self.unheard_at = Some(copied);
                unheard_before == Some(copied)
            }
        };
        if !silent || bucket_last <= copied {
            self.stalled = 0;
            return false;
        }
        self.stalled = self.stalled.saturating_add(1);
        let paused = self
            .restarted
            .is_some_and(|at| now.duration_since(at) < RESTART_PAUSE);
        if paused || (!first && self.stalled <= CHECKS_LEFT_TO_FIRST) {
            return false;
        }
        self.restarted = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENT: Option<Duration> = Some(MIRROR_SILENCE);
    const HEARD: Option<Duration> = Some(Duration::from_millis(900));

    #[test]
    fn a_silent_mirror_behind_the_bucket_is_restarted() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        assert!(!check.restart_due(HEARD, 10, 20, true, now));
        // Silent, but nothing to copy: left to the server.
        assert!(!check.restart_due(SILENT, 20, 20, true, now));
        assert!(check.restart_due(SILENT, 10, 20, true, now));
        // Not again before the pause is over.
        let later = now + RESTART_PAUSE / 2;
        assert!(!check.restart_due(SILENT, 10, 30, true, later));
        assert!(check.restart_due(SILENT, 10, 30, true, now + RESTART_PAUSE));
    }

    #[test]
    fn a_member_other_than_the_first_waits_for_it() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        for _ in 0..CHECKS_LEFT_TO_FIRST {
            assert!(!check.restart_due(SILENT, 10, 20, false, now));
        }
        assert!(check.restart_due(SILENT, 10, 20, false, now));
        // A mirror heard from again starts the count over.
        let later = now + RESTART_PAUSE;
        assert!(!check.restart_due(HEARD, 10, 20, false, later));
        assert!(!check.restart_due(SILENT, 10, 20, false, later));
    }

    #[test]
    fn a_mirror_never_heard_from_is_restarted_at_the_second_check_without_progress() {
        let now = Instant::now();
        let mut check = MirrorCheck::default();
        assert!(!check.restart_due(None, 10, 20, true, now));
        // It copied meanwhile: being set up.
        assert!(!check.restart_due(None, 12, 20, true, now));
        assert!(check.restart_due(None, 12, 20, true, now));
    }
}
