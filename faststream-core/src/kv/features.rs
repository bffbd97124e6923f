//! Features that need a minimum nats-server version, checked against the version the server
//! reported when the connection was made, before any request that would use them.

use crate::error::{Error, Result};

/// The oldest nats-server with per-message TTLs and limit markers (ADR-43).
pub(crate) const LIMIT_MARKERS_SINCE: Version = Version {
    major: 2,
    minor: 11,
    text: "2.11",
};

/// The oldest nats-server with pull-consumer priority groups and pinned clients (ADR-42).
pub(crate) const GROUPS_SINCE: Version = Version {
    major: 2,
    minor: 11,
    text: "2.11",
};

/// The oldest nats-server with stream compression (`ObjectStoreConfig::compression`).
pub(crate) const COMPRESSION_SINCE: Version = Version {
    major: 2,
    minor: 10,
    text: "2.10",
};

/// The oldest nats-server with atomic batch publish (ADR-50): older ones store the batch's
/// headers as ordinary headers, one message at a time, so nothing may be sent to them.
pub(crate) const ATOMIC_BATCH_SINCE: Version = Version {
    major: 2,
    minor: 12,
    text: "2.12",
};

/// The oldest nats-server that answers direct gets in batches (ADR-31), for the paged catch-up.
pub(crate) const BATCHED_DIRECT_GET_SINCE: Version = Version {
    major: 2,
    minor: 11,
    text: "2.11",
};

/// The oldest nats-server from which a consumer of a bucket holding one message per key reads it
/// in sequence order. nats-server 2.9.10 delivers such a filtered consumer too slowly to ever
/// catch up with a steady writer rewriting the keys (it did with the last value per key).
pub(crate) const SEQUENTIAL_CATCH_UP_SINCE: Version = Version {
    major: 2,
    minor: 11,
    text: "2.11",
};

/// A `major.minor` server version that a feature needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version {
    major: u64,
    minor: u64,
    text: &'static str,
}

/// Whether `server` (as in the server's `INFO`, e.g. `2.9.10` or `2.11.0-RC.1`) is at least
/// `required`. Only `major.minor` counts; a leading `v` and anything after the digits of each
/// part are ignored. A version that does not parse counts as too old: the feature is then
/// refused with an error showing what the server reported, rather than asked of a server that
/// may silently ignore it (servers before 2.11 drop the stream settings they do not know).
pub(crate) fn at_least(server: &str, required: Version) -> bool {
    let mut parts = server
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|part| {
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            part[..digits].parse::<u64>().ok()
        });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (required.major, required.minor),
        _ => false,
    }
}

/// `Ok` if `server` is at least `required`, else [`Error::ServerTooOld`] naming `feature`.
pub(crate) fn require(feature: &'static str, required: Version, server: &str) -> Result<()> {
    if at_least(server, required) {
        return Ok(());
    }
    Err(Error::ServerTooOld {
        feature,
        required: required.text,
        server: if server.trim().is_empty() {
            "unknown".to_owned()
        } else {
            server.to_owned()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let since = LIMIT_MARKERS_SINCE;
        for new in [
            "2.11.0",
            "2.11",
            "2.11.0-RC.1",
            "2.12.3",
            "2.15.1",
            "3.0.0",
            "v2.11.1",
            "10.0",
        ] {
            assert!(at_least(new, since), "{new}");
        }
        for old in ["2.9.10", "2.10.29", "2.1.0", "1.99.0", "v2.10.0"] {
            assert!(!at_least(old, since), "{old}");
        }
        for unparsable in ["", "2", "dev", "x.y.z", "2.x"] {
            assert!(!at_least(unparsable, since), "{unparsable}");
        }
    }

    #[test]
    fn too_old_names_both_versions() {
        assert!(require("limit markers", LIMIT_MARKERS_SINCE, "2.11.0").is_ok());
        let error = require("limit markers", LIMIT_MARKERS_SINCE, "2.9.10").unwrap_err();
        assert!(matches!(
            &error,
            Error::ServerTooOld { required: "2.11", server, .. } if server == "2.9.10"
        ));
        assert_eq!(
            error.to_string(),
            "limit markers need nats-server 2.11 or newer; the server is 2.9.10"
        );
        let error = require("limit markers", LIMIT_MARKERS_SINCE, "").unwrap_err();
        assert!(error.to_string().ends_with("the server is unknown"));
    }
}
