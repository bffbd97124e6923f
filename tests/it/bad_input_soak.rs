//! A bad-input soak against a real server: one writer mixes valid JSON, invalid JSON, non-UTF-8
//! bytes, empty values, maximum-size values and deletions over 100 keys (ten of them not
//! numbers) while the app runs `Json<T>`, `String` and `Path<u64>` subscribers and, on 2.11+,
//! a consumer-group member. The app never stops; every change each subscriber can take is
//! handled exactly once, in order; every one it cannot is logged with where and what, counted
//! as `rejected` (a deletion for `Json<T>` as `skipped`), and for the group kept as a dead letter
//! at once.
//!
//! The watches use `include_history`, so each subscriber is sent every revision and the counts
//! are exact (a default watch may coalesce a key's revisions while it catches up).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use faststream_core::kv::group::GroupSettings;
use faststream_core::{App, BrokerConfig, Json, KvMessage, KvWatch, Path, State};
use faststream_testing::{http_get, NatsServer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

use crate::common::{bucket_with_history, on_each_server, Recorder, RunningApp};

const BUCKET: &str = "soak";
/// Changes written; with 100 keys, 60 per key: within the bucket's history of 64, so no
/// revision is dropped before a watch or the group has read it.
const WRITES: u64 = 6_000;
const KEYS: u64 = 100;
/// Keys `r.k0` to `r.k9`: no number, so `Path<u64>` rejects every change of them.
const KEYS_NOT_NUMBERS: u64 = 10;
/// Every 200th change is a maximum-size value: 30 of them, about 30 MB per subscriber.
const MAX_SIZE_EVERY: u64 = 200;
/// How long the subscribers may take, after the last write, to have handled every change: a
/// stalled or stopped one fails here. Measured in debug on the loaded 2-core machine: every
/// subscriber keeps pace with the writer (all handled 0.05 s after the last write; the whole
/// soak 3.7 s on 2.9.10, 5.9 s on 2.15.1 with the group); 20 s leaves room for a slower run.
const HANDLED_WITHIN: Duration = Duration::from_secs(20);

/// What one change wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    InvalidJson,
    NotUtf8,
    Empty,
    MaxSize,
    Deleted,
}

impl Kind {
    /// The deterministic mix: half valid, the rest bad in every way, a few at maximum size.
    fn of(index: u64) -> Self {
        if index % MAX_SIZE_EVERY == MAX_SIZE_EVERY - 1 {
            return Kind::MaxSize;
        }
        match index % 20 {
            0..=9 => Kind::Valid,
            10..=12 => Kind::InvalidJson,
            13 | 14 => Kind::NotUtf8,
            15 | 16 => Kind::Empty,
            _ => Kind::Deleted,
        }
    }
}

/// What the subscribers' handlers take from a valid value.
#[derive(Debug, serde::Deserialize)]
struct Reading {
    #[allow(dead_code)]
    n: u64,
}

/// The revisions each handler was called with, in call order.
#[derive(Clone, Default)]
struct Seen {
    json: Recorder<u64>,
    text: Recorder<u64>,
    path: Recorder<(u64, u64)>,
    group: Recorder<u64>,
}

async fn on_json(message: KvMessage, Json(reading): Json<Reading>, State(seen): State<Seen>) {
    std::hint::black_box(reading);
    seen.json.push(message.revision());
}

async fn on_text(message: KvMessage, text: String, State(seen): State<Seen>) {
    std::hint::black_box(text);
    seen.text.push(message.revision());
}

async fn on_path(message: KvMessage, Path(id): Path<u64>, State(seen): State<Seen>) {
    seen.path.push((message.revision(), id));
}

async fn on_group(message: KvMessage, Json(reading): Json<Reading>, State(seen): State<Seen>) {
    std::hint::black_box(reading);
    seen.group.push(message.revision());
}

/// The outcome a subscriber's call ends with for a change of `kind` to `key`.
fn outcome(subscriber: &str, kind: Kind, key: &str) -> &'static str {
    match (subscriber, kind) {
        ("json" | "group", Kind::Valid | Kind::MaxSize) => "ok",
        ("json" | "group", Kind::Deleted) => "skipped",
        ("json" | "group", _) => "rejected",
        ("text", Kind::NotUtf8) => "rejected",
        ("text", _) => "ok",
        _ if number_of(key).is_some() => "ok",
        _ => "rejected",
    }
}

