//! NATS Key-Value naming rules (ADR-8), and the token walk shared with subject patterns
//! (`subjects`):
//! - a bucket name is one or more of `A-Z a-z 0-9 _ -`;
//! - a key is one or more `.`-separated tokens of `A-Z a-z 0-9 - / _ =`, no empty token;
//! - a watch pattern is a key whose tokens may also be `*` (any one token), `>` (the rest, last
//!   token only) or `{name}` (a named path parameter, watched as `*`).

use std::fmt;

/// A name that breaks the NATS Key-Value rules, with a sentence that says which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    message: String,
}

impl NameError {
    pub(crate) fn new(message: String) -> Self {
        Self { message }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NameError {}

fn is_bucket_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=')
}

/// Checks a bucket name: one or more of `A-Z a-z 0-9 _ -`.
///
/// ```
/// assert!(faststream_rules::validate_bucket("user_profiles-v2").is_ok());
/// assert!(faststream_rules::validate_bucket("my.bucket").is_err());
/// ```
pub fn validate_bucket(bucket: &str) -> Result<(), NameError> {
    if bucket.is_empty() {
        return Err(NameError::new(
            "invalid bucket name ``: a bucket name may not be empty".into(),
        ));
    }
    if let Some(bad) = bucket.chars().find(|c| !is_bucket_char(*c)) {
        return Err(NameError::new(format!(
            "invalid bucket name `{bucket}`: character `{bad}` is not allowed \
             (a bucket name uses only A-Z, a-z, 0-9, `_` and `-`)"
        )));
    }
    Ok(())
}

/// The longest consumer-group name: the group's server objects are named after the bucket and
/// the group, and stream names must stay short enough to be file names on every server.
pub const MAX_GROUP_NAME: usize = 64;

/// Checks a consumer-group name (`KvWatch::group`): one to [`MAX_GROUP_NAME`] of
/// `A-Z a-z 0-9 _ -`, the characters of a bucket name, since the group names server streams.
///
/// ```
/// assert!(faststream_rules::validate_group("billing-v2").is_ok());
/// assert!(faststream_rules::validate_group("billing.eu").is_err());
/// ```
pub fn validate_group(group: &str) -> Result<(), NameError> {
    if group.is_empty() {
        return Err(NameError::new(
            "invalid group name ``: a group name may not be empty".into(),
        ));
    }
    if let Some(bad) = group.chars().find(|c| !is_bucket_char(*c)) {
        return Err(NameError::new(format!(
            "invalid group name `{group}`: character `{bad}` is not allowed \
             (a group name uses only A-Z, a-z, 0-9, `_` and `-`)"
        )));
    }
    if group.len() > MAX_GROUP_NAME {
        return Err(NameError::new(format!(
            "invalid group name `{group}`: {} characters, at most {MAX_GROUP_NAME} are allowed",
            group.len()
        )));
    }
    Ok(())
}

/// Checks a concrete key (no wildcards, no placeholders), as given to `put` or `get`.
///
/// ```
/// assert!(faststream_rules::validate_key("users.42/profile=x").is_ok());
/// assert!(faststream_rules::validate_key("users.*").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<(), NameError> {
    for (index, token) in tokens(key, "key")? {
        if let Some(bad) = token.chars().find(|c| !is_key_char(*c)) {
            return Err(NameError::new(format!(
                "invalid key `{key}`: character `{bad}` in token {} is not allowed \
                 (a key uses only A-Z, a-z, 0-9, `-`, `/`, `_`, `=` and `.` between tokens)",
                index + 1
            )));
        }
    }
    Ok(())
}

