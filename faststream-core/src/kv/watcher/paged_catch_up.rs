//! A latest-per-key catch-up read in pages of batched direct gets (`batch.rs`) instead of
//! through a consumer, where that gives the same entries.
//!
//! In a bucket that keeps one revision per key (history 1, the default), or whose keys have
//! no second revision yet (the stream holds no more messages than subjects), the stream holds
//! the latest entry of every key and nothing else; reading every retained message in sequence
//! order gives each key's latest entry (a delete or purge as its marker), and a key rewritten
//! during the read shows up again at its new revision, exactly as a consumer delivering the
//! latest value per key would. Such a read can stop at any sequence and go on from the next one, with
//! nothing lost or repeated, so when the pages end (or fail) the watch continues with a consumer
//! from the revision after the last one read; that consumer, like any, confirms the catch-up.
//!
//! Asked for with [`KvWatch::batched_catch_up`](crate::KvWatch::batched_catch_up); taken with
//! nats-server 2.11 or newer, a bucket with `allow_direct` and one message per key,
//! and a watch of the latest values (not `include_history`, `updates_only`, `headers_only` or
//! `meta_only`, not an object store). Anything else (a key with older revisions
//! retained, which a read by sequence would deliver too) keeps the consumer.

use std::sync::Arc;
use std::task::{Context, Poll};

use async_nats::jetstream::stream::Info;
use async_nats::HeaderMap;

use super::batch::{PageItem, PagedRead};
use super::position::one_message_per_key;
use super::status::WatchEvent;
use super::KvWatcher;
use crate::error::chain;
use crate::kv::features::{self, BATCHED_DIRECT_GET_SINCE};
use crate::kv::message::{KvMessage, MessageParts, Operation};
use crate::kv::start_at::StartAt;

/// The headers a direct get adds to the stored ones.
const DIRECT_GET_HEADERS: [&str; 6] = [
    "Nats-Stream",
    "Nats-Subject",
    "Nats-Sequence",
    "Nats-Time-Stamp",
    "Nats-Num-Pending",
    "Nats-Last-Sequence",
];

/// The catch-up being read in pages: what the reading task handed over and is still to be
/// turned into entries.
pub(super) struct PagedCatchUp {
    read: PagedRead,
    messages: std::vec::IntoIter<async_nats::Message>,
}

impl KvWatcher {
    /// Whether the watch's options and the server allow a paged catch-up (the bucket is looked
    /// at next).
    pub(super) fn may_page_catch_up(&self) -> bool {
        self.options.batched_catch_up
            && self.options.start_at() == StartAt::LatestPerKey
            && !self.options.without_values()
            && !self.options.is_objects()
            && features::at_least(&self.client.server_info().version, BATCHED_DIRECT_GET_SINCE)
    }

