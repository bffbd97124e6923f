//! Who is in the group and which partitions are whose.
//!
//! Each member writes a heartbeat (its own key in the members bucket) every fifth of the
//! session timeout, and watches the bucket. A member is gone when no new heartbeat of it (a new
//! revision of its key) has arrived for a session timeout, timed with this member's monotonic
//! clock: never by comparing this host's wall clock with the server's timestamps, so a host whose
//! clock is hours off neither drops live members nor keeps dead ones. (A heartbeat already
//! stored when this member starts watching is aged by the server's clock alone: its time
//! against the time of this member's own latest heartbeat, both the server's.) A member that
//! stops cleanly deletes its key, which the others see at once.
//!
//! A heartbeat also says which partitions its member holds. Every member computes the
//! assignment from the live members and those lists, its own list read back from the bucket
//! like the others' (nothing for a member whose heartbeat it has not read yet), with the rule of
//! [`assignment`](super::assignment): balanced to within one partition, and sticky: a member
//! leaving moves only its own partitions, a member joining only those it takes (with 16
//! partitions, going from 3 members to 4 moves 4 of them, where giving partition `p` to the
//! `p % n`-th member moved 11.5 on average). Each member heartbeats the share it computed, so
//! the rule is fed its own output: it gives that output back, even while only some of the
//! heartbeats carry it, so the members computing at different moments still agree, and settle
//! within a round of heartbeats once the membership stops changing. Members of an earlier
//! version (whose heartbeats do not say they assign this way) assign `p % n`; while one of them
//! is live, every member does the same, so that no partition is left unpulled.
//!
//! The assignment only decides who *pulls* a partition. Two members that briefly disagree
//! (one has read a heartbeat, or seen a member come or go, that the other has not) both pull
//! it, and the server's pin still gives it to one of them; a partition nobody pulls for a
//! moment just waits. So agreement is needed for balance and speed, never for correctness,
//! and the assignment may be computed from heartbeats that reach the members at different
//! moments: a list read late costs a moment of two pullers, or of none, not a change lost or
//! handled twice at once.
//!
//! Silence counts only while the members bucket is heard from: a member is gone when the watch
//! has delivered heartbeats (its own member's included, one every heartbeat interval) without a
//! gap for a whole session timeout, none of them its. While the bucket delivers nothing (its
//! stream electing a leader after a node died, which takes 4 to 9 s, or this member's connection
//! down), every member keeps the assignment it has: dropping the others then, and giving up its
//! own partitions because its heartbeats fail too, would leave every partition unpulled, then
//! move most of them once the heartbeats came back, each waiting for a pin to be given back or
//! to time out. A member whose own heartbeats fail for a session timeout while the others' keep
//! arriving (it can read the bucket but not write it) gives its partitions up, until it is heard
//! again. Keeping an assignment through an outage is safe for the same reason as any
//! disagreement: the server's pin, not the assignment, decides who gets a partition's changes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::assignment::{assign, modulo, Holder};

/// What a member writes in its heartbeat: who it is and what it holds, for
/// [`KvGroup::info`](super::KvGroup::info).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) host: String,
    pub(crate) pid: u32,
    /// The partitions the member is assigned: what the sticky rule lets it keep.
    pub(crate) partitions: Vec<u16>,
    /// The partitions the server has pinned to it, with the pin ids.
    pub(crate) pinned: Vec<(u16, String)>,
    /// Whether the member assigns by the sticky rule; absent (false) in the heartbeats of the
    /// versions that assigned `p % n`.
    #[serde(default)]
    pub(crate) sticky: bool,
}

/// The partitions this member pulls, and the live members the assignment was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) members: Vec<Arc<str>>,
    pub(crate) mine: Vec<u16>,
}

/// A fresh member id: the host, the process and a unique suffix, as one key token.
///
/// The suffix is the whole NUID of a new inbox. Not a prefix of it: async-nats draws every
/// inbox of the process from one NUID generator, whose first 12 characters stay the same for
/// the process's life (only the last 10, a sequence, change), so a prefix would give every
/// member in one process the same id.
pub(crate) fn member_id(client: &async_nats::Client) -> Arc<str> {
    let unique = client.new_inbox();
    let unique = unique.rsplit('.').next().unwrap_or_default();
    let host = hostname();
    let id = format!("{host}-{}-{unique}", std::process::id());
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .into()
}

pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|host| host.trim().to_owned())
        })
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// One member's part in the membership protocol; [`run`](Self::run) until cancelled.
pub(crate) struct Membership {
    pub(crate) id: Arc<str>,
    pub(crate) store: kv::Store,
    pub(crate) partitions: u16,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    /// What the next heartbeat says; the member's partition tasks keep `pinned` current.
    pub(crate) report: Arc<Mutex<Heartbeat>>,
    pub(crate) assignment: watch::Sender<Assignment>,
}

