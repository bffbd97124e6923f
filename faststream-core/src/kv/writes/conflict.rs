//! Telling which key a refused conditional write was about, and its revision then.
//!
//! The server's refusal (JetStream error 10071) says `wrong last sequence: <N>`, `N` being the
//! key's last revision when it checked (0: no entry), but not which key: for an atomic commit
//! with expectations on several keys, the key is found from `N` (the message stored at `N` is
//! the key's), else by reading the keys with expectations again, in commit order (the order the
//! server checks them in).

use async_nats::jetstream::ErrorCode;

use crate::kv::message::Operation;
use crate::KeyValue;

/// The key's revision the server reported when it refused a write for its expected revision:
/// from the first JetStream error 10071 (`wrong last sequence: <N>`) in `error`'s chain.
pub(super) fn current_revision(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(jetstream) = current.downcast_ref::<async_nats::jetstream::Error>() {
            return reported_revision(jetstream);
        }
        cause = current.source();
    }
    None
}

/// `N` of a 10071 `wrong last sequence: N` error; `None` for any other error (10164, "wrong
/// last sequence" alone, names no revision).
pub(super) fn reported_revision(error: &async_nats::jetstream::Error) -> Option<u64> {
    if error.error_code() != ErrorCode::STREAM_WRONG_LAST_SEQUENCE {
        return None;
    }
    let text = error.to_string();
    let number = text.strip_prefix("wrong last sequence: ")?;
    let digits = number
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(number.len());
    number[..digits].parse().ok()
}

/// Whether the server refused a commit for a key's revision: 10071 with the revision, or
/// 10164 without (an expectation it could not check, such as a key already in flight in a
/// clustered stream).
pub(super) fn is_wrong_revision(error: &async_nats::jetstream::Error) -> bool {
    let code = error.error_code();
    code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE || code == ErrorCode(10164)
}

/// A key whose expected revision did not hold.
pub(super) struct Changed {
    /// Its index among the commit's writes.
    pub(super) index: usize,
    /// Its revision now, if known (0: no entry).
    pub(super) current: Option<u64>,
    /// Whether its latest entry is a delete or purge marker (then a `create` may write over it).
    pub(super) deleted: bool,
}

/// The write (of `expecting`: index and key of each write carrying an expectation, in commit
/// order, with the revision it expected) whose expectation did not hold, given the revision
/// `reported` by the server.
pub(super) async fn find_changed(
    kv: &KeyValue,
    expecting: &[(usize, &str, u64)],
    reported: Option<u64>,
) -> Option<Changed> {
    if let Some(found) = by_reported_revision(kv, expecting, reported).await {
        return Some(found);
    }
    // The message at `N` is gone (history 1 and written again since), or there was no `N`.
    let mut first_differing = None;
    for &(index, key, expected) in expecting {
        let Ok(latest) = kv.latest(key).await else {
            continue;
        };
        let current = latest.as_ref().map_or(0, |latest| latest.revision);
        if current == expected {
            continue;
        }
        let deleted = latest
            .as_ref()
            .is_some_and(|latest| latest.operation != Operation::Put);
        let changed = Changed {
            index,
            current: Some(current),
            deleted,
        };
        if reported == Some(current) {
            return Some(changed);
        }
        first_differing.get_or_insert(changed);
    }
    first_differing
}

/// The write of the key whose message is stored at the reported revision.
async fn by_reported_revision(
    kv: &KeyValue,
    expecting: &[(usize, &str, u64)],
    reported: Option<u64>,
) -> Option<Changed> {
    let revision = reported.filter(|revision| *revision > 0)?;
    let message = kv.store().stream.get_raw_message(revision).await.ok()?;
    let key = message.subject.as_str().strip_prefix(&kv.store().prefix)?;
    let &(index, _, expected) = expecting.iter().find(|(_, write, _)| *write == key)?;
    if expected == revision {
        return None;
    }
    Some(Changed {
        index,
        current: Some(revision),
        deleted: Operation::from_headers(Some(&message.headers)) != Operation::Put,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> async_nats::jetstream::Error {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reported_revisions() {
        let wrong =
            error(r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 42"}"#);
        assert_eq!(reported_revision(&wrong), Some(42));
        assert!(is_wrong_revision(&wrong));
        let none = error(r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 0"}"#);
        assert_eq!(reported_revision(&none), Some(0));
        let constant =
            error(r#"{"code":400,"err_code":10164,"description":"wrong last sequence"}"#);
        assert_eq!(reported_revision(&constant), None);
        assert!(is_wrong_revision(&constant));
        let other =
            error(r#"{"code":400,"err_code":10174,"description":"atomic publish is disabled"}"#);
        assert_eq!(reported_revision(&other), None);
        assert!(!is_wrong_revision(&other));
    }
}
