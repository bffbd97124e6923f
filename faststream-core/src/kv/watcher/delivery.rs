//! What the reply subject of one delivered message says: its sequences, time and what is
//! pending. Runs for every entry, so nothing here allocates.

/// What the server's reply subject says about one delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delivery {
    pub(super) stream_sequence: u64,
    pub(super) consumer_sequence: u64,
    pub(super) timestamp_nanos: i128,
    pub(super) pending: u64,
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
mod props;

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
}
