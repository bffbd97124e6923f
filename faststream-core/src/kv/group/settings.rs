//! `GroupSettings`: what makes a subscriber a member of a consumer group, and the settings the
//! group keeps on the server.

use std::borrow::Cow;
use std::time::Duration;

/// The default [`GroupSettings::partitions`].
pub const DEFAULT_PARTITIONS: u16 = 16;
/// The most partitions a group may have: each is a consumer on the server.
pub const MAX_PARTITIONS: u16 = 1024;
/// The default [`GroupSettings::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The default [`GroupSettings::backoff`]: the wait before the 2nd, 3rd and later attempts.
pub const DEFAULT_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];
/// The default [`GroupSettings::in_flight`].
pub const DEFAULT_IN_FLIGHT: u16 = 32;
/// The most [`GroupSettings::in_flight`]: each change in flight is kept alive with
/// acknowledgements of progress while it waits.
pub const MAX_IN_FLIGHT: u16 = 4096;
/// The default [`GroupSettings::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`GroupSettings::session_timeout`].
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this, heartbeats (every fifth of the session timeout) would load the server for little
/// gain, and a busy machine would lose its partitions to a scheduling hiccup.
const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(1);

/// A consumer group on a bucket: several instances of a service share the changes of the keys a
/// subscriber watches, each change handled by one of them, the changes of one key one at a time
/// and in revision order across the whole fleet, with progress kept on the server.
///
/// `KvWatch::new("shop").group("billing")` is a group with these defaults; give a
/// `GroupSettings` for others:
///
/// ```
/// use std::time::Duration;
/// use faststream_core::kv::group::GroupSettings;
/// use faststream_core::KvWatch;
///
/// let watch = KvWatch::new("shop").group(
///     GroupSettings::new("billing")
///         .partitions(32)
///         .max_attempts(3)
///         .backoff([Duration::from_millis(200), Duration::from_secs(2)])
///         .call_timeout(Duration::from_secs(10)),
/// );
/// assert!(watch.validate().is_ok());
/// ```
///
/// Fixed when the group is created (a member started later with other values fails start-up
/// with an error naming the difference): the key pattern, where the group starts
/// (`include_history` / `updates_only` / the latest value of each key), [`partitions`] and
/// [`session_timeout`]. Every member applies its own [`max_attempts`], [`backoff`],
/// [`call_timeout`], `ignore_deletes`, `meta_only` and `max_workers`; keep them equal across
/// the fleet.
///
/// [`partitions`]: Self::partitions
/// [`session_timeout`]: Self::session_timeout
/// [`max_attempts`]: Self::max_attempts
/// [`backoff`]: Self::backoff
/// [`call_timeout`]: Self::call_timeout
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub(crate) name: Cow<'static, str>,
    pub(crate) partitions: u16,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Vec<Duration>,
    pub(crate) call_timeout: Duration,
    pub(crate) session_timeout: Duration,
    pub(crate) in_flight: u16,
}

impl GroupSettings {
    /// The group `name` with the default settings. Names use the characters of a bucket name
    /// (`A-Z a-z 0-9 _ -`), at most [`MAX_GROUP_NAME`](faststream_rules::MAX_GROUP_NAME).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            partitions: DEFAULT_PARTITIONS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_BACKOFF.to_vec(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }

    /// How many partitions the keys are spread over (default 16, at most 1024), fixed when the
    /// group is created. A key always falls in the same partition; a partition is handled by
    /// one member at a time, with at most [`in_flight`](Self::in_flight) of its changes at
    /// once, so this bounds how many members can share the work and how many calls run at once
    /// across the fleet.
    #[must_use]
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many times a change is tried before it is given up (default 5): an `Err`, a panic
    /// or a call longer than [`call_timeout`](Self::call_timeout) each count, and so does a
    /// call cut short by its member dying; a delivery handed back without a call (its member
    /// gave the partition up, or lost the pin, before the call started) does not. A change given
    /// up is logged and kept in the group's dead letters, and its key moves on. A value the
    /// handler's arguments cannot be built from is given up at once: trying again cannot help.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait before each retry: the first element before the 2nd attempt, and so on, the
    /// last one reused (default 1 s, 5 s, 30 s). The partition of the key waits too, so that
    /// a key's later changes never overtake a failing one. At least one wait: an empty list is
    /// a setup error at start-up (`[Duration::ZERO]` retries at once, if that is what is
    /// meant).
    #[must_use]
    pub fn backoff(mut self, backoff: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = backoff.into_iter().collect();
        self
    }

