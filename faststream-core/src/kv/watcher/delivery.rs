//! What one delivered message says: the metadata in its reply subject, and the operation in
//! its headers. Runs for every entry, so nothing here allocates.

use async_nats::HeaderMap;

use crate::kv::message::Operation;

/// What the server's reply subject says about one delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delivery {
    pub(super) stream_sequence: u64,
    pub(super) consumer_sequence: u64,
    pub(super) timestamp_nanos: i128,
    pub(super) pending: u64,
}

/// `DEL` and `PURGE` as written by clients (`KV-Operation`), or a limit marker written by the
/// server since 2.11 (`Nats-Marker-Reason`).
///
/// What the markers look like, as seen on nats-server 2.15.1 (a bucket with
/// `allow_msg_ttl` and `subject_delete_marker_ttl`):
/// - a key whose last revision ages out, by the stream's `max_age` or its own `Nats-TTL`, is
///   replaced by an empty message with `Nats-Marker-Reason: MaxAge`, `Nats-TTL: <marker TTL>`
///   (e.g. `1s`) and `Nats-Rollup: sub`, and no `KV-Operation`;
/// - a `purge_with_ttl` writes a client purge (`KV-Operation: PURGE` plus `Nats-TTL`); when that
///   purge ages out, no marker follows: the key simply has no entry any more;
/// - the server raises a `Nats-TTL` shorter than the marker TTL to it (a 1 s
///   `create_with_ttl` in a bucket keeping markers 5 s is stored with `Nats-TTL: 5`);
/// - `Purge` and `Remove` are reasons the server defines but was not seen writing: a stream
///   purge of one key's subject left no marker, and buckets deny message deletes. They are
///   mapped as async-nats maps them, in case a server writes them.
///
/// So `KV-Operation` and `Nats-Marker-Reason` never meet on one message; `KV-Operation` is read
/// first, as async-nats does. Unlike async-nats (which reports `MaxAge` as a purge), an expiry
/// is its own [`Operation::Expired`]. An unknown reason counts as a purge: the key's
/// value is gone whatever the reason.
pub(crate) fn operation(headers: Option<&HeaderMap>) -> Operation {
    let Some(headers) = headers else {
        return Operation::Put;
    };
    if let Some(operation) = headers.get("KV-Operation") {
        return match operation.as_str() {
            "DEL" => Operation::Delete,
            "PURGE" => Operation::Purge,
            _ => Operation::Put,
        };
    }
    match headers
        .get("Nats-Marker-Reason")
        .map(|reason| reason.as_str())
    {
        None => Operation::Put,
        Some("MaxAge") => Operation::Expired,
        Some("Remove") => Operation::Delete,
        Some(_) => Operation::Purge,
    }
}

/// Parses a JetStream delivery reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` or, since 2.9,
/// `$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>...`
/// (the server may append tokens after `pending`; they are ignored).
pub(super) fn parse_reply(reply: &str) -> Option<Delivery> {
    // The first 11 tokens and a count, without allocating: this runs for every entry.
    let mut tokens = [""; 11];
    let mut count = 0;
    for token in reply.split('.') {
        if let Some(slot) = tokens.get_mut(count) {
            *slot = token;
        }
        count += 1;
    }
    if tokens[..2] != ["$JS", "ACK"] {
        return None;
    }
    let offset = match count {
        9 => 2,
        11.. => 4,
        _ => return None,
    };
    let field = |index: usize| tokens[offset + index];
    Some(Delivery {
        stream_sequence: field(3).parse().ok()?,
        consumer_sequence: field(4).parse().ok()?,
        timestamp_nanos: field(5).parse().ok()?,
        pending: field(6).parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects() {
        let v1 = parse_reply("$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.3");
        assert_eq!(
            v1,
            Some(Delivery {
                stream_sequence: 42,
                consumer_sequence: 7,
                timestamp_nanos: 1_700_000_000_000_000_000,
                pending: 3
            })
        );
        let v2 = parse_reply("$JS.ACK.hub.ACCHASH.KV_b.cons.1.42.7.1700000000000000000.3.tok");
        assert_eq!(v2, v1);
        assert_eq!(parse_reply("_INBOX.x"), None);
        assert_eq!(parse_reply("$JS.ACK.KV_b.cons.1.x.7.1.3"), None);
        // Newer servers may append tokens to the v2 format.
        let longer = "$JS.ACK.hub.ACCHASH.KV_b.cons.1.42.7.1700000000000000000.3.tok.more.x";
        assert_eq!(parse_reply(longer), v1);
        assert_eq!(parse_reply("$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m"), None);
        assert_eq!(
            parse_reply("$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.3.x"),
            None
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, *value);
        }
        headers
    }

    #[test]
    fn operations() {
        let cases: &[(&[(&str, &str)], Operation)] = &[
            (&[], Operation::Put),
            (&[("KV-Operation", "PUT")], Operation::Put),
            (&[("KV-Operation", "DEL")], Operation::Delete),
            (
                &[("KV-Operation", "PURGE"), ("Nats-Rollup", "sub")],
                Operation::Purge,
            ),
            // A purge_with_ttl, as written by async-nats.
            (
                &[
                    ("KV-Operation", "PURGE"),
                    ("Nats-TTL", "2"),
                    ("Nats-Rollup", "sub"),
                ],
                Operation::Purge,
            ),
            // A create_with_ttl is a put.
            (
                &[
                    ("Nats-TTL", "1"),
                    ("Nats-Expected-Last-Subject-Sequence", "0"),
                ],
                Operation::Put,
            ),
            // Server markers, as nats-server 2.15.1 writes them.
            (
                &[
                    ("Nats-Marker-Reason", "MaxAge"),
                    ("Nats-TTL", "1s"),
                    ("Nats-Rollup", "sub"),
                ],
                Operation::Expired,
            ),
            (&[("Nats-Marker-Reason", "Purge")], Operation::Purge),
            (&[("Nats-Marker-Reason", "Remove")], Operation::Delete),
            (&[("Nats-Marker-Reason", "SomethingNew")], Operation::Purge),
            // KV-Operation first, as async-nats and nats.go read it.
            (
                &[("KV-Operation", "DEL"), ("Nats-Marker-Reason", "MaxAge")],
                Operation::Delete,
            ),
        ];
        assert_eq!(operation(None), Operation::Put);
        for (pairs, expected) in cases {
            assert_eq!(operation(Some(&headers(pairs))), *expected, "{pairs:?}");
        }
    }
}