impl Membership {
    /// Heartbeats and follows the other members until `cancel` fires, then leaves the group
    /// (deletes its key), so the others take over at once.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut last_seen: HashMap<String, Heard> = HashMap::new();
        // Start as if the last heartbeat had just succeeded: the member joined moments ago.
        let mut heard_back = Instant::now();
        let mut beat = tokio::time::interval(self.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = None;
        let mut rewatch_at = Instant::now();
        // No assignment until the members already there are known (the watch has delivered
        // them, which its delivery of this member's own first heartbeat shows), so a member
        // joining does not briefly claim every partition.
        let joined_at = Instant::now();
        let mut settled = false;
        // This member's own latest heartbeat as the watch delivered it: the server's time then,
        // and when it arrived.
        let mut own_latest: Option<ServerTime> = None;
        let mut deliveries = Deliveries::new(self.session_timeout, self.heartbeat_interval * 2);
        loop {
            if watch.is_none() && Instant::now() >= rewatch_at {
                match self.store.watch_all().await {
                    Ok(stream) => watch = Some(stream),
                    Err(error) => {
                        tracing::warn!(member = %self.id, error = %crate::error::chain(&error),
                            "could not watch the group's members; retrying");
                        rewatch_at = Instant::now() + self.heartbeat_interval;
                    }
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = beat.tick() => {
                    if self.beat().await {
                        heard_back = Instant::now();
                    }
                }
                entry = next_entry(&mut watch), if watch.is_some() => match entry {
                    Some(Ok(entry)) => {
                        deliveries.note(Instant::now());
                        self.read_entry(entry, &mut last_seen, &mut settled, &mut own_latest);
                    }
                    Some(Err(error)) => {
                        tracing::debug!(member = %self.id, error = %crate::error::chain(&error),
                            "the members watch broke; watching again");
                        watch = None;
                    }
                    None => {
                        watch = None;
                        rewatch_at = Instant::now() + self.heartbeat_interval;
                    }
                },
            }
            if settled || joined_at.elapsed() >= self.session_timeout {
                self.reassign(&mut last_seen, heard_back, own_latest, &deliveries);
            }
        }
        self.assignment.send_replace(Assignment::default());
        if let Err(error) = self.store.delete(&*self.id).await {
            tracing::warn!(member = %self.id, error = %crate::error::chain(&error),
                "could not leave the group cleanly; the others take over after the session timeout");
        }
    }

    /// Notes what the members watch delivered: a heartbeat, or a member leaving.
    fn read_entry(
        &self,
        entry: kv::Entry,
        last_seen: &mut HashMap<String, Heard>,
        settled: &mut bool,
        own_latest: &mut Option<ServerTime>,
    ) {
        match entry.operation {
            kv::Operation::Put => {
                *settled |= entry.key == *self.id || entry.delta == 0;
                if entry.key == *self.id {
                    *own_latest = Some(ServerTime {
                        stored: entry.created,
                        received: Instant::now(),
                    });
                }
                let claim = Claim::read(&entry.value);
                heard(last_seen, entry.key, entry.revision, entry.created, claim);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                last_seen.remove(&entry.key);
            }
        }
    }

    /// Writes this member's heartbeat; `true` once the server has stored it.
    async fn beat(&self) -> bool {
        let heartbeat = self
            .report
            .lock()
            .map(|report| report.clone())
            .unwrap_or_default();
        let Ok(payload) = serde_json::to_vec(&heartbeat) else {
            return false;
        };
        match self.store.put(&*self.id, payload.into()).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(member = %self.id, error = %crate::error::chain(&error),
                    "heartbeat failed");
                false
            }
        }
    }

    /// Drops the members not heard from for a session timeout (while the bucket was heard from)
    /// and publishes the assignment if it changed. A member not heard back from itself while
    /// the others were holds nothing.
    fn reassign(
        &self,
        last_seen: &mut HashMap<String, Heard>,
        heard_back: Instant,
        own_latest: Option<ServerTime>,
        deliveries: &Deliveries,
    ) {
        let timeout = self.session_timeout;
        let steady = deliveries.steady(Instant::now());
        if steady {
            last_seen.retain(|_, heard| heard.alive(timeout, own_latest));
        }
        let alive = heard_back.elapsed() < timeout || !steady;
        let (members, mine) = share(self.partitions, last_seen, &self.id, alive);
        let changed = {
            let current = self.assignment.borrow();
            current.members != members || current.mine != mine
        };
        if changed {
            if !alive {
                tracing::warn!(member = %self.id, ?timeout,
                    "no heartbeat stored for the session timeout: giving up every partition");
            }
            tracing::info!(member = %self.id, members = members.len(), partitions = ?mine,
                "group assignment changed");
            if let Ok(mut report) = self.report.lock() {
                report.partitions.clone_from(&mine);
            }
            self.assignment.send_replace(Assignment { members, mine });
        }
    }
}

