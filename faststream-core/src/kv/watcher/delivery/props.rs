//! Property tests of what a watch reads from each message the network brings: the reply
//! subject (`parse_reply`) and the headers (`Operation::from_headers`). Whatever arrives, a
//! delivery or `None`, an operation, never a panic; and what a server writes reads back as
//! written.

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;

use super::{parse_reply, Delivery};
use crate::kv::message::Operation;

/// Keeps the whole set within seconds in debug builds: each case is microseconds.
const CASES: u32 = 1024;

/// A stream, consumer, domain or account token as a server names them: no `.`, not empty.
fn name_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,12}"
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (any::<u64>(), any::<u64>(), any::<i64>(), any::<u64>()).prop_map(
        |(stream_sequence, consumer_sequence, timestamp, pending)| Delivery {
            stream_sequence,
            consumer_sequence,
            timestamp_nanos: i128::from(timestamp),
            pending,
        },
    )
}

/// The numeric tokens of a reply subject, from `delivered` on.
fn numbers(delivered: u64, delivery: &Delivery) -> String {
    format!(
        "{delivered}.{}.{}.{}.{}",
        delivery.stream_sequence,
        delivery.consumer_sequence,
        delivery.timestamp_nanos,
        delivery.pending
    )
}

/// A header as the client's wire parser hands it over: a name of visible ASCII but `:`, often
/// one the watch reads, and a value of any text but line breaks.
fn header() -> impl Strategy<Value = (HeaderName, HeaderValue)> {
    let name = prop_oneof![
        select(vec![
            "KV-Operation",
            "Nats-Marker-Reason",
            "Nats-Msg-Size",
            "Nats-TTL"
        ])
        .prop_map(str::to_owned),
        "[!-9;-~]{1,16}",
    ];
    let value = prop_oneof![
        select(vec!["PUT", "DEL", "PURGE", "MaxAge", "Remove", "Purge", ""])
            .prop_map(str::to_owned),
        any::<String>().prop_map(|value| value.replace(['\r', '\n'], " ")),
    ];
    (name, value).prop_filter_map("a header the wire parser accepts", |(name, value)| {
        let name = name.parse::<HeaderName>().ok()?;
        let value = value.parse::<HeaderValue>().ok()?;
        Some((name, value))
    })
}

fn header_map(headers: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.clone(), value.clone());
    }
    map
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_reply_subject_is_read_or_refused_never_a_panic(
        reply in prop_oneof![
            any::<String>(),
            // Mostly the shape of a real one, so the parsing goes deep.
            prop::collection::vec(prop_oneof!["[0-9]{1,22}", "-?[0-9]{1,3}", "[A-Za-z_]{0,4}"], 0..16)
                .prop_map(|tokens| format!("$JS.ACK.{}", tokens.join("."))),
        ]
    ) {
        if let Some(delivery) = parse_reply(&reply) {
            // Only a `$JS.ACK.` subject of 9 tokens, or of 11 and more, is a delivery, and its
            // numbers are the tokens as written.
            let tokens: Vec<&str> = reply.split('.').collect();
            prop_assert!(reply.starts_with("$JS.ACK."), "{reply:?}");
            prop_assert!(tokens.len() == 9 || tokens.len() >= 11, "{reply:?}");
            let offset = if tokens.len() == 9 { 2 } else { 4 };
            let token = |index: usize| tokens[offset + index];
            prop_assert_eq!(token(3).parse().ok(), Some(delivery.stream_sequence));
            prop_assert_eq!(token(4).parse().ok(), Some(delivery.consumer_sequence));
            prop_assert_eq!(token(5).parse().ok(), Some(delivery.timestamp_nanos));
            prop_assert_eq!(token(6).parse().ok(), Some(delivery.pending));
        }
    }

    #[test]
    fn a_v1_reply_reads_back_as_written(
        stream in name_token(),
        consumer in name_token(),
        delivered in 1..=u64::MAX,
        delivery in delivery(),
    ) {
        let reply = format!("$JS.ACK.{stream}.{consumer}.{}", numbers(delivered, &delivery));
        prop_assert_eq!(parse_reply(&reply), Some(delivery));
    }

    #[test]
    fn a_v2_reply_reads_back_as_written_whatever_follows_pending(
        domain in prop_oneof![Just("_".to_owned()), name_token()],
        account in name_token(),
        stream in name_token(),
        consumer in name_token(),
        delivered in 1..=u64::MAX,
        delivery in delivery(),
        trailing in prop::collection::vec(name_token(), 0..4),
    ) {
        let mut reply = format!(
            "$JS.ACK.{domain}.{account}.{stream}.{consumer}.{}",
            numbers(delivered, &delivery)
        );
        for token in &trailing {
            reply.push('.');
            reply.push_str(token);
        }
        prop_assert_eq!(parse_reply(&reply), Some(delivery));
    }

    #[test]
    fn a_reply_with_a_number_that_is_none_is_refused(
        delivery in delivery(),
        spoiled in 1..5usize,
        junk in prop_oneof!["[A-Za-z]{1,4}", Just(String::new()), Just("1e3".to_owned())],
        v2 in any::<bool>(),
    ) {
        let mut tokens: Vec<String> = numbers(1, &delivery).split('.').map(str::to_owned).collect();
        tokens[spoiled] = junk;
        let head = if v2 { "$JS.ACK._.acc.KV_b.c" } else { "$JS.ACK.KV_b.c" };
        let reply = format!("{head}.{}", tokens.join("."));
        prop_assert_eq!(parse_reply(&reply), None, "{}", reply);
    }

    #[test]
    fn any_headers_give_an_operation_never_a_panic(
        headers in prop::collection::vec(header(), 0..6)
    ) {
        let map = header_map(&headers);
        let operation = Operation::from_headers(Some(&map));
        // The first `KV-Operation` decides, then the first marker reason; a put otherwise.
        let first = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| AsRef::<str>::as_ref(header) == name)
                .map(|(_, value)| value.as_str())
        };
        let expected = match (first("KV-Operation"), first("Nats-Marker-Reason")) {
            (Some("DEL"), _) => Operation::Delete,
            (Some("PURGE"), _) => Operation::Purge,
            (Some(_), _) | (None, None) => Operation::Put,
            (None, Some("MaxAge")) => Operation::Expired,
            (None, Some("Remove")) => Operation::Delete,
            (None, Some(_)) => Operation::Purge,
        };
        prop_assert_eq!(operation, expected, "{:?}", headers);
    }

    #[test]
    fn an_operation_written_by_a_client_or_the_server_reads_back(
        operation in select(vec![Operation::Put, Operation::Delete, Operation::Purge, Operation::Expired]),
        others in prop::collection::vec(
            header().prop_filter("not an operation header", |(name, _)| {
                !matches!(name.as_ref(), "KV-Operation" | "Nats-Marker-Reason")
            }),
            0..4,
        ),
    ) {
        let mut map = header_map(&others);
        match operation {
            // A client writes a put with no operation header at all.
            Operation::Put => {}
            Operation::Delete | Operation::Purge => map.insert("KV-Operation", operation.as_str()),
            // The server's marker for a key that aged out.
            Operation::Expired => map.insert("Nats-Marker-Reason", "MaxAge"),
        }
        prop_assert_eq!(Operation::from_headers(Some(&map)), operation);
    }
}
