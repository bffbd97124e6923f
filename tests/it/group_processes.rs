//! Consumer-group members in processes of their own (the `group_member` binary), killed with
//! SIGKILL, stopped with SIGTERM, all stopped and one started again, under a steady writer.
//! What each call did is read from the `begin`/`end` records the members' handlers store in
//! the stream `RECORDS` before going on (see src/bin/group_member.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{connected_broker, on_each_server_since};
use crate::group_support::{
    check_calls, first_and_last, keys_held, now_nanos, taken_over, Record, Records, Writer,
};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use faststream_testing::NatsServer;
use futures_util::StreamExt as _;
use tokio::process::{Child, Command};

const BUCKET: &str = "shop";
const GROUP: &str = "billing";
const PATTERN: &str = "k.{n}";
const PARTITIONS: u16 = 16;
const KEYS: u64 = 40;
/// ~200 puts a second.
const WRITE_PERIOD: Duration = Duration::from_millis(5);
const HANDLER_DELAY_MS: u64 = 2;
/// How long a test waits for the members to form the group, or for a change to be handled.
const WAIT: Duration = Duration::from_secs(30);

/// The tests of this file one at a time: each runs several members and a writer, and on a
/// loaded machine two at once could starve the members' heartbeats.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `group_member` process.
struct Member {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Member {
    /// Starts member `name` of the group on `url`, its stderr in `<dir>/<name>.log`.
    fn start(url: &str, name: &str, session_timeout: Duration, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_clock(url, name, session_timeout, dir, None)
    }

