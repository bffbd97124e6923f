//! `grouplive IMPL PREFIX N KEYS MEMBERS WORKERS PARTITIONS HANDLER_MS`, the child side of the
//! group workloads' live traffic: on a fresh bucket `PREFIX_<pid>`, starts the consumers (group
//! members, raw pull consumers or plain watch subscribers) and waits until they are ready; then
//! a writer on its own connection puts N changes over KEYS keys as fast as it can (pipelined,
//! 512 acks outstanding). Timed from before the first put to the last change handled, so a
//! group's copy into its mirror counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::kv::group::{GroupSettings, DEFAULT_PARTITIONS};
use faststream_core::{HookStage, KvWatch, State};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    report_started, wait_balanced, RunningApp, Started, GROUP, GROUP_NAME, GROUP_SESSION,
    GROUP_WAIT, PLAIN, RAW_MIRROR, RAW_PARTITIONS, RAW_PULL,
};
use crate::broker::{app, connected_broker};
use crate::common::{url, Progress, TIMEOUT};
use crate::data::{drop_bucket, prefill, write_pipelined};
use crate::measure::{server_cpu, usage};

/// One live-traffic run: a writer puts `n` changes over `keys` keys as fast as it can while
/// `members` consumers handle them, each with `workers` calls at once, the handler awaiting
/// `handler_ms` (0: it only counts).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LiveRun {
    /// Changes written.
    #[arg(value_name = "N", default_value_t = 20_000)]
    pub n: usize,
    /// Keys they are spread over.
    #[arg(value_name = "KEYS", default_value_t = 1_000)]
    pub keys: usize,
    /// Consumers (apps in this process) of the group or plain watch.
    #[arg(value_name = "MEMBERS", default_value_t = 1)]
    pub members: usize,
    /// `max_workers` of each.
    #[arg(value_name = "WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Partitions of the group (or of the raw side's mirror).
    #[arg(value_name = "PARTITIONS", default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u16,
    /// Milliseconds the handler awaits (0: it only counts).
    #[arg(value_name = "HANDLER_MS", default_value_t = 0)]
    pub handler_ms: u64,
}

impl LiveRun {
    /// The run as the arguments of `grouplive`, after IMPL and PREFIX.
    pub fn args(&self) -> Vec<String> {
        [
            self.n,
            self.keys,
            self.members,
            self.workers,
            usize::from(self.partitions),
            usize::try_from(self.handler_ms).unwrap_or(usize::MAX),
        ]
        .map(|value| value.to_string())
        .to_vec()
    }
}

/// How long the slow handler awaits.
#[derive(Clone, Copy)]
struct HandlerDelay(Duration);

/// The fast handler: counts and returns `Ok`.
async fn count(msg: String, State(progress): State<Arc<Progress>>) -> anyhow::Result<()> {
    std::hint::black_box(msg);
    progress.handled_one();
    Ok(())
}

/// The slow handler: awaits the delay, then counts.
async fn count_slowly(
    msg: String,
    State(progress): State<Arc<Progress>>,
    State(delay): State<HandlerDelay>,
) -> anyhow::Result<()> {
    std::hint::black_box(msg);
    tokio::time::sleep(delay.0).await;
    progress.handled_one();
    Ok(())
}

/// The watch of a group member of the live workloads.
fn group_watch(bucket: &str, run: &LiveRun) -> KvWatch {
    KvWatch::new(bucket.to_owned())
        .include_history(true)
        .declare(false)
        .max_workers(run.workers)
        .group(
            GroupSettings::new(GROUP_NAME)
                .partitions(run.partitions)
                .session_timeout(GROUP_SESSION),
        )
}

/// Starts `run.members` apps with the counting handler on `watch`, and waits until each has
/// started (joined its group, or caught up).
async fn start_counting_apps(
    watch: &KvWatch,
    run: &LiveRun,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<RunningApp>> {
    let (started, mut reports) = mpsc::unbounded_channel();
    let mut apps = Vec::with_capacity(run.members);
    for _ in 0..run.members {
        let app = app()
            .without_registered()
            .without_default_logging()
            .wait_for_catch_up(GROUP_WAIT)
            .with_state(Arc::clone(progress))
            .with_state(HandlerDelay(Duration::from_millis(run.handler_ms)))
            .with_state(Started(started.clone()))
            .hook(HookStage::AfterStartup, "started", report_started);
        let app = if run.handler_ms == 0 {
            app.subscriber("count", "k.*", watch.clone(), count)
        } else {
            app.subscriber("count", "k.*", watch.clone(), count_slowly)
        };
        apps.push(RunningApp::spawn(app));
    }
    for _ in 0..run.members {
        tokio::time::timeout(GROUP_WAIT, reports.recv())
            .await
            .context("an app did not start")?
            .context("an app ended while starting")?;
    }
    Ok(apps)
}

/// Reads a raw pull consumer with `messages()` in a task: decodes each value, counts it and
/// acknowledges it.
async fn spawn_raw_reader(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    progress: Arc<Progress>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| anyhow::anyhow!("{error}"))?;
            std::hint::black_box(String::from_utf8(message.payload.to_vec())?);
            progress.handled_one();
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        Ok(())
    }))
}

