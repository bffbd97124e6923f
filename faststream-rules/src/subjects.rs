//! NATS subject and JetStream naming rules:
//! - a subject is one or more `.`-separated tokens of printable characters other than
//!   whitespace; a subject pattern's tokens may also be `*` (any one token), `>` (the rest, last
//!   token only) or `{name}` (a named path parameter, subscribed as `*`), and no other token may
//!   use `*`, `>`, `{` or `}`;
//! - a router prefix is written in front of subjects as it stands (`"orders."` + `"created"`);
//! - a stream or durable consumer name is one to [`MAX_STREAM_NAME`] bytes without whitespace,
//!   `.`, `*`, `>`, `/`, `\` or non-printable characters (they name files on the server);
//! - a queue group name is any non-empty text without whitespace or non-printable characters.
//!
//! "Non-printable" means a Unicode control character (`char::is_control`).

use crate::names::{parse_pattern, tokens, PatternKind};
use crate::{KeyPattern, NameError};

/// The longest stream or durable consumer name, in bytes: the server stores both as file names.
pub const MAX_STREAM_NAME: usize = 255;

/// Whether a literal subject token may use `c`: any printable character but whitespace, the
/// token separator `.`, the wildcards `*` and `>`, and the placeholder braces `{` and `}`.
pub(crate) fn is_subject_char(c: char) -> bool {
    is_visible(c) && !matches!(c, '.' | '*' | '>' | '{' | '}')
}

/// Neither whitespace nor a control character.
fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control()
}

/// `c` as shown in a message: itself in backticks, or its code point when it would not show.
pub(crate) fn shown(c: char) -> String {
    if is_visible(c) {
        format!("`{c}`")
    } else {
        let kind = if c.is_whitespace() {
            "whitespace"
        } else {
            "a control character"
        };
        format!("U+{:04X} ({kind})", u32::from(c))
    }
}

impl KeyPattern {
    /// Parses and checks a NATS subject pattern such as `orders.{id}.created`, `orders.*` or
    /// `audit.>`: the tokens of a watch pattern (`*`, a final `>`, whole-token `{name}`), with
    /// literal tokens of any printable characters but whitespace, `*`, `>`, `{` and `}`.
    ///
    /// ```
    /// let pattern = faststream_rules::KeyPattern::parse_subject("orders.{id}.$ünïcode").unwrap();
    /// assert_eq!(pattern.filter(), "orders.*.$ünïcode");
    /// assert_eq!(pattern.params()[0].name, "id");
    /// assert!(faststream_rules::KeyPattern::parse_subject("orders.>.created").is_err());
    /// assert!(faststream_rules::KeyPattern::parse_subject("orders created").is_err());
    /// ```
    pub fn parse_subject(pattern: &str) -> Result<Self, NameError> {
        parse_pattern(pattern, PatternKind::Subject)
    }
}

/// Checks a concrete subject to publish to: no wildcard, no placeholder.
///
/// ```
/// assert!(faststream_rules::validate_subject("billing.done").is_ok());
/// assert!(faststream_rules::validate_subject("billing.*").is_err());
/// assert!(faststream_rules::validate_subject("billing.{id}").is_err());
/// ```
pub fn validate_subject(subject: &str) -> Result<(), NameError> {
    for (index, token) in tokens(subject, "subject")? {
        let number = index + 1;
        let problem = if token == "*" || token == ">" {
            format!(
                "`{token}` in token {number} is a wildcard; a message is published to one \
                 concrete subject (wildcards are for subscribing)"
            )
        } else if token.starts_with('{') && token.ends_with('}') {
            format!(
                "`{token}` in token {number} is a placeholder; a message is published to one \
                 concrete subject (placeholders are for subscribing)"
            )
        } else if let Some(bad) = token.chars().find(|c| !is_subject_char(*c)) {
            format!(
                "character {} in token {number} is not allowed; a subject uses printable \
                 characters other than whitespace, `*`, `>`, `{{` and `}}`, with `.` between \
                 tokens",
                shown(bad)
            )
        } else {
            continue;
        };
        return Err(NameError::new(format!(
            "invalid subject `{subject}`: {problem}"
        )));
    }
    Ok(())
}