/// The live members (those in `last_seen`, and `me` if `alive`), sorted by id, and the share of
/// `me`: by the sticky rule, or `p % n` while a live member of an earlier version assigns so.
fn share(
    partitions: u16,
    last_seen: &HashMap<String, Heard>,
    me: &str,
    alive: bool,
) -> (Vec<Arc<str>>, Vec<u16>) {
    let mut holders: Vec<Holder<'_>> = last_seen
        .iter()
        .filter(|(member, _)| alive || *member != me)
        .map(|(member, heard)| Holder {
            id: member,
            held: &heard.claim.partitions,
        })
        .collect();
    if alive && !last_seen.contains_key(me) {
        holders.push(Holder { id: me, held: &[] });
    }
    holders.sort_by(|a, b| a.id.cmp(b.id));
    let index = holders.iter().position(|holder| holder.id == me);
    let sticky = last_seen.values().all(|heard| heard.claim.sticky);
    let mine = match index {
        None => Vec::new(),
        Some(index) if sticky => assign(partitions, &holders)
            .into_iter()
            .nth(index)
            .unwrap_or_default(),
        Some(index) => modulo(partitions, holders.len(), index),
    };
    let members = holders.iter().map(|holder| Arc::from(holder.id)).collect();
    (members, mine)
}

/// When the members bucket last delivered a heartbeat (or a member's leaving), and since when it
/// has delivered them without a gap: silence means something only while the bucket is heard.
#[derive(Debug, Clone, Copy)]
struct Deliveries {
    last: Instant,
    since: Instant,
    /// Heard without a gap for this long, the bucket is steady.
    timeout: Duration,
    /// Longer than this without a delivery is a gap (this member's own heartbeats alone arrive
    /// every heartbeat interval).
    gap: Duration,
}

impl Deliveries {
    /// Steady from the start: a member joining ages the heartbeats it finds stored at once.
    fn new(timeout: Duration, gap: Duration) -> Self {
        let now = Instant::now();
        Self {
            last: now,
            since: now.checked_sub(timeout).unwrap_or(now),
            timeout,
            gap,
        }
    }

    fn note(&mut self, now: Instant) {
        if now.duration_since(self.last) > self.gap {
            self.since = now;
        }
        self.last = now;
    }

    /// Whether the bucket has been heard from without a gap for a session timeout, until now.
    fn steady(&self, now: Instant) -> bool {
        now.duration_since(self.last) <= self.gap && now.duration_since(self.since) >= self.timeout
    }
}

/// A time of the server's clock (when it stored a heartbeat), and when this member received it.
#[derive(Debug, Clone, Copy)]
struct ServerTime {
    stored: OffsetDateTime,
    received: Instant,
}

/// What a heartbeat says of the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    /// The partitions its member holds.
    partitions: Vec<u16>,
    /// Whether its member assigns by the sticky rule.
    sticky: bool,
}

impl Claim {
    /// The claim of a heartbeat's value. A value that is not a heartbeat (something else wrote
    /// the key) holds nothing and does not hold the group to `p % n`.
    fn read(value: &[u8]) -> Self {
        serde_json::from_slice::<Heartbeat>(value).map_or(
            Self {
                partitions: Vec::new(),
                sticky: true,
            },
            |heartbeat| Self {
                partitions: heartbeat.partitions,
                sticky: heartbeat.sticky,
            },
        )
    }
}

/// The last heartbeat revision received of a member, and when it arrived here.
#[derive(Debug, Clone)]
struct Heard {
    revision: u64,
    at: Instant,
    /// When the server stored it (its clock).
    stored: OffsetDateTime,
    /// Whether a new revision arrived since this member first heard of it.
    renewed: bool,
    /// What that heartbeat says it holds.
    claim: Claim,
}

impl Heard {
    /// Heard from within `timeout`: a new heartbeat arrived less than `timeout` ago, by this
    /// member's monotonic clock. A heartbeat not renewed since it was first heard of (one
    /// already stored when this member started watching) must also be younger than `timeout`
    /// by the server's clock: its time against that of this member's own latest heartbeat
    /// (`own_latest`), plus the time since that one arrived. Differences of one clock each:
    /// no wall clock of this host is compared with the server's.
    fn alive(&self, timeout: Duration, own_latest: Option<ServerTime>) -> bool {
        if self.at.elapsed() >= timeout {
            return false;
        }
        match own_latest {
            Some(own) if !self.renewed => {
                let older_by = Duration::try_from(own.stored - self.stored).unwrap_or_default();
                older_by.saturating_add(own.received.elapsed()) < timeout
            }
            _ => true,
        }
    }
}

/// Notes a heartbeat of `member`. Only a new revision counts as a sign of life: a watch
/// started again delivers the last heartbeat of each member again, and a dead member's last
/// one must not keep it alive.
fn heard(
    last_seen: &mut HashMap<String, Heard>,
    member: String,
    revision: u64,
    stored: OffsetDateTime,
    claim: Claim,
) {
    let now = Instant::now();
    match last_seen.entry(member) {
        Entry::Occupied(mut heard) => {
            if revision > heard.get().revision {
                heard.insert(Heard {
                    revision,
                    at: now,
                    stored,
                    renewed: true,
                    claim,
                });
            }
        }
        Entry::Vacant(vacant) => {
            vacant.insert(Heard {
                revision,
                at: now,
                stored,
                renewed: false,
                claim,
            });
        }
    }
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
