//! A JetStream stream subscriber in a process of its own, for the tests that kill it
//! (tests/it/stream_processes.rs).
//!
//! It runs an [`App`] until SIGTERM/SIGINT (a graceful stop) with one handler, declared with
//! the attributes a service uses: `#[subscriber]` on the stream `WORK` (subjects `work.>`)
//! through the durable consumer `svc`, four calls at once, and `#[publisher("done.work")]`,
//! a subject the test's stream `DONE` captures. The test makes both streams and the consumer
//! (with the ack wait it wants) before starting a member; the app joins them.
//!
//! Each call prints `call <member> <stream sequence> <delivered>` on stdout before its work
//! (the handler delay), and returns `{"seq", "member"}`, which the publisher stores in `DONE`.
//! Rust's stdout is line-buffered: each line is one write(2), so a line printed before a
//! SIGKILL is in the pipe. `ready <member>` is printed once the app has started.
//!
//! Arguments, each `--name value`: `--url`, `--member`, `--delay-ms`.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use faststream_core::{
    after_startup, publisher, subscriber, App, BrokerConfig, Json, NatsMessage, State,
};

/// Who this member is, and how long each call works.
#[derive(Clone)]
struct Member {
    name: String,
    delay: Duration,
}

/// Prints one line on stdout at once.
fn say(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")
}

#[subscriber("work.>", stream = "WORK", durable = "svc", max_workers = 4)]
#[publisher("done.work")]
async fn handle(
    message: NatsMessage,
    State(member): State<Member>,
) -> anyhow::Result<Json<serde_json::Value>> {
    let info = message
        .jetstream_info()
        .context("a delivery without JetStream metadata")?;
    let (sequence, delivered) = (info.stream_sequence, info.delivered);
    say(&format!("call {} {sequence} {delivered}", member.name))?;
    tokio::time::sleep(member.delay).await;
    Ok(Json(
        serde_json::json!({ "seq": sequence, "member": member.name }),
    ))
}

#[after_startup]
async fn ready(State(member): State<Member>) -> anyhow::Result<()> {
    say(&format!("ready {}", member.name))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut arguments = tests::Arguments::from_env()?;
    let mut take = |name: &str| arguments.take(name);
    let url = take("url")?;
    let name = take("member")?;
    let delay = Duration::from_millis(take("delay-ms")?.parse().context("--delay-ms")?);
    arguments.finish()?;
    App::new(BrokerConfig::new(url).connection_name(name.clone()))
        .with_state(Member { name, delay })
        .run()
        .await?;
    Ok(())
}
