//! A member of a consumer group in a process of its own, for the tests that kill members
//! (tests/tests/group_processes.rs).
//!
//! It runs an [`App`] with one group subscriber until SIGTERM/SIGINT (a graceful hand-over).
//! The handler records a `begin` and an `end` event for every call by publishing them to the
//! JetStream stream `RECORDS` (subject `records.<member>`, made by the test) and waiting for
//! the server's acknowledgement, so a recorded `end` means the call completed; between them
//! it waits the handler delay (the work). Each record is JSON:
//! `{"member", "event", "key", "revision", "nanos"}` (wall-clock nanoseconds since the epoch).
//!
//! Arguments, each `--name value`: `--url` (comma-separated server URLs), `--bucket`,
//! `--group`, `--pattern`, `--partitions`, `--session-timeout-ms`, `--delay-ms`, `--member`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use faststream_core::kv::group::GroupSettings;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, State};

/// Where the handler records, and what it does.
#[derive(Clone)]
struct Recording {
    jetstream: async_nats::jetstream::Context,
    member: String,
    delay: Duration,
}

impl Recording {
    async fn record(&self, event: &str, message: &KvMessage) -> anyhow::Result<()> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let record = serde_json::json!({
            "member": self.member,
            "event": event,
            "key": message.key(),
            "revision": message.revision(),
            "nanos": u64::try_from(nanos)?,
        });
        self.jetstream
            .publish(
                format!("records.{}", self.member),
                record.to_string().into(),
            )
            .await?
            .await
            .with_context(|| format!("recording {event} of {}", message.key()))?;
        Ok(())
    }
}

async fn handle(message: KvMessage, State(recording): State<Recording>) -> anyhow::Result<()> {
    recording.record("begin", &message).await?;
    tokio::time::sleep(recording.delay).await;
    recording.record("end", &message).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut arguments = tests::Arguments::from_env()?;
    let mut take = |name: &str| arguments.take(name);
    let url = take("url")?;
    let bucket = take("bucket")?;
    let group = take("group")?;
    let pattern = take("pattern")?;
    let partitions: u16 = take("partitions")?.parse()?;
    let session_timeout = Duration::from_millis(take("session-timeout-ms")?.parse()?);
    let delay = Duration::from_millis(take("delay-ms")?.parse()?);
    let member = take("member")?;
    arguments.finish()?;

    let servers = url
        .split(',')
        .map(str::parse::<async_nats::ServerAddr>)
        .collect::<Result<Vec<_>, _>>()?;
    let records = async_nats::ConnectOptions::new()
        .name(format!("{member} records"))
        .connect(servers)
        .await
        .context("connecting for the records")?;
    let recording = Recording {
        jetstream: async_nats::jetstream::new(records),
        member: member.clone(),
        delay,
    };
    let watch = KvWatch::new(bucket).group(
        GroupSettings::new(group)
            .partitions(partitions)
            .session_timeout(session_timeout),
    );
    App::new(BrokerConfig::new(url).connection_name(member))
        .without_registered()
        .with_state(recording)
        .subscriber("member", pattern, watch, handle)
        .run()
        .await?;
    Ok(())
}
