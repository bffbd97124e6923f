//! [`Message`]: what a handler's arguments are extracted from.

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::kv::message::KvMessage;

/// One message as a subscriber received it, which its handler's arguments are built from.
///
/// Today every subscriber watches a Key-Value bucket, so every message is a Key-Value change
/// ([`kv`](Self::kv)); extractors that read only the payload, the headers or the key
/// ([`payload`](Self::payload), [`headers`](Self::headers), [`key`](Self::key)) work for any
/// message a subscriber may receive.
#[derive(Debug, Clone)]
pub struct Message {
    kv: KvMessage,
}

impl Message {
    pub(crate) fn from_kv(kv: KvMessage) -> Self {
        Self { kv }
    }

    /// The payload: a Key-Value change's value (empty for `DEL`, `PURGE` and `EXPIRED`).
    pub fn payload(&self) -> &Bytes {
        self.kv.value()
    }

    /// The headers, if the message has any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.kv.headers()
    }

    /// What the subscriber's pattern matched: the key of a Key-Value change.
    pub fn key(&self) -> &str {
        self.kv.key()
    }

    /// The Key-Value change, if the message is one.
    pub fn kv(&self) -> Option<&KvMessage> {
        Some(&self.kv)
    }

    /// The Key-Value change, for the framework's own logs and spans.
    pub(crate) fn as_kv(&self) -> &KvMessage {
        &self.kv
    }
}