/// The raw async-nats consumers: [`RAW_PULL`], one durable pull consumer on `KV_<bucket>`; or,
/// on a partitioned mirror of the bucket made with async-nats (the subject transform a group
/// uses, `partitions` partitions), [`RAW_MIRROR`], one pull consumer, or [`RAW_PARTITIONS`], one
/// per partition with `max_ack_pending` 1. Explicit acks, every change from the start.
async fn start_raw(
    implementation: &str,
    bucket: &str,
    partitions: u16,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let (stream, filters): (stream::Stream, Vec<(String, i64)>) = if implementation == RAW_PULL {
        let stream = js.get_stream(format!("KV_{bucket}")).await?;
        (stream, vec![(format!("$KV.{bucket}.k.*"), 0)])
    } else {
        let mirror = js
            .create_stream(stream::Config {
                name: format!("RAWG_{bucket}"),
                mirror: Some(stream::Source {
                    name: format!("KV_{bucket}"),
                    subject_transforms: vec![stream::SubjectTransform {
                        source: format!("$KV.{bucket}.k.*"),
                        destination: format!(
                            "p.{{{{partition({partitions})}}}}.k.{{{{wildcard(1)}}}}"
                        ),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let filters = if implementation == RAW_PARTITIONS {
            (0..partitions).map(|p| (format!("p.{p}.>"), 1)).collect()
        } else {
            vec![("p.>".to_owned(), 0)]
        };
        (mirror, filters)
    };
    let mut tasks = Vec::with_capacity(filters.len());
    for (index, (filter_subject, max_ack_pending)) in filters.into_iter().enumerate() {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("raw{index}")),
                filter_subject,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                max_ack_pending,
                ..Default::default()
            })
            .await?;
        tasks.push(spawn_raw_reader(consumer, Arc::clone(progress)).await?);
    }
    Ok(tasks)
}

/// One live-traffic run; its JSON line.
pub async fn group_live(implementation: &str, prefix: &str, run: LiveRun) -> anyhow::Result<Value> {
    let bucket = format!("{prefix}_{}", std::process::id());
    anyhow::ensure!(
        run.n <= run.keys * usize::try_from(faststream_core::kv::MAX_HISTORY).unwrap_or(1),
        "{} changes over {} keys exceed the bucket's history: some would never be delivered",
        run.n,
        run.keys
    );
    prefill(&bucket, 0, run.keys).await?;
    let broker = connected_broker().await?;
    let progress = Arc::new(Progress::new(run.n));
    let (cpu_before, _) = usage();
    let (apps, raw) = match implementation {
        GROUP => {
            let apps = start_counting_apps(&group_watch(&bucket, &run), &run, &progress).await?;
            let group = broker.kv_group(&bucket, GROUP_NAME).await?;
            wait_balanced(&group, run.members, false).await?;
            (apps, Vec::new())
        }
        PLAIN => {
            let watch = KvWatch::new(bucket.clone())
                .include_history(true)
                .declare(false)
                .max_workers(run.workers);
            (
                start_counting_apps(&watch, &run, &progress).await?,
                Vec::new(),
            )
        }
        RAW_PULL | RAW_MIRROR | RAW_PARTITIONS => (
            Vec::new(),
            start_raw(implementation, &bucket, run.partitions, &progress).await?,
        ),
        other => anyhow::bail!("unknown live consumer {other:?}"),
    };
    let js = async_nats::jetstream::new(async_nats::connect(url()).await?);
    let server_before = server_cpu();
    let started = Instant::now();
    let writer = {
        let bucket = bucket.clone();
        tokio::spawn(async move {
            write_pipelined(&js, &bucket, run.n, run.keys, |i| format!("v{i}").into()).await?;
            anyhow::Ok(started.elapsed())
        })
    };
    tokio::time::timeout(TIMEOUT, progress.done.notified())
        .await
        .context("the consumers did not handle every change")?;
    let took = started.elapsed();
    let server_after = server_cpu();
    let write_time = writer.await??;
    let (cpu_after, peak_rss_kib) = usage();
    for app in apps {
        app.stop().await?;
    }
    for task in raw {
        task.abort();
    }
    if implementation == GROUP {
        broker.kv_group(&bucket, GROUP_NAME).await?.delete().await?;
    }
    if matches!(implementation, RAW_MIRROR | RAW_PARTITIONS) {
        let client = async_nats::connect(url()).await?;
        let _ = async_nats::jetstream::new(client)
            .delete_stream(format!("RAWG_{bucket}"))
            .await;
    }
    drop_bucket(&bucket).await?;
    Ok(json!({
        "impl": implementation,
        "mode": if run.handler_ms == 0 { "group_live" } else { "group_slow" },
        "n": run.n,
        "keys": run.keys,
        "members": if matches!(implementation, GROUP | PLAIN) { run.members } else { 1 },
        "max_workers": if matches!(implementation, GROUP | PLAIN) { json!(run.workers) } else { Value::Null },
        "partitions": if matches!(implementation, GROUP | RAW_MIRROR | RAW_PARTITIONS) {
            json!(run.partitions)
        } else {
            Value::Null
        },
        "handler_ms": run.handler_ms,
        "seconds": took.as_secs_f64(),
        "msgs_per_s": run.n as f64 / took.as_secs_f64(),
        "writer_puts_per_s": run.n as f64 / write_time.as_secs_f64(),
        "cpu_s": cpu_after.saturating_sub(cpu_before).as_secs_f64(),
        "server_cpu_s": server_before
            .zip(server_after)
            .map(|(before, after)| after.saturating_sub(before).as_secs_f64()),
        "session_timeout_s": if implementation == GROUP {
            json!(GROUP_SESSION.as_secs_f64())
        } else {
            Value::Null
        },
        "peak_rss_kib": peak_rss_kib,
    }))
}