    /// [`start`](Self::start), the process's wall clock shifted by `skew` (a libfaketime
    /// offset such as `+3h`) if given; its monotonic clock is left alone.
    fn start_with_clock(
        url: &str,
        name: &str,
        session_timeout: Duration,
        dir: &Path,
        skew: Option<&str>,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let member = env!("CARGO_BIN_EXE_group_member");
        let mut command = Command::new(member);
        if let Some(skew) = skew {
            // libfaketime preloaded into the member itself (not through the `faketime` command,
            // which would stay the child while the member ran on after a SIGKILL). It fakes
            // CLOCK_MONOTONIC too unless told not to: only the wall clock is to be off, as on a
            // host whose clock is wrong.
            command
                .env("LD_PRELOAD", libfaketime()?)
                .env("FAKETIME", skew)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .args(["--url", url, "--bucket", BUCKET, "--group", GROUP])
            .args([
                "--pattern",
                PATTERN,
                "--partitions",
                &PARTITIONS.to_string(),
            ])
            .args([
                "--session-timeout-ms",
                &session_timeout.as_millis().to_string(),
            ])
            .args([
                "--delay-ms",
                &HANDLER_DELAY_MS.to_string(),
                "--member",
                name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting member {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    fn pid(&self) -> anyhow::Result<i32> {
        let pid = self.child.id().context("the member has exited")?;
        Ok(i32::try_from(pid)?)
    }

    /// SIGKILL: the member dies mid-call, without handing anything over.
    async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM: the app shuts down gracefully, handing its partitions over.
    fn terminate(&self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of a child not yet reaped.
        let sent = unsafe { libc::kill(self.pid()?, libc::SIGTERM) };
        anyhow::ensure!(sent == 0, "kill(SIGTERM) failed");
        Ok(())
    }

    /// Waits for the process to exit, at most `WAIT`.
    async fn exited(&mut self) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .with_context(|| format!("member {} still running after {WAIT:?}", self.name))?
            .map_err(Into::into)
    }

    /// SIGTERM, then a clean exit.
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.terminate()?;
        let status = self.exited().await?;
        anyhow::ensure!(
            status.success(),
            "member {} exited with {status} after SIGTERM; log: {}",
            self.name,
            self.log.display()
        );
        Ok(())
    }
}

/// Everything a test of this file uses.
struct Setup {
    server: NatsServer,
    broker: faststream_core::NatsBroker,
    store: jetstream::kv::Store,
    records: Records,
    dir: PathBuf,
    _collector: tokio::task::JoinHandle<()>,
}

impl Setup {
    /// A bucket keeping 64 revisions a key (so no revision is dropped before it is handled),
    /// the stream `RECORDS`, and a task reading it into `records`.
    async fn new(server: NatsServer, test: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("group_processes")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        crate::common::bucket_with_history(&server, BUCKET).await?;
        let broker = connected_broker(&server).await?;
        let jetstream = crate::common::jetstream(&server).await?;
        let store = jetstream.get_key_value(BUCKET).await?;
        let records_stream = jetstream
            .create_stream(stream::Config {
                name: "RECORDS".into(),
                subjects: vec!["records.>".into()],
                ..Default::default()
            })
            .await?;
        let mut messages = records_stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: "records.>".into(),
                ..Default::default()
            })
            .await?
            .messages()
            .await?;
        let records = Records::default();
        let sink = records.clone();
        let collector = tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                match serde_json::from_slice::<Record>(&message.payload) {
                    Ok(record) => sink.push_numbered(record),
                    Err(error) => tracing::error!(%error, "a record that is not one"),
                }
            }
        });
        Ok(Self {
            server,
            broker,
            store,
            records,
            dir,
            _collector: collector,
        })
    }

    fn member(&self, name: &str, session_timeout: Duration) -> anyhow::Result<Member> {
        Member::start(&self.server.url(), name, session_timeout, &self.dir)
    }

    /// A member whose wall clock is `skew` off (see [`Member::start_with_clock`]).
    fn skewed_member(
        &self,
        name: &str,
        session_timeout: Duration,
        skew: &str,
    ) -> anyhow::Result<Member> {
        Member::start_with_clock(
            &self.server.url(),
            name,
            session_timeout,
            &self.dir,
            Some(skew),
        )
    }

    /// Starts members `m0`, `m1` and `m2` and a writer, and returns once each member has
    /// handled 100 changes.
    async fn three_members_under_a_writer(
        &self,
        session_timeout: Duration,
    ) -> anyhow::Result<(Vec<Member>, Writer)> {
        let mut members = Vec::new();
        for name in ["m0", "m1", "m2"] {
            members.push(self.member(name, session_timeout)?);
        }
        self.wait_for_group(3).await?;
        let writer = Writer::start(self.store.clone(), KEYS, WRITE_PERIOD, false);
        self.wait_until_each_handled(100).await?;
        Ok((members, writer))
    }

    /// The keys `m1` held when it was stopped or killed at `at`, once each was handled by
    /// another member, with the first and last of those takeovers.
    async fn m1_keys_moved(
        &self,
        at: u64,
        what: &str,
    ) -> anyhow::Result<(BTreeSet<String>, Duration, Duration)> {
        let held = keys_held(&self.records.snapshot(), "m1", at);
        anyhow::ensure!(!held.is_empty(), "m1 held no key");
        let records = self
            .records
            .wait_for_within(what, WAIT, |records| {
                first_and_last(&taken_over(records, &held, "m1", at)).is_some()
            })
            .await?;
        let (first, last) =
            first_and_last(&taken_over(&records, &held, "m1", at)).context("taken over")?;
        Ok((held, first, last))
    }

    /// Some more changes under the writer with `m0` and `m2`, then the writer stopped, every
    /// change written handled, and `m0` and `m2` stopped: the records, what was written and
    /// the number of dead letters.
    async fn finish(
        &self,
        writer: Writer,
        members: &mut [Member],
    ) -> anyhow::Result<(Vec<Record>, BTreeMap<String, Vec<u64>>, u64)> {
        let ends = crate::group_support::ends(&self.records.snapshot());
        self.records.wait_for_ends(ends + 400, WAIT).await?;
        let written = writer.stop().await?;
        let records = self.records.wait_for_all_handled(&written, WAIT).await?;
        let dead_letters = self.dead_letters().await?;
        members[0].stop().await?;
        members[2].stop().await?;
        Ok((records, written, dead_letters))
    }

    /// Waits until each of `m0`, `m1` and `m2` has handled `count` changes.
    async fn wait_until_each_handled(&self, count: usize) -> anyhow::Result<()> {
        self.records
            .wait_for_within("every member handling changes", WAIT, |records| {
                ["m0", "m1", "m2"].iter().all(|member| {
                    records
                        .iter()
                        .filter(|r| r.is_end() && r.member == *member)
                        .count()
                        >= count
                })
            })
            .await?;
        Ok(())
    }

    async fn wait_for_group(&self, members: usize) -> anyhow::Result<()> {
        crate::group_support::wait_for_group(&self.broker, BUCKET, GROUP, members, PARTITIONS, WAIT)
            .await
            .with_context(|| format!("member logs in {}", self.dir.display()))
            .map(drop)
    }

    async fn dead_letters(&self) -> anyhow::Result<u64> {
        Ok(self
            .broker
            .kv_group(BUCKET, GROUP)
            .await?
            .info()
            .await?
            .dead_letters)
    }
}

