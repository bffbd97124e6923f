//! Property tests of how a group member reads each message the network brings on a
//! partition's inbox (`PartitionPuller::delivery`): its subject, reply subject and headers.
//! Whatever arrives is a change or nothing, never a panic; and a change as the server sends it
//! reads back as written. The puller is a real one, subscribed on a real server; the messages
//! are handed to it directly, so any subject, reply and header can be tried.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream;
use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

use super::{GroupLayout, PartitionPuller};
use crate::kv::message::Operation;

/// Keeps the whole set within seconds in debug builds: each case is microseconds.
const CASES: u32 = 512;

/// A server of the oldest version found and a JetStream context on it: the puller only
/// subscribes to its inbox, which every version allows.
async fn jetstream_context() -> anyhow::Result<(faststream_testing::NatsServer, jetstream::Context)>
{
    faststream_testing::init_test_logging();
    let binaries = faststream_testing::ServerBinary::discover()?;
    let binary = binaries.first().context("no nats-server found")?;
    let server = faststream_testing::NatsServer::start(binary).await?;
    let client = async_nats::connect(server.url()).await?;
    Ok((server, jetstream::new(client)))
}

async fn puller(
    context: &jetstream::Context,
    without_values: bool,
) -> anyhow::Result<PartitionPuller> {
    let layout = GroupLayout::new("shop", "billing");
    let puller = PartitionPuller::start(
        context.clone(),
        &layout,
        3,
        Duration::from_secs(6),
        without_values,
    )
    .await?;
    Ok(puller)
}

/// A header as the client's wire parser hands it over: a name of visible ASCII but `:`, often
/// one the member reads, and a value of any text but line breaks.
fn header() -> impl Strategy<Value = (HeaderName, HeaderValue)> {
    let name = prop_oneof![
        select(vec!["KV-Operation", "Nats-Marker-Reason", "Nats-Pin-Id"]).prop_map(str::to_owned),
        "[!-9;-~]{1,16}",
    ];
    let value = prop_oneof![
        select(vec!["DEL", "PURGE", "MaxAge", ""]).prop_map(str::to_owned),
        any::<String>().prop_map(|value| value.replace(['\r', '\n'], " ")),
    ];
    (name, value).prop_filter_map("a header the wire parser accepts", |(name, value)| {
        Some((
            name.parse::<HeaderName>().ok()?,
            value.parse::<HeaderValue>().ok()?,
        ))
    })
}

/// Any message: subjects and replies of any text, or shaped like the real ones so the parsing
/// goes deep.
fn any_message() -> impl Strategy<Value = async_nats::Message> {
    let subject = prop_oneof![any::<String>(), "p\\.[0-9x]{0,6}(\\.[a-z*>]{0,3}){0,3}"];
    let reply = prop::option::of(prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof!["-?[0-9]{1,22}", "[A-Za-z_]{0,4}"], 0..14)
            .prop_map(|tokens| format!("$JS.ACK.{}", tokens.join("."))),
    ]);
    let headers = prop::option::of(prop::collection::vec(header(), 0..5));
    let payload = prop::collection::vec(any::<u8>(), 0..32);
    (subject, reply, headers, payload).prop_map(|(subject, reply, headers, payload)| {
        message(
            subject,
            reply,
            headers.map(|headers| header_map(&headers)),
            payload,
        )
    })
}

fn header_map(headers: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.clone(), value.clone());
    }
    map
}

fn message(
    subject: String,
    reply: Option<String>,
    headers: Option<HeaderMap>,
    payload: Vec<u8>,
) -> async_nats::Message {
    let length = subject.len() + payload.len();
    async_nats::Message {
        subject: subject.into(),
        reply: reply.map(Into::into),
        payload: Bytes::from(payload),
        headers,
        status: None,
        description: None,
        length,
    }
}

/// A change as the server sends it on a partition's consumer.
#[derive(Debug, Clone)]
struct Sent {
    partition: u16,
    key: String,
    v2: bool,
    delivered: i64,
    stream_sequence: u64,
    consumer_sequence: u64,
    published_nanos: u64,
    pending: u64,
    operation: Operation,
    pin: Option<String>,
    payload: Vec<u8>,
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        (
            any::<u16>(),
            prop::collection::vec("[A-Za-z0-9/=_-]{1,8}", 1..5),
            any::<bool>(),
        ),
        (
            0..=i64::MAX,
            any::<u64>(),
            any::<u64>(),
            0..=i64::MAX as u64,
            any::<u64>(),
        ),
        select(vec![
            Operation::Put,
            Operation::Delete,
            Operation::Purge,
            Operation::Expired,
        ]),
        prop::option::of("[A-Za-z0-9]{1,22}"),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|((partition, key, v2), numbers, operation, pin, payload)| {
            let (delivered, stream_sequence, consumer_sequence, published_nanos, pending) = numbers;
            Sent {
                partition,
                key: key.join("."),
                v2,
                delivered,
                stream_sequence,
                consumer_sequence,
                published_nanos,
                pending,
                operation,
                pin,
                payload,
            }
        })
}

