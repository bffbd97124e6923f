//! What a watch loop's entries are: the changes of a bucket's keys, or the metadata of an
//! object store's objects (an `obj_watch` reads the store's metadata subjects with the same
//! watcher), turned into the [`Message`] a handler's arguments are built from.

use crate::extract::Message;
use crate::kv::message::KvMessage;
use crate::kv::options::KvWatch;
use crate::object::ObjMessage;
use crate::observe::metrics::Outcome;

use super::Dispatcher;

/// What a watch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// A bucket's keys: each entry is a change.
    Keys,
    /// An object store's metadata: each entry describes an object put or deleted.
    Objects {
        /// Deleted objects are passed over.
        ignore_deletes: bool,
    },
}

impl Watched {
    pub(crate) fn of(watch: &KvWatch) -> Self {
        if watch.is_objects() {
            Self::Objects {
                ignore_deletes: watch.ignore_deletes,
            }
        } else {
            Self::Keys
        }
    }

    /// The message for `entry`; `None` when it is passed over: a deleted object under
    /// `ignore_deletes`, or metadata that is not an object's, which is logged and counted as
    /// rejected (the loop goes on).
    pub(crate) fn message(self, entry: KvMessage, dispatcher: &Dispatcher) -> Option<Message> {
        let Self::Objects { ignore_deletes } = self else {
            return Some(Message::from_kv(entry));
        };
        match ObjMessage::from_watched(&entry, ignore_deletes) {
            Ok(object) => object.map(Message::from_obj),
            Err(error) => {
                tracing::error!(subscriber = %dispatcher.context.name, bucket = entry.bucket(),
                    revision = entry.revision(), error = %crate::error::chain(&error),
                    "{} | {} - metadata is not an object's; handler not called",
                    entry.bucket(), entry.revision());
                dispatcher.count(Outcome::Rejected, None);
                None
            }
        }
    }
}