/// Three members under a writer, one killed with SIGKILL: every change is handled, per key in
/// order and one call at a time, except that the killed member's unfinished call may be made
/// again by another; the killed member's partitions are taken over within a bound.
#[tokio::test]
async fn a_member_killed_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    on_each_server_since(2, 11, |server| async move {
        const SESSION: Duration = Duration::from_secs(2);
        // Measured 1.96-2.02 s (the session timeout, then at once); 1.5 s more for a loaded
        // 2-core machine.
        const TAKEOVER_BOUND: Duration = Duration::from_millis(3500);
        let started = Instant::now();
        let setup = Setup::new(server, "sigkill").await?;
        // Running for a while, each member handling its share.
        let (mut members, writer) = setup.three_members_under_a_writer(SESSION).await?;

        // Killed as soon as it is seen in a call, to catch it mid-call (often, not always:
        // a 2 ms call may end before the signal lands).
        setup
            .records
            .wait_for_within("m1 in a call", WAIT, |records| {
                records
                    .iter()
                    .rev()
                    .find(|r| r.member == "m1")
                    .is_some_and(Record::is_begin)
            })
            .await?;
        let killed_at = now_nanos();
        members[1].kill().await?;
        let (held, first, last) = setup
            .m1_keys_moved(killed_at, "m1's keys taken over")
            .await?;
        let (records, written, dead_letters) = setup.finish(writer, &mut members).await?;

        let checked = check_calls(
            &records,
            &written,
            Some("m1"),
            |_, _, before| before.last() == Some(&"m1"),
            false,
        )
        .with_context(|| format!("member logs in {}", setup.dir.display()))?;
        let total: usize = written.values().map(Vec::len).sum();
        println!(
            "SIGKILL of m1 ({} of {KEYS} keys) under {total} puts: taken over {first:?} (first \
             key) to {last:?} (all its keys) after the kill (session timeout {SESSION:?}); {} \
             calls, {} redelivered, {} unfinished at the kill; test {:?}",
            held.len(),
            checked.calls,
            checked.redeliveries,
            checked.unfinished,
            started.elapsed()
        );
        anyhow::ensure!(dead_letters == 0, "{dead_letters} dead letters");
        anyhow::ensure!(
            checked.redeliveries + checked.unfinished <= usize::from(PARTITIONS),
            "more calls repeated than the killed member had partitions: {checked:?}"
        );
        anyhow::ensure!(
            last < TAKEOVER_BOUND,
            "take-over took {last:?}, over {TAKEOVER_BOUND:?}"
        );
        Ok(())
    })
    .await
}

