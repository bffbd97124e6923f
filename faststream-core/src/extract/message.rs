//! [`Message`]: what a handler's arguments are extracted from.

use std::fmt;

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::kv::message::KvMessage;
use crate::nats::NatsMessage;
use crate::object::ObjMessage;

/// One message as a subscriber received it, which its handler's arguments are built from: a
/// Key-Value change ([`kv`](Self::kv)), a change of an object store ([`obj`](Self::obj)) or a
/// message from a subject or a stream ([`nats`](Self::nats)). Extractors that read only the
/// payload, the headers or what the pattern matched ([`payload`](Self::payload),
/// [`headers`](Self::headers), [`key`](Self::key)) work for all of them.
#[derive(Debug, Clone)]
pub struct Message {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Kv(KvMessage),
    Obj(ObjMessage),
    Nats(NatsMessage),
}

impl Message {
    pub(crate) fn from_kv(kv: KvMessage) -> Self {
        Self {
            source: Source::Kv(kv),
        }
    }

    pub(crate) fn from_obj(object: ObjMessage) -> Self {
        Self {
            source: Source::Obj(object),
        }
    }

    pub(crate) fn from_nats(message: NatsMessage) -> Self {
        Self {
            source: Source::Nats(message),
        }
    }

    /// The payload: a Key-Value change's value (empty for `DEL`, `PURGE` and `EXPIRED`), an
    /// object change's object name (as FastStream's body), or a message's payload.
    pub fn payload(&self) -> &Bytes {
        match &self.source {
            Source::Kv(kv) => kv.value(),
            Source::Obj(object) => object.name_bytes(),
            Source::Nats(message) => message.payload(),
        }
    }

    /// The headers, if the message has any (an object change: the object's headers).
    pub fn headers(&self) -> Option<&HeaderMap> {
        match &self.source {
            Source::Kv(kv) => kv.headers(),
            Source::Obj(object) => object.headers(),
            Source::Nats(message) => message.headers(),
        }
    }

    /// What the subscriber's pattern matched: the key of a Key-Value change, the name of a
    /// changed object, the subject of a message.
    pub fn key(&self) -> &str {
        match &self.source {
            Source::Kv(kv) => kv.key(),
            Source::Obj(object) => object.name(),
            Source::Nats(message) => message.subject(),
        }
    }

    /// The Key-Value change, if the message is one.
    pub fn kv(&self) -> Option<&KvMessage> {
        match &self.source {
            Source::Kv(kv) => Some(kv),
            Source::Obj(_) | Source::Nats(_) => None,
        }
    }

    /// The change of an object store, if the message is one.
    pub fn obj(&self) -> Option<&ObjMessage> {
        match &self.source {
            Source::Obj(object) => Some(object),
            Source::Kv(_) | Source::Nats(_) => None,
        }
    }

    /// The message from a subject or a stream, if it is one.
    pub fn nats(&self) -> Option<&NatsMessage> {
        match &self.source {
            Source::Kv(_) | Source::Obj(_) => None,
            Source::Nats(message) => Some(message),
        }
    }

    /// How the framework's log lines name the message: `bucket | key | revision` for a
    /// Key-Value change, `bucket | object | revision` for an object's, `subject` for a core message, `stream | subject | sequence` for a
    /// JetStream delivery.
    pub(crate) fn label(&self) -> Label<'_> {
        Label(self)
    }

    /// The fields the framework's log events name the message with.
    pub(crate) fn log_fields(&self) -> LogFields<'_> {
        match &self.source {
            Source::Kv(kv) => LogFields {
                bucket: Some(kv.bucket()),
                key: Some(kv.key()),
                revision: Some(kv.revision()),
                ..LogFields::default()
            },
            Source::Obj(object) => LogFields {
                bucket: Some(object.bucket()),
                key: Some(object.name()),
                revision: Some(object.revision()),
                ..LogFields::default()
            },
            Source::Nats(message) => {
                let info = message.jetstream_info();
                LogFields {
                    subject: Some(message.subject()),
                    stream: info.map(|info| info.stream.as_str()),
                    sequence: info.map(|info| info.stream_sequence),
                    ..LogFields::default()
                }
            }
        }
    }
}

/// See [`Message::log_fields`].
#[derive(Debug, Default)]
pub(crate) struct LogFields<'a> {
    pub(crate) bucket: Option<&'a str>,
    pub(crate) key: Option<&'a str>,
    pub(crate) revision: Option<u64>,
    pub(crate) subject: Option<&'a str>,
    pub(crate) stream: Option<&'a str>,
    pub(crate) sequence: Option<u64>,
}

/// See [`Message::label`].
pub(crate) struct Label<'a>(&'a Message);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.source {
            Source::Kv(kv) => write!(f, "{} | {} | {}", kv.bucket(), kv.key(), kv.revision()),
            Source::Obj(object) => write!(
                f,
                "{} | {} | {}",
                object.bucket(),
                object.name(),
                object.revision()
            ),
            Source::Nats(message) => match message.jetstream_info() {
                Some(info) => write!(
                    f,
                    "{} | {} | {}",
                    info.stream,
                    message.subject(),
                    info.stream_sequence
                ),
                None => f.write_str(message.subject()),
            },
        }
    }
}
