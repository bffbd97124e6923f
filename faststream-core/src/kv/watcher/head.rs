//! What a watch's owner needs to tell, without the watcher, how far the watch must read to have
//! passed a stream position: which keys it watches, and the latest revision among them now.

use async_nats::jetstream;

use super::consumer::head_revision;
use super::KvWatcher;

/// The watched keys of one watch, and a lookup of their latest revision on the server.
#[derive(Clone)]
pub(crate) struct HeadLookup {
    jetstream: jetstream::Context,
    stream_name: String,
    /// The consumer's filter: the bucket's prefix and the key pattern.
    filter_subject: String,
    key_prefix: String,
}

impl HeadLookup {
    /// The revision of the last entry of the watched keys (0 if there is none): every entry of
    /// those keys stored before the answer has at most this revision. One request to the
    /// stream's leader; `None` if it failed.
    pub(crate) async fn revision(&self) -> Option<u64> {
        head_revision(&self.jetstream, &self.stream_name, &self.filter_subject)
            .await
            .ok()
    }

    /// Whether the watch delivers the entries of `key` (NATS subject matching: `*` one token,
    /// `>` the rest).
    pub(crate) fn watches(&self, key: &str) -> bool {
        let filter = self
            .filter_subject
            .strip_prefix(&self.key_prefix)
            .unwrap_or(&self.filter_subject);
        filter_matches(filter, key)
    }
}

impl KvWatcher {
    /// The watched keys, and how to look up their latest revision, for the watch's owner.
    pub(crate) fn head_lookup(&self) -> HeadLookup {
        HeadLookup {
            jetstream: self.jetstream.clone(),
            stream_name: self.stream_name.clone(),
            filter_subject: self.filter_subject.clone(),
            key_prefix: self.key_prefix.clone(),
        }
    }
}

/// NATS subject matching of a key against a filter of whole-token wildcards.
fn filter_matches(filter: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for token in filter.split('.') {
        match (token, keys.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(key_token)) if literal == key_token => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::filter_matches;

    #[test]
    fn filters_match_whole_tokens() {
        assert!(filter_matches(">", "a"));
        assert!(filter_matches(">", "a.b.c"));
        assert!(filter_matches("orders.*", "orders.1"));
        assert!(!filter_matches("orders.*", "orders.1.x"));
        assert!(!filter_matches("orders.*", "orders"));
        assert!(!filter_matches("orders.*", "cfg.1"));
        assert!(filter_matches("orders.>", "orders.1.x"));
        assert!(!filter_matches("orders.>", "orders"));
        assert!(filter_matches("a.*.c", "a.b.c"));
        assert!(!filter_matches("a.*.c", "a.b.d"));
        assert!(filter_matches("exact", "exact"));
        assert!(!filter_matches("exact", "exactly"));
        assert!(!filter_matches("a.b", "a"));
    }
}