/// The `{id}` of a key `r.<id>`, if it is a number.
fn number_of(key: &str) -> Option<u64> {
    key.strip_prefix("r.")?.parse().ok()
}

fn key_of(index: u64) -> String {
    let key = (index * 37) % KEYS;
    if key < KEYS - KEYS_NOT_NUMBERS {
        format!("r.{key}")
    } else {
        format!("r.k{}", key - (KEYS - KEYS_NOT_NUMBERS))
    }
}

/// The error lines of the dispatcher and the group member, each as its fields.
#[derive(Clone, Default)]
struct ErrorLines(Arc<Mutex<Vec<BTreeMap<&'static str, String>>>>);

#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let target = event.metadata().target();
        if *event.metadata().level() != tracing::Level::ERROR
            || !target.starts_with("faststream_core::dispatch")
        {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Ok(mut lines) = self.0.lock() {
            lines.push(fields.0);
        }
    }
}

impl ErrorLines {
    fn snapshot(&self) -> Vec<BTreeMap<&'static str, String>> {
        self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
    }
}

/// `faststream_kv_handled_total` by `(subscriber, outcome)`, and the group's given-up count.
fn handled_counts(text: &str) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let series = line
            .strip_prefix("faststream_kv_handled_total{")
            .map(|rest| (rest, "handled"))
            .or_else(|| {
                line.strip_prefix("faststream_kv_group_given_up_total{")
                    .map(|rest| (rest, "given_up"))
            });
        let Some((rest, family)) = series else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|pair| {
                let value = pair.strip_prefix(name)?.strip_prefix("=\"")?;
                value.strip_suffix('"').map(str::to_owned)
            })
        };
        let (Some(subscriber), Ok(value)) = (label("subscriber"), value.parse::<u64>()) else {
            continue;
        };
        let outcome = match family {
            "handled" => label("outcome").unwrap_or_default(),
            _ => "given_up".to_owned(),
        };
        counts.insert((subscriber, outcome), value);
    }
    counts
}

