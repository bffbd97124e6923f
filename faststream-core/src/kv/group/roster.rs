//! The members an operator sees ([`KvGroup::info`](super::KvGroup::info)): the heartbeats the
//! members bucket holds, those stored within the last session timeout.
//!
//! "Within the last session timeout" is judged by the server's clock alone: a heartbeat's time
//! is the server's when it stored it, compared with the server's time in the answer to the
//! request that listed the keys. The clock of the host asking is never used, so a host whose
//! clock is off by hours still sees the live members and only them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::membership::Heartbeat;
use crate::kv::message::{system_time, Operation};

/// A member whose heartbeat is fresh.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// Its key in the members bucket.
    pub(crate) id: String,
    pub(crate) heartbeat: Heartbeat,
    /// When the server stored the heartbeat.
    pub(crate) stored: SystemTime,
}

/// Why the members could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RosterError {
    /// Listing the members' keys failed.
    #[error("could not list the members' keys")]
    Keys(#[source] async_nats::Error),
    /// The server's answer did not carry its time (`ts`, sent by nats-server 2.10 and later).
    #[error("the server did not say its time when listing the members (`ts`: {0:?})")]
    NoServerTime(Option<String>),
    /// A member's last heartbeat could not be read.
    #[error("could not read the heartbeat of member `{member}`")]
    Lookup {
        member: String,
        #[source]
        source: async_nats::Error,
    },
    /// A fresh entry of the bucket is not a heartbeat a member writes (something else wrote
    /// the key). The group's members count it as a member all the same until it goes stale.
    #[error("the entry of member `{member}` is not a heartbeat a member writes")]
    Corrupt {
        member: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One page of the members stream's info, with the keys (subjects) it holds.
#[derive(Debug, Deserialize)]
struct SubjectsPage {
    /// The server's time when it answered.
    ts: Option<String>,
    #[serde(default)]
    total: usize,
    state: PageState,
}

#[derive(Debug, Deserialize)]
struct PageState {
    #[serde(default)]
    subjects: HashMap<String, u64>,
}

/// The members whose last heartbeat the server stored less than `session` ago by its own
/// clock, sorted by id. A key left meanwhile is skipped; any other failure, or an entry that is
/// not a heartbeat, is an error.
pub(crate) async fn live_members(
    context: &jetstream::Context,
    members_bucket: &str,
    session: Duration,
) -> Result<Vec<Listed>, RosterError> {
    let stream_name = format!("KV_{members_bucket}");
    let prefix = format!("$KV.{members_bucket}.");
    let (subjects, server_now) = subjects(context, &stream_name, &prefix).await?;
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let stream = context
        .get_stream(&stream_name)
        .await
        .map_err(|error| RosterError::Keys(Box::new(error)))?;
    let mut members = Vec::new();
    for subject in subjects {
        let Some(id) = subject.strip_prefix(&prefix).map(str::to_owned) else {
            continue;
        };
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            // Gone since it was listed: the member left (or its entry aged out).
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
            Err(error) => {
                return Err(RosterError::Lookup {
                    member: id,
                    source: Box::new(error),
                })
            }
        };
        if Operation::from_headers(Some(&message.headers)) != Operation::Put {
            continue;
        }
        // Negative when stored after the listing: fresh.
        let age = server_now - message.time;
        if age >= session {
            continue;
        }
        let heartbeat: Heartbeat =
            serde_json::from_slice(&message.payload).map_err(|source| RosterError::Corrupt {
                member: id.clone(),
                source,
            })?;
        members.push(Listed {
            id,
            heartbeat,
            stored: system_time(message.time),
        });
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(members)
}

/// Every subject of the members stream, through its info requests (listing the keys the
/// Key-Value way would create a consumer at every call), and the server's time.
async fn subjects(
    context: &jetstream::Context,
    stream_name: &str,
    prefix: &str,
) -> Result<(Vec<String>, OffsetDateTime), RosterError> {
    let mut subjects = Vec::new();
    let mut server_now = None;
    loop {
        let request = serde_json::json!({
            "subjects_filter": format!("{prefix}>"),
            "offset": subjects.len(),
        });
        let page: jetstream::response::Response<SubjectsPage> = context
            .request(format!("STREAM.INFO.{stream_name}"), &request)
            .await
            .map_err(|error| RosterError::Keys(Box::new(error)))?;
        let page = match page {
            jetstream::response::Response::Ok(page) => page,
            jetstream::response::Response::Err { error } => {
                return Err(RosterError::Keys(Box::new(error)))
            }
        };
        if server_now.is_none() {
            let parsed = page
                .ts
                .as_deref()
                .and_then(|ts| OffsetDateTime::parse(ts, &Rfc3339).ok());
            server_now = Some(parsed.ok_or_else(|| RosterError::NoServerTime(page.ts.clone()))?);
        }
        let got = page.state.subjects.len();
        subjects.extend(page.state.subjects.into_keys());
        if got == 0 || subjects.len() >= page.total {
            break;
        }
    }
    let server_now = server_now.ok_or(RosterError::NoServerTime(None))?;
    Ok((subjects, server_now))
}
