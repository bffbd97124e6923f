//! Settling a delivery: an acknowledgement published to its reply subject, which also tells the
//! delivery's place (ADR-15), read here without building a `jetstream::Message` (that clones the
//! JetStream context, a client, for every delivery).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};

/// Settles one delivery: acknowledges it, asks for it again later, or terminates it.
#[derive(Debug, Clone)]
pub(crate) struct Acker {
    reply: Subject,
    client: Arc<Client>,
}

impl Acker {
    pub(super) fn new(reply: Subject, client: Arc<Client>) -> Self {
        Self { reply, client }
    }

    async fn send(&self, kind: AckKind) -> Result<(), async_nats::Error> {
        self.client
            .publish(self.reply.clone(), kind.into())
            .await
            .map_err(Into::into)
    }

    /// Done: the server records it and sends the partition's next change.
    pub(crate) async fn ack(&self) -> Result<(), async_nats::Error> {
        self.send(AckKind::Ack).await
    }

    /// Not done: deliver it again after `delay` (to whichever member holds the pin then).
    pub(crate) async fn retry_after(&self, delay: Duration) -> Result<(), async_nats::Error> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    /// Still working on it: restarts the server's ack wait.
    pub(crate) async fn progress(&self) -> Result<(), async_nats::Error> {
        self.send(AckKind::Progress).await
    }

    /// Given up: never deliver it again.
    pub(crate) async fn terminate(&self) -> Result<(), async_nats::Error> {
        self.send(AckKind::Term).await
    }
}

/// What a delivery's reply subject says of it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckInfo {
    pub(super) delivered: u64,
    pub(super) stream_sequence: u64,
    pub(super) published_nanos: i128,
    pub(super) pending: u64,
}

/// Reads `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the form with the domain and account hash first and more tokens after (ADR-15).
pub(super) fn ack_info(reply: &str) -> Option<AckInfo> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let fields = match tokens.len() {
        7 => &tokens[2..7],
        count if count >= 9 => &tokens[4..9],
        _ => return None,
    };
    Some(AckInfo {
        delivered: fields[0].parse().ok()?,
        stream_sequence: fields[1].parse().ok()?,
        published_nanos: fields[3].parse().ok()?,
        pending: fields[4].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_the_reply_subject_are_read() {
        let expected = AckInfo {
            delivered: 2,
            stream_sequence: 41,
            published_nanos: 1_700_000_000_000_000_000,
            pending: 7,
        };
        let old = "$JS.ACK.KVG_shop_billing.p3.2.41.9.1700000000000000000.7";
        assert_eq!(ack_info(old), Some(expected));
        let new = "$JS.ACK.hub.ACCHASH.KVG_shop_billing.p3.2.41.9.1700000000000000000.7.r4nd";
        assert_eq!(ack_info(new).map(|info| info.stream_sequence), Some(41));
        assert_eq!(ack_info("$JS.ACK.s.c.x.41.9.1.7"), None);
        assert_eq!(ack_info("_INBOX.abc"), None);
        assert_eq!(ack_info("$JS.ACK.s.c.2.41.9.1"), None);
    }
}