    /// Starts a paged catch-up if the bucket's stream suits one; `false` leaves the watch to
    /// its consumer.
    pub(super) fn start_paged_catch_up(&mut self, info: &Info) -> bool {
        // Revisions written after this look are changes, which a consumer would deliver too.
        let suits =
            info.config.allow_direct && one_message_per_key(info) && info.state.messages > 0;
        if !suits {
            return false;
        }
        self.position.stream_created = Some(info.created);
        self.position.sequential = true;
        let read = PagedRead::start(
            self.client.clone(),
            &self.stream_name,
            self.filter_subject.clone(),
            info.state.first_sequence.max(1),
            self.options.timeout,
        );
        self.paged = Some(PagedCatchUp {
            read,
            messages: Vec::new().into_iter(),
        });
        self.status.set_pending(info.state.messages);
        tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject,
            messages = info.state.messages, "catching up through batched direct gets");
        true
    }

    /// The next entry of the paged catch-up: `Ready(Some)` an event, `Ready(None)` progress
    /// without one (a message skipped, the pages done), pending while the next chunk is on its
    /// way.
    pub(super) fn poll_paged(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        let Some(paged) = self.paged.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(message) = paged.messages.next() {
            let Some(entry) = self.read_stored(message) else {
                return Poll::Ready(None);
            };
            if !self.caught_up_announced {
                self.catch_up_entries += 1;
            }
            return Poll::Ready(Some(WatchEvent::Entry(entry)));
        }
        match paged.read.items.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(PageItem::Messages(messages))) => {
                paged.messages = messages.into_iter();
                Poll::Ready(None)
            }
            Poll::Ready(Some(PageItem::Done) | None) => {
                self.paged = None;
                tracing::debug!(bucket = %self.bucket, filter = %self.filter_subject,
                    last_revision = ?self.position.last_revision,
                    "batched direct gets read; the watch goes on with a consumer");
                Poll::Ready(None)
            }
            Poll::Ready(Some(PageItem::Failed(error))) => {
                self.paged = None;
                tracing::warn!(bucket = %self.bucket, filter = %self.filter_subject,
                    last_revision = ?self.position.last_revision, error = %chain(&*error),
                    "the catch-up through batched direct gets failed; it goes on with a consumer");
                Poll::Ready(None)
            }
        }
    }

    /// Turns one stored message, as a direct get returns it, into an entry.
    fn read_stored(&mut self, message: async_nats::Message) -> Option<KvMessage> {
        let headers = message.headers?;
        let mut subject = None;
        let mut sequence = None;
        let mut timestamp = None;
        let mut pending = 0;
        let mut stored_headers = 0;
        for (name, values) in headers.iter() {
            let value = values.first().map(|value| value.as_str());
            match name.as_ref() {
                "Nats-Subject" => subject = value,
                "Nats-Sequence" => sequence = value.and_then(|value| value.parse::<u64>().ok()),
                "Nats-Time-Stamp" => timestamp = value,
                "Nats-Num-Pending" => {
                    pending = value.and_then(|value| value.parse().ok()).unwrap_or(0);
                }
                "Nats-Stream" | "Nats-Last-Sequence" => {}
                _ => stored_headers += 1,
            }
        }
        let (Some(subject), Some(sequence)) = (subject, sequence) else {
            tracing::warn!(bucket = %self.bucket,
                "a batched direct get answer without subject or sequence; skipped");
            return None;
        };
        self.status.set_pending(pending);
        if self
            .position
            .last_revision
            .is_some_and(|last| sequence <= last)
        {
            return None;
        }
        self.position.last_revision = Some(sequence);
        let Some(key) = subject.strip_prefix(&self.key_prefix) else {
            tracing::warn!(bucket = %self.bucket, %subject,
                "watch message outside the bucket; skipped");
            return None;
        };
        let key = key.to_owned();
        let created = timestamp
            .and_then(parse_timestamp)
            .and_then(|nanos| time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let stored = (stored_headers > 0).then(|| without_direct_get_headers(&headers));
        let operation = Operation::from_headers(stored.as_ref());
        if operation != Operation::Put && self.options.ignore_deletes {
            return None;
        }
        Some(KvMessage::from(MessageParts {
            bucket: Arc::clone(&self.bucket),
            key,
            value_size: message.payload.len(),
            value: message.payload,
            revision: sequence,
            delta: pending,
            created,
            operation,
            headers: stored,
        }))
    }
}

/// The stored headers of a direct get answer: what a consumer would have delivered.
fn without_direct_get_headers(headers: &HeaderMap) -> HeaderMap {
    let mut stored = HeaderMap::new();
    for (name, values) in headers.iter() {
        if DIRECT_GET_HEADERS.contains(&name.as_ref()) {
            continue;
        }
        for value in values {
            stored.append(name.clone(), value.clone());
        }
    }
    stored
}

/// Nanoseconds since the epoch of a direct get's `Nats-Time-Stamp`, in UTC: Go's default
/// format (`2025-01-02 03:04:05.123456789 +0000 UTC`) or RFC 3339 (`2025-01-02T03:04:05.12Z`).
/// Parsed by hand: it is read for every entry of a catch-up.
fn parse_timestamp(text: &str) -> Option<i128> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = bytes.get(range)?;
        slice.iter().try_fold(0i64, |number, byte| {
            byte.is_ascii_digit()
                .then(|| number * 10 + i64::from(byte - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, separator)| bytes.get(at) != Some(&separator))
        || !matches!(bytes.get(10), Some(b' ' | b'T'))
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut nanos = 0i64;
    if bytes.get(19) == Some(&b'.') {
        let fraction = &bytes[20..];
        let length = fraction
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if length == 0 || length > 9 {
            return None;
        }
        nanos = digits(20..20 + length)? * 10i64.pow(9 - length as u32);
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(text: &str) -> i128 {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map(time::OffsetDateTime::unix_timestamp_nanos)
            .unwrap_or_default()
    }

    #[test]
    fn timestamps_in_both_formats() {
        let expected = rfc3339("2022-08-06T00:29:27.587861324Z");
        assert_eq!(
            parse_timestamp("2022-08-06 00:29:27.587861324 +0000 UTC"),
            Some(expected)
        );
        assert_eq!(
            parse_timestamp("2022-08-06T00:29:27.587861324Z"),
            Some(expected)
        );
        let whole = rfc3339("2024-02-29T23:59:59Z");
        assert_eq!(
            parse_timestamp("2024-02-29 23:59:59 +0000 UTC"),
            Some(whole)
        );
        let tenth = rfc3339("1999-12-31T00:00:00.1Z");
        assert_eq!(parse_timestamp("1999-12-31T00:00:00.1Z"), Some(tenth));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2022-13-06 00:29:27 +0000 UTC"), None);
    }
}