impl Sent {
    fn message(&self) -> async_nats::Message {
        let head = if self.v2 {
            "$JS.ACK.hub.ACCHASH.KVG_shop_billing.p3"
        } else {
            "$JS.ACK.KVG_shop_billing.p3"
        };
        let reply = format!(
            "{head}.{}.{}.{}.{}.{}",
            self.delivered,
            self.stream_sequence,
            self.consumer_sequence,
            self.published_nanos,
            self.pending
        );
        let mut headers = HeaderMap::new();
        match self.operation {
            Operation::Put => {}
            Operation::Expired => headers.insert("Nats-Marker-Reason", "MaxAge"),
            other => headers.insert("KV-Operation", other.as_str()),
        }
        if let Some(pin) = &self.pin {
            headers.insert("Nats-Pin-Id", pin.as_str());
        }
        let subject = format!("p.{}.{}", self.partition, self.key);
        message(subject, Some(reply), Some(headers), self.payload.clone())
    }
}

/// Runs `check` on `CASES` values of `strategy`; the error names the smallest failing one.
fn run<S: Strategy>(
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> anyhow::Result<()> {
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&strategy, check)
        .map_err(|error| anyhow::anyhow!("{error}"))
}

#[tokio::test]
async fn any_message_is_a_change_or_nothing_never_a_panic() -> anyhow::Result<()> {
    let (_server, context) = jetstream_context().await?;
    let puller = RefCell::new(puller(&context, false).await?);
    run(any_message(), |message| {
        let (subject, reply) = (message.subject.to_string(), message.reply.clone());
        if let Ok(delivery) = puller.borrow_mut().delivery(message) {
            // Only a partition's subject with a key, and a JetStream reply, make a change.
            let key = subject.splitn(3, '.').nth(2);
            prop_assert_eq!(Some(delivery.message.key()), key);
            prop_assert!(subject.starts_with("p."), "{subject:?}");
            let reply = reply.map(|reply| reply.to_string()).unwrap_or_default();
            prop_assert!(reply.starts_with("$JS.ACK."), "{reply:?}");
            prop_assert!(delivery.delivered >= 1);
            prop_assert_eq!(delivery.message.bucket(), "shop");
        }
        Ok(())
    })
}

#[tokio::test]
async fn a_change_as_the_server_sends_it_reads_back() -> anyhow::Result<()> {
    let (_server, context) = jetstream_context().await?;
    for without_values in [false, true] {
        let puller = RefCell::new(puller(&context, without_values).await?);
        run(sent(), |sent| {
            let mut puller = puller.borrow_mut();
            let delivery = puller.delivery(sent.message());
            prop_assert!(delivery.is_ok(), "{sent:?} was not read");
            let Ok(delivery) = delivery else {
                return Ok(());
            };
            let message = &delivery.message;
            prop_assert_eq!(message.key(), sent.key.as_str());
            prop_assert_eq!(message.bucket(), "shop");
            prop_assert_eq!(message.revision(), sent.stream_sequence);
            prop_assert_eq!(delivery.stream_sequence, sent.stream_sequence);
            prop_assert_eq!(message.delta(), sent.pending);
            let published = SystemTime::UNIX_EPOCH + Duration::from_nanos(sent.published_nanos);
            prop_assert_eq!(message.created(), published);
            // The server counts deliveries from 1; a 0 is taken as the first.
            let delivered = u64::try_from(sent.delivered).unwrap_or(1).max(1);
            prop_assert_eq!(delivery.delivered, delivered);
            prop_assert_eq!(message.operation(), sent.operation);
            prop_assert_eq!(message.value_size(), sent.payload.len());
            let value: &[u8] = if without_values { &[] } else { &sent.payload };
            prop_assert_eq!(message.value().as_ref(), value);
            if let Some(pin) = &sent.pin {
                prop_assert_eq!(puller.pin(), Some(pin.as_str()));
            }
            Ok(())
        })?;
    }
    Ok(())
}
