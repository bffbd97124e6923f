//! Who is in the group and which partitions are whose.
//!
//! Each member writes a heartbeat (its own key in the members bucket) every fifth of the
//! session timeout, and watches the bucket. A member is gone when no new heartbeat of it (a new
//! revision of its key) has arrived for a session timeout, timed with this member's monotonic
//! clock: never by comparing this host's wall clock with the server's timestamps, so a host whose
//! clock is hours off neither drops live members nor keeps dead ones. (A heartbeat already
//! stored when this member starts watching is aged by the server's clock alone: its time
//! against the time of this member's own latest heartbeat, both the server's.) A member that
//! stops cleanly deletes its key, which the others see at once. Every member
//! sorts the live ids and takes partition `p` if it is the `p % n`-th of the `n` members: the
//! same list gives the same assignment everywhere, balanced to within one partition.
//!
//! The assignment only decides who *pulls* a partition. Two members that briefly disagree
//! (one has seen a change the other has not) both pull it, and the server's pin still gives it
//! to one of them; a partition nobody pulls for a moment just waits. So agreement is needed for
//! balance and speed, never for correctness.
//!
//! A member whose own heartbeats fail for a session timeout (its connection is down) assumes
//! the others have taken its partitions and gives them up itself, until it is heard again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a member writes in its heartbeat: who it is and what it holds, for
/// [`KvGroup::info`](super::KvGroup::info).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) host: String,
    pub(crate) pid: u32,
    /// The partitions the member is assigned.
    pub(crate) partitions: Vec<u16>,
    /// The partitions the server has pinned to it, with the pin ids.
    pub(crate) pinned: Vec<(u16, String)>,
}

/// The partitions this member pulls, and the live members the assignment was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) members: Vec<Arc<str>>,
    pub(crate) mine: Vec<u16>,
}

/// Partition `p` goes to the `p % n`-th of the `n` sorted members.
pub(crate) fn assign(partitions: u16, members: &[Arc<str>], me: &str) -> Vec<u16> {
    let Some(index) = members.iter().position(|member| &**member == me) else {
        return Vec::new();
    };
    (0..partitions)
        .filter(|partition| usize::from(*partition) % members.len() == index)
        .collect()
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
                    Some(Ok(entry)) => match entry.operation {
                        kv::Operation::Put => {
                            settled |= entry.key == *self.id || entry.delta == 0;
                            if entry.key == *self.id {
                                own_latest = Some(ServerTime {
                                    stored: entry.created,
                                    received: Instant::now(),
                                });
                            }
                            heard(&mut last_seen, entry.key, entry.revision, entry.created);
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            last_seen.remove(&entry.key);
                        }
                    },
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
                self.reassign(&mut last_seen, heard_back, own_latest);
            }
        }
        self.assignment.send_replace(Assignment::default());
        if let Err(error) = self.store.delete(&*self.id).await {
            tracing::warn!(member = %self.id, error = %crate::error::chain(&error),
                "could not leave the group cleanly; the others take over after the session timeout");
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

    /// Drops the members not heard from for a session timeout and publishes the assignment
    /// if it changed. A member not heard back from itself holds nothing.
    fn reassign(
        &self,
        last_seen: &mut HashMap<String, Heard>,
        heard_back: Instant,
        own_latest: Option<ServerTime>,
    ) {
        let timeout = self.session_timeout;
        last_seen.retain(|_, heard| heard.alive(timeout, own_latest));
        let mut members: Vec<Arc<str>> = last_seen
            .keys()
            .filter(|member| **member != *self.id)
            .map(|member| Arc::from(member.as_str()))
            .collect();
        let alive = heard_back.elapsed() < timeout;
        if alive {
            members.push(Arc::clone(&self.id));
        }
        members.sort();
        let mine = assign(self.partitions, &members, &self.id);
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

/// A time of the server's clock (when it stored a heartbeat), and when this member received it.
#[derive(Debug, Clone, Copy)]
struct ServerTime {
    stored: OffsetDateTime,
    received: Instant,
}

/// The last heartbeat revision received of a member, and when it arrived here.
#[derive(Debug, Clone, Copy)]
struct Heard {
    revision: u64,
    at: Instant,
    /// When the server stored it (its clock).
    stored: OffsetDateTime,
    /// Whether a new revision arrived since this member first heard of it.
    renewed: bool,
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
) {
    let now = Instant::now();
    last_seen
        .entry(member)
        .and_modify(|heard| {
            if revision > heard.revision {
                *heard = Heard {
                    revision,
                    at: now,
                    stored,
                    renewed: true,
                };
            }
        })
        .or_insert(Heard {
            revision,
            at: now,
            stored,
            renewed: false,
        });
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Arc<str>> {
        ids.iter().map(|id| Arc::from(*id)).collect()
    }

    #[tokio::test]
    async fn ids_differ_within_a_process() {
        // Connecting is not needed to make inboxes.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("client");
        let ids: std::collections::HashSet<Arc<str>> =
            (0..100).map(|_| member_id(&client)).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn only_a_new_revision_is_a_sign_of_life() {
        let stored = OffsetDateTime::UNIX_EPOCH;
        let mut last_seen = HashMap::new();
        heard(&mut last_seen, "a".to_owned(), 5, stored);
        let first = last_seen["a"].at;
        std::thread::sleep(Duration::from_millis(5));
        // The same heartbeat again (a watch started again): not a new sign of life.
        heard(&mut last_seen, "a".to_owned(), 5, stored);
        assert_eq!(last_seen["a"].at, first);
        assert!(!last_seen["a"].renewed);
        heard(&mut last_seen, "a".to_owned(), 9, stored);
        assert!(last_seen["a"].at > first);
        assert_eq!(last_seen["a"].revision, 9);
        assert!(last_seen["a"].renewed);
    }

    #[test]
    fn a_heartbeat_found_stored_is_aged_by_the_server_clock() {
        let timeout = Duration::from_secs(5);
        let server_now = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1000);
        let own = Some(ServerTime {
            stored: server_now,
            received: Instant::now(),
        });
        let found = |age: time::Duration| Heard {
            revision: 1,
            at: Instant::now(),
            stored: server_now - age,
            renewed: false,
        };
        assert!(found(time::Duration::seconds(1)).alive(timeout, own));
        assert!(!found(time::Duration::seconds(12)).alive(timeout, own));
        // Stored after this member's own latest heartbeat: fresh.
        assert!(found(time::Duration::seconds(-3)).alive(timeout, own));
        // Before this member's own heartbeat is back, or once renewed: the monotonic clock.
        assert!(found(time::Duration::seconds(12)).alive(timeout, None));
        let renewed = Heard {
            renewed: true,
            ..found(time::Duration::seconds(12))
        };
        assert!(renewed.alive(timeout, own));
    }

    #[test]
    fn balanced_within_one() {
        for count in 1..=7usize {
            let ids: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let all = members(&ids);
            let sizes: Vec<usize> = ids.iter().map(|id| assign(16, &all, id).len()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 16);
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{sizes:?}"
            );
        }
        assert!(assign(16, &members(&["a"]), "b").is_empty());
        assert_eq!(assign(4, &members(&["a", "b"]), "b"), vec![1, 3]);
    }
}