/// Checks a router prefix, written in front of each subject as it stands (`"orders."` +
/// `"created"` is `orders.created`): not empty, no whitespace or non-printable character, no
/// wildcard or placeholder, and no empty token but one after a final `.`.
///
/// ```
/// assert!(faststream_rules::validate_subject_prefix("orders.").is_ok());
/// assert!(faststream_rules::validate_subject_prefix("orders").is_ok());
/// assert!(faststream_rules::validate_subject_prefix(".orders").is_err());
/// assert!(faststream_rules::validate_subject_prefix("orders.*.").is_err());
/// ```
pub fn validate_subject_prefix(prefix: &str) -> Result<(), NameError> {
    let invalid = |problem: String| {
        Err(NameError::new(format!(
            "invalid subject prefix `{prefix}`: {problem}"
        )))
    };
    if prefix.is_empty() {
        return invalid("a prefix may not be empty (leave the router out instead)".into());
    }
    // A final `.` separates the prefix from the subjects: the token it leaves empty is theirs.
    let tokens = prefix.strip_suffix('.').unwrap_or(prefix).split('.');
    for (index, token) in tokens.enumerate() {
        let number = index + 1;
        if token.is_empty() {
            return invalid(format!(
                "token {number} is empty (no leading `.`, no `..`; one final `.` is allowed)"
            ));
        }
        if let Some(bad) = token.chars().find(|c| !is_subject_char(*c)) {
            let hint = match bad {
                '*' | '>' => " (a prefix is concrete: no wildcard)",
                '{' | '}' => " (a prefix is concrete: no placeholder)",
                _ => "",
            };
            return invalid(format!(
                "character {} in token {number} is not allowed{hint}; a prefix uses printable \
                 characters other than whitespace, `*`, `>`, `{{` and `}}`, with `.` between \
                 tokens and optionally at the end",
                shown(bad)
            ));
        }
    }
    Ok(())
}

/// Checks a JetStream stream name: one to [`MAX_STREAM_NAME`] bytes without whitespace, `.`,
/// `*`, `>`, `/`, `\` or non-printable characters.
///
/// ```
/// assert!(faststream_rules::validate_stream("ORDERS_v2").is_ok());
/// assert!(faststream_rules::validate_stream("orders.eu").is_err());
/// ```
pub fn validate_stream(name: &str) -> Result<(), NameError> {
    validate_file_name(name, "stream name")
}

/// Checks a durable consumer name, with the rules of a stream name ([`validate_stream`]).
///
/// ```
/// assert!(faststream_rules::validate_durable("billing-v2").is_ok());
/// assert!(faststream_rules::validate_durable("billing/eu").is_err());
/// ```
pub fn validate_durable(name: &str) -> Result<(), NameError> {
    validate_file_name(name, "durable name")
}