/// A member stopped with SIGTERM under a writer hands its partitions over: nothing lost,
/// nothing handled twice, no call overlapping another of its key, and the others take over
/// well within the session timeout (no waiting for a pin or an ack to time out).
#[tokio::test]
async fn a_member_stopped_with_sigterm_hands_over_at_once() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    on_each_server_since(2, 11, |server| async move {
        const SESSION: Duration = Duration::from_secs(5);
        // Measured 200 ms (a 5 s session timeout: the hand-over does not wait for it); 800 ms
        // more for a loaded 2-core machine.
        const HAND_OVER_BOUND: Duration = Duration::from_secs(1);
        let started = Instant::now();
        let setup = Setup::new(server, "sigterm").await?;
        let (mut members, writer) = setup.three_members_under_a_writer(SESSION).await?;

        let stopped_at = now_nanos();
        members[1].terminate()?;
        let (held, first, last) = setup
            .m1_keys_moved(stopped_at, "m1's keys handed over")
            .await?;
        let status = members[1].exited().await?;
        let exited = crate::group_support::between(stopped_at, now_nanos());
        anyhow::ensure!(status.success(), "m1 exited with {status}");
        let (records, written, dead_letters) = setup.finish(writer, &mut members).await?;

        let checked = check_calls(&records, &written, None, |_, _, _| false, false)
            .with_context(|| format!("member logs in {}", setup.dir.display()))?;
        let total: usize = written.values().map(Vec::len).sum();
        println!(
            "SIGTERM of m1 ({} of {KEYS} keys) under {total} puts: handed over {first:?} (first \
             key) to {last:?} (all its keys) after the signal (session timeout {SESSION:?}), \
             m1 exited after {exited:?}; {} calls, each change once; test {:?}",
            held.len(),
            checked.calls,
            started.elapsed()
        );
        anyhow::ensure!(dead_letters == 0, "{dead_letters} dead letters");
        anyhow::ensure!(
            last < HAND_OVER_BOUND,
            "hand-over took {last:?}, over {HAND_OVER_BOUND:?}"
        );
        Ok(())
    })
    .await
}

/// Every member stopped, changes made, one member started: it handles exactly the changes
/// made while the group was down, each once and per key in order.
#[tokio::test]
async fn a_member_started_after_a_full_stop_handles_what_was_missed() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    on_each_server_since(2, 11, |server| async move {
        const SESSION: Duration = Duration::from_secs(2);
        let started = Instant::now();
        let setup = Setup::new(server, "full_stop").await?;
        let mut members = vec![setup.member("m0", SESSION)?, setup.member("m1", SESSION)?];
        setup.wait_for_group(2).await?;
        let mut before = Vec::new();
        for i in 0..KEYS {
            let key = format!("k.{i}");
            before.push((key.clone(), setup.store.put(&key, "before".into()).await?));
        }
        let before = crate::group_support::per_key(before);
        setup.records.wait_for_all_handled(&before, WAIT).await?;
        for member in &mut members {
            member.stop().await?;
        }
        let handled_before = setup.records.snapshot().len();

        // Three changes a key while nobody runs.
        let mut down = Vec::new();
        for round in 0..3 {
            for i in 0..KEYS {
                let key = format!("k.{i}");
                let value = format!("down {round}");
                down.push((key.clone(), setup.store.put(&key, value.into()).await?));
            }
        }
        let down = crate::group_support::per_key(down);
        anyhow::ensure!(
            setup.records.snapshot().len() == handled_before,
            "handled while every member was stopped"
        );
        let mut last = setup.member("m2", SESSION)?;
        let restarted = Instant::now();
        setup.records.wait_for_all_handled(&down, WAIT).await?;
        let caught_up = restarted.elapsed();
        // Settled on the server too: nothing pending, nothing in flight.
        let group = setup.broker.kv_group(BUCKET, GROUP).await?;
        let info = faststream_testing::wait_for("nothing pending", WAIT, || async {
            let info = group.info().await?;
            let seen = format!("still pending: {info:?}");
            anyhow::Ok(((info.pending() == 0).then_some(info), seen))
        })
        .await?;
        anyhow::ensure!(info.dead_letters == 0, "{} dead letters", info.dead_letters);
        last.stop().await?;
        let after: Vec<Record> = setup.records.snapshot().split_off(handled_before);
        anyhow::ensure!(
            after.iter().all(|r| r.member == "m2"),
            "records of another member after the full stop"
        );
        let checked = check_calls(&after, &down, None, |_, _, _| false, false)
            .with_context(|| format!("member logs in {}", setup.dir.display()))?;
        let total: usize = down.values().map(Vec::len).sum();
        anyhow::ensure!(checked.calls == total, "{checked:?} for {total} changes");
        println!(
            "full stop: {total} changes made while down handled by the one member started \
             after, exactly once each, {caught_up:?} after its start; test {:?}",
            started.elapsed()
        );
        Ok(())
    })
    .await
}