/// Splits on `.`, rejecting empty input and empty tokens. Yields `(index, token)`.
pub(crate) fn tokens<'a>(
    text: &'a str,
    what: &str,
) -> Result<impl Iterator<Item = (usize, &'a str)>, NameError> {
    if text.is_empty() {
        return Err(NameError::new(format!(
            "invalid {what} ``: it may not be empty"
        )));
    }
    if let Some(index) = text.split('.').position(str::is_empty) {
        return Err(NameError::new(format!(
            "invalid {what} `{text}`: token {} is empty \
             (no leading or trailing `.`, no `..`)",
            index + 1
        )));
    }
    Ok(text.split('.').enumerate())
}

/// One `{name}` placeholder of a watch pattern and the token it captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParam {
    /// The placeholder's name, without braces.
    pub name: String,
    /// The zero-based index of the `.`-separated key token it captures.
    pub token: usize,
}

/// A parsed watch pattern: the subject filter to give the server and the named placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    pattern: String,
    filter: String,
    params: Vec<PathParam>,
}

impl KeyPattern {
    /// Parses and checks a watch pattern such as `users.{id}.profile`, `audit.>` or `config`.
    ///
    /// ```
    /// let pattern = faststream_rules::KeyPattern::parse("users.{id}.*").unwrap();
    /// assert_eq!(pattern.filter(), "users.*.*");
    /// assert_eq!(pattern.params()[0].name, "id");
    /// assert!(faststream_rules::KeyPattern::parse("a.>.b").is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, NameError> {
        parse_pattern(pattern, PatternKind::Key)
    }

    /// The pattern as written, placeholders included.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The NATS subject filter within the bucket: placeholders replaced by `*`.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The `{name}` placeholders in order of appearance.
    pub fn params(&self) -> &[PathParam] {
        &self.params
    }

    /// Whether the pattern is a single concrete key (no wildcard, no placeholder).
    pub fn is_exact(&self) -> bool {
        self.params.is_empty() && !self.filter.split('.').any(|t| t == "*" || t == ">")
    }
}

/// What a pattern is matched against: a Key-Value key or a NATS subject. The token walk is the
/// same; only the characters a literal token may use, and the words of the messages, differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternKind {
    /// A watch pattern over the keys of a bucket ([`KeyPattern::parse`]).
    Key,
    /// A subscription pattern over NATS subjects ([`KeyPattern::parse_subject`]).
    Subject,
}

impl PatternKind {
    /// How messages name a pattern of this kind.
    fn what(self) -> &'static str {
        match self {
            Self::Key => "key pattern",
            Self::Subject => "subject pattern",
        }
    }

    /// Whether a literal token (not a wildcard or placeholder) may use `c`.
    fn allows(self, c: char) -> bool {
        match self {
            Self::Key => is_key_char(c),
            Self::Subject => crate::subjects::is_subject_char(c),
        }
    }

    /// `c` as shown in a message. Key messages show the character itself, as they always did;
    /// subjects allow almost any character, so the few refused may be invisible ones.
    fn show(self, c: char) -> String {
        match self {
            Self::Key => format!("`{c}`"),
            Self::Subject => crate::subjects::shown(c),
        }
    }

    /// The rule a literal token breaks, ending the message about a refused character.
    fn rule(self) -> &'static str {
        match self {
            Self::Key => {
                "keys use A-Z, a-z, 0-9, `-`, `/`, `_`, `=`, `.` between tokens, and whole-token \
                 `*`, `>` or `{name}`"
            }
            Self::Subject => {
                "subjects use printable characters other than whitespace, `.` between tokens, \
                 and whole-token `*`, `>` or `{name}`"
            }
        }
    }
}