/// The rules of names the server also uses as file names; `what` names the name in messages.
fn validate_file_name(name: &str, what: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(format!(
            "invalid {what} ``: a {what} may not be empty"
        )));
    }
    let allowed = |c: char| is_visible(c) && !matches!(c, '.' | '*' | '>' | '/' | '\\');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(NameError::new(format!(
            "invalid {what} `{name}`: character {} is not allowed (a {what} may not contain \
             whitespace, `.`, `*`, `>`, `/`, `\\` or non-printable characters)",
            shown(bad)
        )));
    }
    if name.len() > MAX_STREAM_NAME {
        return Err(NameError::new(format!(
            "invalid {what} `{name}`: {} bytes, at most {MAX_STREAM_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a queue group name: not empty, no whitespace or non-printable characters.
///
/// ```
/// assert!(faststream_rules::validate_queue("workers.eu-1").is_ok());
/// assert!(faststream_rules::validate_queue("two words").is_err());
/// ```
pub fn validate_queue(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(
            "invalid queue group name ``: a queue group name may not be empty".into(),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_visible(*c)) {
        return Err(NameError::new(format!(
            "invalid queue group name `{name}`: character {} is not allowed (a queue group \
             name may not contain whitespace or non-printable characters)",
            shown(bad)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PathParam;

    fn message<T: std::fmt::Debug>(result: Result<T, NameError>) -> String {
        match result {
            Ok(value) => panic!("accepted: {value:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn subject_patterns() {
        let p = KeyPattern::parse_subject("orders.{id}.*.$JS-ü:x.>").unwrap();
        assert_eq!(p.filter(), "orders.*.*.$JS-ü:x.>");
        assert_eq!(p.as_str(), "orders.{id}.*.$JS-ü:x.>");
        assert_eq!(
            p.params(),
            &[PathParam {
                name: "id".into(),
                token: 1
            }]
        );
        assert!(!p.is_exact());
        assert!(KeyPattern::parse_subject("a.b").unwrap().is_exact());
        // Characters a key may not use are fine in a subject.
        assert!(KeyPattern::parse_subject("a:b.c#d.e~f").unwrap().is_exact());
        assert!(KeyPattern::parse("a:b").is_err());
    }

    #[test]
    fn subject_pattern_messages() {
        assert_eq!(
            message(KeyPattern::parse_subject("")),
            "invalid subject pattern ``: it may not be empty"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a..b")),
            "invalid subject pattern `a..b`: token 2 is empty (no leading or trailing `.`, no `..`)"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.>.b")),
            "invalid subject pattern `a.>.b`: `>` in token 2 must be the last token \
             (it matches all the remaining tokens)"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.{id}.{id}")),
            "invalid subject pattern `a.{id}.{id}`: placeholder `{id}` in token 3 is used more \
             than once (first in token 2; each path parameter needs its own name)"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.x{id}")),
            "invalid subject pattern `a.x{id}`: unbalanced braces in token 2, `x{id}` \
             (a placeholder is a whole token written `{name}`)"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.{1x}")),
            "invalid subject pattern `a.{1x}`: placeholder `{1x}` in token 2 needs a name made \
             of letters, digits and `_`, not starting with a digit"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.x*")),
            "invalid subject pattern `a.x*`: character `*` in token 2 is not allowed (wildcards \
             `*` and `>` must be whole tokens); subjects use printable characters other than \
             whitespace, `.` between tokens, and whole-token `*`, `>` or `{name}`"
        );
        assert_eq!(
            message(KeyPattern::parse_subject("a.x{y")),
            "invalid subject pattern `a.x{y`: character `{` in token 2 is not allowed (a \
             `{name}` placeholder must be a whole token); subjects use printable characters \
             other than whitespace, `.` between tokens, and whole-token `*`, `>` or `{name}`"
        );
        assert!(message(KeyPattern::parse_subject("orders created"))
            .contains("character U+0020 (whitespace) in token 1 is not allowed;"));
        assert!(message(KeyPattern::parse_subject("a.b\u{7}"))
            .contains("character U+0007 (a control character) in token 2"));
    }

    #[test]
    fn key_patterns_keep_their_messages() {
        assert_eq!(
            message(KeyPattern::parse("users.john doe")),
            "invalid key pattern `users.john doe`: character ` ` in token 2 is not allowed; keys \
             use A-Z, a-z, 0-9, `-`, `/`, `_`, `=`, `.` between tokens, and whole-token `*`, \
             `>` or `{name}`"
        );
        assert!(message(KeyPattern::parse("a.{id}.{id}")).starts_with("invalid key pattern"));
    }

    #[test]
    fn subjects() {
        assert!(validate_subject("billing.done").is_ok());
        assert!(validate_subject("$JS.API.ü:1").is_ok());
        assert_eq!(
            message(validate_subject("billing.*")),
            "invalid subject `billing.*`: `*` in token 2 is a wildcard; a message is published \
             to one concrete subject (wildcards are for subscribing)"
        );
        assert_eq!(
            message(validate_subject(">")),
            "invalid subject `>`: `>` in token 1 is a wildcard; a message is published to one \
             concrete subject (wildcards are for subscribing)"
        );
        assert_eq!(
            message(validate_subject("bills.{id}")),
            "invalid subject `bills.{id}`: `{id}` in token 2 is a placeholder; a message is \
             published to one concrete subject (placeholders are for subscribing)"
        );
        assert_eq!(
            message(validate_subject("a.b c")),
            "invalid subject `a.b c`: character U+0020 (whitespace) in token 2 is not allowed; \
             a subject uses printable characters other than whitespace, `*`, `>`, `{` and `}`, \
             with `.` between tokens"
        );
        for bad in ["", ".a", "a.", "a..b", "a.x*", "a.{x", "a\tb"] {
            assert!(validate_subject(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            message(validate_subject("a.")),
            "invalid subject `a.`: token 2 is empty (no leading or trailing `.`, no `..`)"
        );
    }

    #[test]
    fn prefixes() {
        for good in ["orders.", "orders", "a.b.", "a.b", "$JS.ü-x."] {
            assert!(validate_subject_prefix(good).is_ok(), "{good:?} refused");
        }
        assert_eq!(
            message(validate_subject_prefix("")),
            "invalid subject prefix ``: a prefix may not be empty (leave the router out instead)"
        );
        assert_eq!(
            message(validate_subject_prefix(".orders")),
            "invalid subject prefix `.orders`: token 1 is empty (no leading `.`, no `..`; one \
             final `.` is allowed)"
        );
        assert!(message(validate_subject_prefix("a..b")).contains("token 2 is empty"));
        assert!(message(validate_subject_prefix("a..")).contains("token 2 is empty"));
        assert!(message(validate_subject_prefix(".")).contains("token 1 is empty"));
        assert_eq!(
            message(validate_subject_prefix("orders.*.")),
            "invalid subject prefix `orders.*.`: character `*` in token 2 is not allowed (a \
             prefix is concrete: no wildcard); a prefix uses printable characters other than \
             whitespace, `*`, `>`, `{` and `}`, with `.` between tokens and optionally at the end"
        );
        assert!(message(validate_subject_prefix("a.{id}.")).contains(
            "character `{` in token 2 is not allowed (a prefix is concrete: no placeholder)"
        ));
        assert!(message(validate_subject_prefix("my orders."))
            .contains("character U+0020 (whitespace) in token 1"));
    }

    #[test]
    fn streams_and_durables() {
        assert!(validate_stream("ORDERS-v2_ü").is_ok());
        assert!(validate_durable("billing:eu").is_ok());
        assert!(validate_stream(&"s".repeat(MAX_STREAM_NAME)).is_ok());
        assert_eq!(
            message(validate_stream(&"s".repeat(MAX_STREAM_NAME + 1))),
            format!(
                "invalid stream name `{}`: 256 bytes, at most 255 are allowed",
                "s".repeat(256)
            )
        );
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        assert!(validate_durable(&"é".repeat(128)).is_err());
        assert_eq!(
            message(validate_stream("")),
            "invalid stream name ``: a stream name may not be empty"
        );
        assert_eq!(
            message(validate_durable("a.b")),
            "invalid durable name `a.b`: character `.` is not allowed (a durable name may not \
             contain whitespace, `.`, `*`, `>`, `/`, `\\` or non-printable characters)"
        );
        for bad in ["a b", "a*", "a>", "a/b", "a\\b", "a\nb", "a\u{0}"] {
            assert!(validate_stream(bad).is_err(), "{bad:?} accepted");
            assert!(validate_durable(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn queues() {
        for good in ["workers", "workers.eu-1", "a*b>/\\{}"] {
            assert!(validate_queue(good).is_ok(), "{good:?} refused");
        }
        assert_eq!(
            message(validate_queue("")),
            "invalid queue group name ``: a queue group name may not be empty"
        );
        assert_eq!(
            message(validate_queue("two words")),
            "invalid queue group name `two words`: character U+0020 (whitespace) is not allowed \
             (a queue group name may not contain whitespace or non-printable characters)"
        );
        assert!(message(validate_queue("a\u{1b}")).contains("U+001B (a control character)"));
    }
}