/// The libfaketime library Debian's `faketime` package installs, or an error saying how to
/// install it.
fn libfaketime() -> anyhow::Result<PathBuf> {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"),
        "/usr/lib/faketime/libfaketime.so.1".to_owned(),
        "/usr/local/lib/faketime/libfaketime.so.1".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .context(
        "this test runs members with skewed clocks under libfaketime, which is not installed: \
         `apt-get install faketime` (`cargo xtask test` installs it)",
    )
}

/// Members on hosts whose wall clocks are hours off (m1 three hours ahead, m2 three hours
/// behind, under libfaketime; m0 on time) time each other with their own monotonic clocks:
/// the group forms and stays formed (no live member is dropped by a skewed one), a dead skewed
/// member is dropped by the others, and a skewed member drops a dead one, each within about a
/// session timeout.
#[tokio::test]
async fn members_with_skewed_clocks_drop_the_dead_and_only_them() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    libfaketime()?;
    on_each_server_since(2, 11, |server| async move {
        const SESSION: Duration = Duration::from_secs(2);
        const SKEW: Duration = Duration::from_secs(3 * 3600);
        // Measured: dropped 2.1-2.7 s after the kill (the session timeout, then the next
        // heartbeat reporting the new assignment); bound: twice the session timeout.
        const DROP_BOUND: Duration = Duration::from_secs(4);
        let setup = Setup::new(server, "skewed_clocks").await?;
        let mut members = [
            setup.member("m0", SESSION)?,
            setup.skewed_member("m1", SESSION, "+3h")?,
            setup.skewed_member("m2", SESSION, "-3h")?,
        ];
        setup.wait_for_group(3).await?;

        // The skew is in effect: the members' records carry their own wall-clock times.
        let writer = Writer::start(setup.store.clone(), KEYS, WRITE_PERIOD, false);
        setup.wait_until_each_handled(20).await?;
        writer.stop().await?;
        let now = now_nanos();
        for (member, ahead) in [("m1", true), ("m2", false)] {
            let record = setup
                .records
                .snapshot()
                .into_iter()
                .find(|r| r.member == member)
                .with_context(|| format!("no record of {member}"))?;
            let off = if ahead {
                crate::group_support::between(now, record.nanos)
            } else {
                crate::group_support::between(record.nanos, now)
            };
            anyhow::ensure!(
                off > SKEW - Duration::from_secs(600),
                "{member}'s clock is not three hours off: {off:?}"
            );
        }

        // Formed it stays: no member drops a live one over three session timeouts.
        let group = setup.broker.kv_group(BUCKET, GROUP).await?;
        let watched = Instant::now();
        while watched.elapsed() < SESSION * 3 {
            let info = group.info().await?;
            anyhow::ensure!(
                crate::group_support::covered(&info, 3, PARTITIONS),
                "the group came apart: {:?}",
                info.members
            );
            tokio::time::sleep(SESSION / 10).await;
        }

        // A dead skewed member is dropped by the others (one of them skewed too).
        members[1].kill().await?;
        let killed = Instant::now();
        setup.wait_for_group(2).await?;
        let dropped_skewed = killed.elapsed();
        // A dead member on time is dropped by a skewed one.
        members[0].kill().await?;
        let killed = Instant::now();
        setup.wait_for_group(1).await?;
        let dropped_by_skewed = killed.elapsed();
        members[2].stop().await?;
        println!(
            "skewed clocks: a dead member 3 h ahead dropped after {dropped_skewed:?}, a dead \
             member on time dropped by one 3 h behind after {dropped_by_skewed:?} (session \
             timeout {SESSION:?})"
        );
        for dropped in [dropped_skewed, dropped_by_skewed] {
            anyhow::ensure!(
                dropped < DROP_BOUND,
                "a dead member dropped after {dropped:?}, over {DROP_BOUND:?}"
            );
        }
        Ok(())
    })
    .await
}