/// Parses and checks a pattern of `kind`: `.`-separated tokens, each `*`, a final `>`, a whole
/// `{name}` placeholder (names unique), or a literal of the characters `kind` allows.
pub(crate) fn parse_pattern(pattern: &str, kind: PatternKind) -> Result<KeyPattern, NameError> {
    let what = kind.what();
    let count = pattern.split('.').count();
    let mut filter_tokens = Vec::with_capacity(count);
    let mut params: Vec<PathParam> = Vec::new();
    for (index, token) in tokens(pattern, what)? {
        let is_last = index + 1 == count;
        match token {
            "*" => filter_tokens.push("*"),
            ">" if is_last => filter_tokens.push(">"),
            ">" => {
                return Err(NameError::new(format!(
                    "invalid {what} `{pattern}`: `>` in token {} must be the last \
                     token (it matches all the remaining tokens)",
                    index + 1
                )))
            }
            _ if token.starts_with('{') || token.ends_with('}') => {
                let name = placeholder_name(pattern, what, index, token)?;
                if let Some(first) = params.iter().find(|p| p.name == name) {
                    return Err(NameError::new(format!(
                        "invalid {what} `{pattern}`: placeholder `{{{name}}}` in token \
                         {} is used more than once (first in token {}; each path parameter \
                         needs its own name)",
                        index + 1,
                        first.token + 1
                    )));
                }
                params.push(PathParam {
                    name: name.to_owned(),
                    token: index,
                });
                filter_tokens.push("*");
            }
            _ => {
                if let Some(bad) = token.chars().find(|c| !kind.allows(*c)) {
                    let hint = match bad {
                        '{' | '}' => " (a `{name}` placeholder must be a whole token)",
                        '*' | '>' => " (wildcards `*` and `>` must be whole tokens)",
                        _ => "",
                    };
                    return Err(NameError::new(format!(
                        "invalid {what} `{pattern}`: character {} in token {} is \
                         not allowed{hint}; {}",
                        kind.show(bad),
                        index + 1,
                        kind.rule(),
                    )));
                }
                filter_tokens.push(token);
            }
        }
    }
    Ok(KeyPattern {
        pattern: pattern.to_owned(),
        filter: filter_tokens.join("."),
        params,
    })
}

/// The name of the `{name}` placeholder that is token `index` (from 0) of `pattern`, a `what`.
fn placeholder_name<'a>(
    pattern: &str,
    what: &str,
    index: usize,
    token: &'a str,
) -> Result<&'a str, NameError> {
    let name = token
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| {
            NameError::new(format!(
                "invalid {what} `{pattern}`: unbalanced braces in token {}, `{token}` \
                 (a placeholder is a whole token written `{{name}}`)",
                index + 1
            ))
        })?;
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(NameError::new(format!(
            "invalid {what} `{pattern}`: placeholder `{token}` in token {} needs a name \
             made of letters, digits and `_`, not starting with a digit",
            index + 1
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert!(validate_bucket("a-B_9").is_ok());
        for bad in ["", "a.b", "a b", "a*", "é"] {
            assert!(validate_bucket(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("a.b/c=d_e-f").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "{id}"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns() {
        let p = KeyPattern::parse("users.{id}.{field}.>").unwrap();
        assert_eq!(p.filter(), "users.*.*.>");
        assert_eq!(
            p.params(),
            &[
                PathParam {
                    name: "id".into(),
                    token: 1
                },
                PathParam {
                    name: "field".into(),
                    token: 2
                }
            ]
        );
        assert!(!p.is_exact());
        assert!(KeyPattern::parse("a.b").unwrap().is_exact());
        assert!(KeyPattern::parse(">").is_ok());
        for bad in [
            "",
            "a..b",
            ".a",
            "a.>.b",
            "a.{id",
            "a.id}",
            "a.{id}.{id}",
            "a.{1x}",
            "a.x*",
            "a.{}",
        ] {
            let err = KeyPattern::parse(bad);
            assert!(err.is_err(), "{bad:?} accepted");
        }
        let err = KeyPattern::parse("a.{id}.{id}").unwrap_err().to_string();
        assert!(err.contains("more than once"), "{err}");
        let err = KeyPattern::parse("a.x{id}").unwrap_err().to_string();
        assert!(
            err.contains("unbalanced") || err.contains("whole token"),
            "{err}"
        );
    }
}