    /// How long one call may run (default 30 s): a call still running is cancelled and counts
    /// as a failed attempt. It replaces the app's
    /// [`handler_timeout`](crate::App::handler_timeout) for the group's subscriber.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How long a member may go unheard before the others take over its partitions (default
    /// 5 s, at least 1 s), fixed when the group is created. Members heartbeat every fifth of
    /// it; it is also the server's pin timeout and how long a change in flight at a member that
    /// died waits before it is delivered again. Shorter: faster takeover; longer: fewer false
    /// takeovers on a loaded machine.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How many changes of one partition may be in flight at once (default 32, at most 4096),
    /// fixed when the group's consumers are created. Two changes of one key never run at once
    /// nor out of order, whatever the member (see the guide's chapter on consumer groups); a
    /// change waiting for an earlier one of its key is held without counting as an attempt.
    /// `1` handles a partition's changes strictly one after another. A member whose value
    /// differs from the group's consumers' logs it and follows the group's.
    #[must_use]
    pub fn in_flight(mut self, changes: u16) -> Self {
        self.in_flight = changes;
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wait before attempt `attempt + 1`, after `attempt` attempts (1-based) failed.
    pub(crate) fn backoff_after(&self, attempt: u64) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }

    /// How often a member writes its heartbeat.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.session_timeout / 5
    }

    /// Every problem of the settings, one sentence each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = faststream_rules::validate_group(&self.name) {
            problems.push(error.to_string());
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            problems.push(format!(
                "group `partitions` must be 1..={MAX_PARTITIONS}, got {}",
                self.partitions
            ));
        }
        if self.max_attempts == 0 {
            problems.push("group `max_attempts` must be at least 1".to_owned());
        }
        if self.backoff.is_empty() {
            problems.push(
                "group `backoff` must list at least one wait (`[Duration::ZERO]` retries at \
                 once), got none"
                    .to_owned(),
            );
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            problems.push(format!(
                "group `in_flight` must be 1..={MAX_IN_FLIGHT}, got {}",
                self.in_flight
            ));
        }
        if self.call_timeout.is_zero() {
            problems.push("group `call_timeout` must be more than zero".to_owned());
        }
        if self.session_timeout < MIN_SESSION_TIMEOUT {
            problems.push(format!(
                "group `session_timeout` must be at least {MIN_SESSION_TIMEOUT:?}, got {:?}",
                self.session_timeout
            ));
        }
        problems
    }
}

impl From<&'static str> for GroupSettings {
    fn from(name: &'static str) -> Self {
        Self::new(name)
    }
}

impl From<String> for GroupSettings {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_reuses_the_last_step() {
        let settings =
            GroupSettings::new("g").backoff([Duration::from_secs(1), Duration::from_secs(3)]);
        assert_eq!(settings.backoff_after(1), Duration::from_secs(1));
        assert_eq!(settings.backoff_after(2), Duration::from_secs(3));
        assert_eq!(settings.backoff_after(9), Duration::from_secs(3));
    }

    #[test]
    fn problems_are_listed() {
        assert!(GroupSettings::new("billing").problems().is_empty());
        let problems = GroupSettings::new("a.b")
            .partitions(0)
            .max_attempts(0)
            .in_flight(0)
            .session_timeout(Duration::from_millis(10))
            .problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert_eq!(
            GroupSettings::new("billing").backoff([]).problems(),
            ["group `backoff` must list at least one wait (`[Duration::ZERO]` retries at once), \
              got none"]
        );
        let zero = GroupSettings::new("billing").backoff([Duration::ZERO]);
        assert!(zero.problems().is_empty());
    }
}