/// Writes the soak: returns each revision's key and kind, revision 1 first.
async fn write_soak(
    server: &NatsServer,
    store: &faststream_core::KeyValue,
) -> anyhow::Result<Vec<(String, Kind)>> {
    let max_payload = server.varz().await?["max_payload"]
        .as_u64()
        .context("varz without max_payload")? as usize;
    // The largest value the server takes: its max payload less the subject and headers,
    // found by the first maximum-size write.
    let mut max_size = max_payload;
    let mut written = Vec::new();
    for index in 0..WRITES {
        let key = key_of(index);
        let kind = Kind::of(index);
        let revision = written.len() as u64 + 1;
        match kind {
            Kind::Deleted => store.delete(&key).await?,
            Kind::MaxSize => loop {
                let head = format!(r#"{{"n": {index}, "pad": ""#);
                let pad = "x".repeat(max_size - head.len() - 2);
                let value = Bytes::from(format!("{head}{pad}\"}}"));
                match store.put(&key, value).await {
                    Ok(put) => {
                        anyhow::ensure!(put == revision, "{key}: revision {put}, not {revision}");
                        break;
                    }
                    Err(_) if max_size > max_payload - 512 => max_size -= 16,
                    Err(error) => anyhow::bail!("no value near {max_payload} bytes fits: {error}"),
                }
            },
            _ => {
                let value = match kind {
                    Kind::Valid => Bytes::from(format!(r#"{{"n": {index}}}"#)),
                    Kind::InvalidJson => Bytes::from(format!("not json {index}")),
                    Kind::NotUtf8 => Bytes::from(vec![0xff, 0xfe, (index % 256) as u8, 0x80]),
                    _ => Bytes::new(),
                };
                let put = store.put(&key, value).await?;
                anyhow::ensure!(put == revision, "{key}: revision {put}, not {revision}");
            }
        }
        written.push((key, kind));
    }
    // Each put got the next revision: so did each deletion before it.
    anyhow::ensure!(
        Kind::of(WRITES - 1) != Kind::Deleted,
        "the last write must be a put"
    );
    Ok(written)
}

#[tokio::test]
async fn bad_input_soak_never_stops_and_counts_each_change_by_its_outcome() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let groups = server.binary().version_at_least(2, 11);
        let errors = ErrorLines::default();
        // Everything here runs on this thread (a current-thread runtime): the app's tasks too.
        let _capture = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(errors.clone())
                // The rejection lines, thousands, are counted rather than printed.
                .with(tracing_subscriber::fmt::layer().with_test_writer().with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn,faststream_core::dispatch=off".into()),
                )),
        );
        let store = bucket_with_history(&server, BUCKET).await?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let seen = Seen::default();
        let watch = || KvWatch::new(BUCKET).include_history(true);
        let mut subscribers = vec!["json", "text", "path"];
        let mut app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(seen.clone())
            .http_listener(listener)
            .subscriber("json", "r.*", watch(), on_json)
            .subscriber("text", "r.*", watch(), on_text)
            .subscriber("path", "r.{id}", watch(), on_path);
        if groups {
            let settings = GroupSettings::new("soakers")
                .partitions(4)
                .max_attempts(2)
                .backoff([Duration::from_millis(50)]);
            let member = watch().max_workers(4).group(settings);
            app = app.subscriber("group", "r.*", member, on_group);
            subscribers.push("group");
        }
        let running = RunningApp::spawn(app);
        let ready = format!("http://{addr}/health/ready");
        let ready = ready.as_str();
        faststream_testing::wait_for("ready", crate::common::EVENT_TIMEOUT, move || async move {
            let response = http_get(ready, &[]).await?;
            anyhow::Ok(((response.status == 200).then_some(()), response.body))
        })
        .await?;

        let started = Instant::now();
        let written = write_soak(&server, &store).await?;
        let wrote_in = started.elapsed();

        let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
        for subscriber in &subscribers {
            for outcome in ["ok", "error", "panic", "timeout", "skipped", "rejected"] {
                expected.insert((subscriber.to_string(), outcome.to_owned()), 0);
            }
            for (key, kind) in &written {
                let outcome = outcome(subscriber, *kind, key).to_owned();
                *expected.entry((subscriber.to_string(), outcome)).or_default() += 1;
            }
        }
        if groups {
            let rejected = expected[&("group".to_owned(), "rejected".to_owned())];
            expected.insert(("group".to_owned(), "given_up".to_owned()), rejected);
        }
        let metrics = format!("http://{addr}/metrics");
        let (metrics, expected_ref) = (metrics.as_str(), &expected);
        faststream_testing::wait_for("every change handled", HANDLED_WITHIN, move || async move {
            let response = http_get(metrics, &[]).await?;
            let counts = handled_counts(&response.body);
            let differ: Vec<String> = expected_ref
                .iter()
                .filter(|(series, count)| counts.get(*series) != Some(*count))
                .map(|(series, count)| format!("{series:?} = {count} (is {:?})", counts.get(series)))
                .collect();
            anyhow::Ok((differ.is_empty().then_some(()), differ.join("; ")))
        })
        .await?;
        let handled_in = started.elapsed();

        // The app is still up and ready after all of it.
        let still = http_get(ready, &[]).await?;
        assert_eq!(still.status, 200, "{}", still.body);

        // Each subscriber was called once for each change it can take, in revision order (the
        // group: in revision order per key).
        let called = |subscriber: &str| -> Vec<u64> {
            (1..=written.len() as u64)
                .filter(|revision| {
                    let (key, kind) = &written[*revision as usize - 1];
                    outcome(subscriber, *kind, key) == "ok"
                })
                .collect()
        };
        assert_eq!(seen.json.snapshot(), called("json"), "json");
        assert_eq!(seen.text.snapshot(), called("text"), "text");
        let path = seen.path.snapshot();
        assert_eq!(path.iter().map(|(revision, _)| *revision).collect::<Vec<_>>(), called("path"));
        for (revision, id) in &path {
            let key = &written[*revision as usize - 1].0;
            assert_eq!(Some(*id), number_of(key), "revision {revision} of {key}");
        }
        if groups {
            let mut group = seen.group.snapshot();
            let mut last_per_key: BTreeMap<&str, u64> = BTreeMap::new();
            for revision in &group {
                let key = written[*revision as usize - 1].0.as_str();
                let before = last_per_key.insert(key, *revision);
                assert!(before < Some(*revision), "{key}: {before:?} then {revision}");
            }
            group.sort_unstable();
            assert_eq!(group, called("group"), "group");
        }

        // Every rejection is logged once, with where (bucket, key, revision) and what (the
        // argument, its type, the decode error).
        let lines = errors.snapshot();
        for subscriber in &subscribers {
            let rejected: Vec<u64> = (1..=written.len() as u64)
                .filter(|revision| {
                    let (key, kind) = &written[*revision as usize - 1];
                    outcome(subscriber, *kind, key) == "rejected"
                })
                .collect();
            let mut logged = Vec::new();
            for line in lines.iter().filter(|line| {
                line.get("subscriber").map(String::as_str) == Some(*subscriber)
                    && line.contains_key("argument")
            }) {
                let revision: u64 = line["revision"].parse()?;
                let (key, kind) = &written[revision as usize - 1];
                assert_eq!(line["bucket"], BUCKET, "{line:?}");
                assert_eq!(&line["key"], key, "{line:?}");
                assert_eq!(line["argument"], "2", "{line:?}");
                let (argument_type, error) = match (*subscriber, kind) {
                    ("text", _) => ("String", "value is not UTF-8 text"),
                    ("path", _) => ("Path<u64>", "do not fit `u64`: `k"),
                    (_, Kind::Empty) => ("Json<", "EOF while parsing a value"),
                    _ => ("Json<", "value is not valid JSON for `"),
                };
                assert!(line["argument_type"].contains(argument_type), "{line:?}");
                assert!(line["error"].contains(error), "{line:?}");
                assert!(
                    line["message"].contains("argument 2 (`") && line["message"].contains(key),
                    "{line:?}"
                );
                logged.push(revision);
            }
            logged.sort_unstable();
            assert_eq!(logged, rejected, "{subscriber}: rejections logged");
        }
        if groups {
            // The member's own line for each: given up at once, kept as a dead letter.
            let given_up = lines
                .iter()
                .filter(|line| {
                    line.get("subscriber").map(String::as_str) == Some("group")
                        && line.get("message").is_some_and(|message| {
                            message.contains("given up after 1 attempt(s)")
                        })
                })
                .count() as u64;
            assert_eq!(given_up, expected[&("group".to_owned(), "rejected".to_owned())]);
        }

        if groups {
            let rejected = expected[&("group".to_owned(), "rejected".to_owned())];
            let broker = crate::common::connected_broker(&server).await?;
            let group = broker.kv_group(BUCKET, "soakers").await?;
            let letters = group.dead_letters().await?;
            let mut revisions: Vec<u64> = letters.iter().map(|letter| letter.revision).collect();
            revisions.sort_unstable();
            let expected_letters: Vec<u64> = (1..=written.len() as u64)
                .filter(|revision| {
                    let (key, kind) = &written[*revision as usize - 1];
                    outcome("group", *kind, key) == "rejected"
                })
                .collect();
            assert_eq!(revisions, expected_letters, "dead letters");
            assert_eq!(letters.len() as u64, rejected);
            for letter in &letters {
                assert_eq!(letter.attempts, 1, "{letter:?}");
                assert!(letter.error.contains("rejected the entry"), "{letter:?}");
            }
            let info = group.info().await?;
            assert_eq!(info.pending(), 0, "{info:?}");
        }

        let mut per_kind: BTreeMap<String, u64> = BTreeMap::new();
        for (_, kind) in &written {
            *per_kind.entry(format!("{kind:?}")).or_default() += 1;
        }
        eprintln!(
            "bad-input soak on {}: wrote {} changes in {wrote_in:?}, all handled after {handled_in:?}; per kind {per_kind:?}; per subscriber and outcome {expected:?}",
            server.binary().version,
            written.len()
        );
        running.stop().await??;
        Ok(())
    })
    .await
}
