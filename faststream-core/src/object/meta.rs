//! Where an object's parts live (`$O.<bucket>.C.<nuid>` chunks, `$O.<bucket>.M.<base64url(name)>`
//! info), which names a store can hold, and reading an object's info as the server has it.

use async_nats::jetstream::object_store::{self, InfoErrorKind, ObjectInfo};
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;

use crate::error::ObjectError;

/// The longest object name, in bytes. Its info's subject carries the name base64-encoded (4/3
/// of its length) and must fit in the server's 4 KiB protocol line with the bucket and an
/// inbox; 2 KiB leaves room for both.
pub const MAX_OBJECT_NAME: usize = 2048;

/// The subject of the chunks of the object version `nuid`.
pub(crate) fn chunk_subject(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// The subject of the info of the object `name`.
pub(crate) fn meta_subject(bucket: &str, name: &str) -> String {
    format!("$O.{bucket}.M.{}", URL_SAFE.encode(name))
}

/// Checks an object name before any request: not empty, at most [`MAX_OBJECT_NAME`] bytes, no
/// control characters (they cannot be shown in errors and logs). Any other character is
/// allowed, as in nats.go and async-nats: the name travels base64-encoded.
///
/// ```
/// use faststream_core::object::validate_object_name;
///
/// assert!(validate_object_name("reports/2024-06.pdf").is_ok());
/// assert!(validate_object_name("").is_err());
/// assert!(validate_object_name("line\nbreak").is_err());
/// ```
pub fn validate_object_name(name: &str) -> Result<(), ObjectError> {
    let problem = if name.is_empty() {
        "an object name may not be empty".to_owned()
    } else if name.len() > MAX_OBJECT_NAME {
        format!(
            "an object name is at most {MAX_OBJECT_NAME} bytes, got {}",
            name.len()
        )
    } else if let Some(bad) = name.chars().find(|c| c.is_control()) {
        format!("control character {bad:?} is not allowed")
    } else {
        return Ok(());
    };
    Err(ObjectError::InvalidName { problem })
}

/// The object's info as the server last stored it, deleted ones included; `None` if it has
/// none.
pub(crate) async fn read_meta(
    store: &object_store::ObjectStore,
    name: &str,
) -> Result<Option<ObjectInfo>, ObjectError> {
    match store.info(name).await {
        Ok(info) => Ok(Some(info)),
        Err(error) if error.kind() == InfoErrorKind::NotFound => Ok(None),
        Err(error) => Err(ObjectError::Lookup(ObjectError::shared(error))),
    }
}

/// The digest of `data` as object infos spell it: `SHA-256=<base64url>`.
pub(crate) fn digest_text(digest: &[u8]) -> String {
    format!("SHA-256={}", URL_SAFE.encode(digest))
}

/// Whether the digest an object info gives (`SHA-256=<base64url>`, padded or not, as nats.go
/// and async-nats write it) is `actual`.
pub(crate) fn digest_matches(expected: &str, actual: &[u8]) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let Some(encoded) = expected.strip_prefix("SHA-256=") else {
        return false;
    };
    LENIENT
        .decode(encoded)
        .is_ok_and(|decoded| decoded == actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn subjects_match_async_nats() {
        assert_eq!(meta_subject("b", "a/b c"), "$O.b.M.YS9iIGM=");
        assert_eq!(chunk_subject("b", "N1"), "$O.b.C.N1");
    }

    #[test]
    fn digests() {
        let digest = sha2::Sha256::digest(b"hello");
        let text = digest_text(&digest);
        assert_eq!(text, "SHA-256=LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
        assert!(digest_matches(&text, &digest));
        assert!(digest_matches(text.trim_end_matches('='), &digest));
        assert!(!digest_matches(&text, &sha2::Sha256::digest(b"world")));
        assert!(!digest_matches("SHA-512=abc", &digest));
        assert!(!digest_matches("garbage", &digest));
    }

    #[test]
    fn names() {
        assert!(validate_object_name("a").is_ok());
        assert!(validate_object_name(".hidden file ü").is_ok());
        assert!(validate_object_name(&"x".repeat(MAX_OBJECT_NAME)).is_ok());
        let problem = |name: &str| validate_object_name(name).unwrap_err().to_string();
        assert_eq!(
            problem(""),
            "invalid object name: an object name may not be empty"
        );
        assert_eq!(
            problem(&"x".repeat(MAX_OBJECT_NAME + 1)),
            "invalid object name: an object name is at most 2048 bytes, got 2049"
        );
        assert_eq!(
            problem("a\0b"),
            "invalid object name: control character '\\0' is not allowed"
        );
    }
}
