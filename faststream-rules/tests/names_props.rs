//! Property tests of the naming rules against what users write: every valid key is accepted
//! and matched by the patterns made from it, `{name}` captures give back the key's tokens, and
//! every invalid key or pattern is refused with an error naming the token at fault — never a
//! panic, whatever the text. The subject rules are a superset of the key rules, a concrete
//! subject is exactly a subject pattern without wildcards, and a router prefix in front of a
//! subject keeps it valid.

use faststream_rules::{
    validate_durable, validate_key, validate_queue, validate_stream, validate_subject,
    validate_subject_prefix, KeyPattern, MAX_STREAM_NAME,
};
use proptest::prelude::*;
use proptest::sample::select;

/// One key token: one to eight of the characters a key may use.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/=_-]{1,8}"
}

/// The tokens of a valid key: one to six.
fn key_tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(token(), 1..=6)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=')
}

/// A character no key may use (`.` excepted: it separates tokens): the ones users mistype, and
/// any other.
fn bad_char() -> impl Strategy<Value = char> {
    prop_oneof![
        select(vec![
            ' ', '*', '>', '{', '}', 'é', '\n', '\t', '\0', '$', ':', '"', '🙂'
        ]),
        any::<char>().prop_filter("a character keys may not use", |c| {
            !is_key_char(*c) && *c != '.'
        }),
    ]
}

/// A placeholder name: letters, digits and `_`, not starting with a digit.
fn param_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,6}"
}

/// A token that makes a pattern invalid wherever it stands but last: a `>` before the end, a
/// brace without its pair, or a placeholder whose name is not one.
fn misplaced() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(">".to_owned()),
        param_name().prop_map(|name| format!("{{{name}")),
        param_name().prop_map(|name| format!("{name}}}")),
        select(vec!["{1x}", "{}", "{a-b}", "{é}", "{{a}}", "{a}}"]).prop_map(str::to_owned),
    ]
}

/// How a pattern made from a key stands for one of its tokens.
#[derive(Debug, Clone)]
enum Stand {
    Literal,
    Star,
    Param(String),
}

fn stand() -> impl Strategy<Value = Stand> {
    prop_oneof![
        2 => Just(Stand::Literal),
        1 => Just(Stand::Star),
        1 => param_name().prop_map(Stand::Param),
    ]
}

/// A key, and a pattern made from it: some tokens as `*` or `{name}`, and from token `tail` on
/// (if it is less than the key's length) a `>`.
fn key_and_pattern() -> impl Strategy<Value = (Vec<String>, Vec<Stand>, usize)> {
    key_tokens().prop_flat_map(|tokens| {
        let count = tokens.len();
        (
            Just(tokens),
            prop::collection::vec(stand(), count),
            0..=count,
        )
    })
}

/// NATS subject matching, as the server applies a consumer's filter: `*` is any one token, a
/// final `>` one or more.
fn matches(filter: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for wanted in filter.split('.') {
        match (wanted, keys.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(token)) if literal == token => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

/// A placeholder name made unique by its token's index (the index follows the last `_`).
fn unique(name: &str, index: usize) -> String {
    format!("{name}_{index}")
}

proptest! {
    #[test]
    fn a_valid_key_is_accepted_and_is_its_own_exact_pattern(tokens in key_tokens()) {
        let key = tokens.join(".");
        prop_assert_eq!(validate_key(&key), Ok(()));
        let pattern = KeyPattern::parse(&key);
        prop_assert!(pattern.is_ok(), "{key:?}: {pattern:?}");
        if let Ok(pattern) = pattern {
            prop_assert!(pattern.is_exact());
            prop_assert_eq!(pattern.filter(), key.as_str());
            prop_assert_eq!(pattern.as_str(), key.as_str());
            prop_assert!(pattern.params().is_empty());
            prop_assert!(matches(pattern.filter(), &key));
        }
    }

    #[test]
    fn patterns_made_from_a_key_match_it_and_capture_its_tokens(
        (tokens, stands, tail) in key_and_pattern()
    ) {
        let key = tokens.join(".");
        let mut written = Vec::new();
        let mut filter = Vec::new();
        let mut captures = Vec::new();
        for (index, (token, stand)) in tokens.iter().zip(&stands).enumerate().take(tail) {
            match stand {
                Stand::Literal => {
                    written.push(token.clone());
                    filter.push(token.clone());
                }
                Stand::Star => {
                    written.push("*".to_owned());
                    filter.push("*".to_owned());
                }
                Stand::Param(name) => {
                    let name = unique(name, index);
                    written.push(format!("{{{name}}}"));
                    filter.push("*".to_owned());
                    captures.push((name, index));
                }
            }
        }
        if tail < tokens.len() {
            written.push(">".to_owned());
            filter.push(">".to_owned());
        }
        let written = written.join(".");
        let pattern = KeyPattern::parse(&written);
        prop_assert!(pattern.is_ok(), "{written:?}: {pattern:?}");
        let Ok(pattern) = pattern else { return Ok(()) };
        prop_assert_eq!(pattern.filter(), filter.join("."));
        prop_assert!(matches(pattern.filter(), &key), "{} does not match {key}", pattern.filter());
        let exact = tail == tokens.len() && stands.iter().all(|s| matches!(s, Stand::Literal));
        prop_assert_eq!(pattern.is_exact(), exact);
        // Each placeholder, in order, names the token it captures: the key's own token.
        let params: Vec<(String, usize)> = pattern
            .params()
            .iter()
            .map(|param| (param.name.clone(), param.token))
            .collect();
        prop_assert_eq!(&params, &captures);
        for (_, index) in &params {
            prop_assert_eq!(key.split('.').nth(*index), Some(tokens[*index].as_str()));
        }
    }

    #[test]
    fn a_key_with_a_bad_character_is_refused_naming_the_token_and_character(
        (tokens, at, offset, bad) in key_tokens().prop_flat_map(|tokens| {
            let count = tokens.len();
            (Just(tokens), 0..count, 0..=8usize, bad_char())
        })
    ) {
        let mut tokens = tokens;
        let token = &mut tokens[at];
        let offset = token.char_indices().nth(offset).map_or(token.len(), |(byte, _)| byte);
        token.insert(offset, bad);
        let key = tokens.join(".");
        let error = validate_key(&key).map_err(|error| error.to_string());
        let named = format!("character `{bad}` in token {}", at + 1);
        prop_assert!(error.as_ref().is_err_and(|error| error.contains(&named)), "{key:?}: {error:?}");
        // The same text as a pattern: refused at the same token (a wildcard or a brace inside
        // a token is no wildcard and no placeholder).
        let pattern = KeyPattern::parse(&key).map_err(|error| error.to_string());
        prop_assert!(
            pattern.as_ref().is_err_and(|error| error.contains(&format!("token {}", at + 1))),
            "{key:?}: {pattern:?}"
        );
    }

    #[test]
    fn a_key_with_an_empty_token_is_refused_naming_it(
        (tokens, at) in key_tokens().prop_flat_map(|tokens| {
            let count = tokens.len();
            (Just(tokens), 0..count)
        })
    ) {
        let mut tokens = tokens;
        tokens[at].clear();
        let key = tokens.join(".");
        let error = validate_key(&key).map_err(|error| error.to_string());
        let named = if key.is_empty() {
            "may not be empty".to_owned()
        } else {
            format!("token {} is empty", at + 1)
        };
        prop_assert!(error.as_ref().is_err_and(|error| error.contains(&named)), "{key:?}: {error:?}");
        let pattern = KeyPattern::parse(&key).map_err(|error| error.to_string());
        prop_assert!(pattern.as_ref().is_err_and(|error| error.contains(&named)), "{key:?}: {pattern:?}");
    }

    #[test]
    fn a_misplaced_wildcard_or_bad_placeholder_is_refused_naming_its_token(
        (tokens, at, fault) in key_tokens()
            .prop_filter("two tokens at least", |tokens| tokens.len() >= 2)
            .prop_flat_map(|tokens| {
                let count = tokens.len();
                // A `>` must not be last to be misplaced: `at` is before the last token.
                (Just(tokens), 0..count - 1, misplaced())
            })
    ) {
        let mut tokens = tokens;
        tokens[at] = fault;
        let pattern = tokens.join(".");
        let error = KeyPattern::parse(&pattern).map_err(|error| error.to_string());
        let named = format!("token {}", at + 1);
        prop_assert!(error.as_ref().is_err_and(|error| error.contains(&named)), "{pattern:?}: {error:?}");
    }

    #[test]
    fn a_placeholder_used_twice_is_refused_naming_both_tokens(
        (tokens, first, second, name) in key_tokens()
            .prop_filter("two tokens at least", |tokens| tokens.len() >= 2)
            .prop_flat_map(|tokens| {
                let count = tokens.len();
                (Just(tokens), 0..count - 1, 1..count, param_name())
            })
            .prop_filter("the first before the second", |(_, first, second, _)| first < second)
    ) {
        let mut tokens = tokens;
        tokens[first] = format!("{{{name}}}");
        tokens[second] = format!("{{{name}}}");
        let pattern = tokens.join(".");
        let error = KeyPattern::parse(&pattern).map_err(|error| error.to_string());
        let named = format!("token {} is used more than once (first in token {}", second + 1, first + 1);
        prop_assert!(error.as_ref().is_err_and(|error| error.contains(&named)), "{pattern:?}: {error:?}");
    }

    #[test]
    fn any_text_is_refused_or_parsed_into_a_valid_filter_never_a_panic(
        text in prop_oneof![
            any::<String>(),
            // Mostly the characters that matter to patterns, so many parse.
            "[ab.{}*>_1é -]{0,24}",
        ]
    ) {
        let key = validate_key(&text);
        match KeyPattern::parse(&text) {
            Ok(pattern) => {
                let filter: Vec<&str> = pattern.filter().split('.').collect();
                let last = filter.len() - 1;
                for (index, token) in filter.iter().enumerate() {
                    let valid = *token == "*"
                        || (*token == ">" && index == last)
                        || (!token.is_empty() && token.chars().all(is_key_char));
                    prop_assert!(valid, "{text:?} gave the filter {:?}", pattern.filter());
                }
                for param in pattern.params() {
                    prop_assert_eq!(filter.get(param.token), Some(&"*"));
                }
                let mut names: Vec<&str> =
                    pattern.params().iter().map(|param| param.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                prop_assert_eq!(names.len(), pattern.params().len());
                if key.is_ok() {
                    prop_assert!(pattern.is_exact());
                    prop_assert_eq!(pattern.filter(), text.as_str());
                }
            }
            Err(error) => {
                prop_assert!(key.is_err(), "{text:?} is a valid key but no valid pattern");
                prop_assert!(error.to_string().starts_with("invalid key pattern `"), "{error}");
            }
        }
    }
}

/// One subject token: one to eight characters a subject may use, mostly the ones a key may not.
fn subject_token() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            select(vec![
                'a', 'Z', '0', '$', ':', '#', '~', '-', 'é', '🙂', '/', '\\'
            ]),
            any::<char>().prop_filter("a subject character", |c| {
                !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '{' | '}')
            }),
        ],
        1..=8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// The tokens of a valid concrete subject: one to six.
fn subject_tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(subject_token(), 1..=6)
}

/// Text that is mostly made of what matters to subjects, names and patterns.
fn subject_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ab.{}*>_1é \t/\\$-]{0,24}"]
}

proptest! {
    #[test]
    fn a_valid_key_pattern_is_the_same_subject_pattern(text in subject_text()) {
        if let Ok(pattern) = KeyPattern::parse(&text) {
            prop_assert_eq!(KeyPattern::parse_subject(&text), Ok(pattern));
        }
    }

    #[test]
    fn a_concrete_subject_is_a_subject_pattern_without_wildcards(text in subject_text()) {
        let pattern = KeyPattern::parse_subject(&text);
        let exact = pattern.as_ref().is_ok_and(KeyPattern::is_exact);
        prop_assert_eq!(validate_subject(&text).is_ok(), exact, "{:?}: {:?}", text, pattern);
        if let Err(error) = pattern {
            prop_assert!(error.to_string().starts_with("invalid subject pattern `"), "{error}");
        }
    }

    #[test]
    fn a_valid_subject_is_accepted_everywhere_a_subject_goes(tokens in subject_tokens()) {
        let subject = tokens.join(".");
        prop_assert_eq!(validate_subject(&subject), Ok(()));
        let pattern = KeyPattern::parse_subject(&subject);
        prop_assert!(pattern.as_ref().is_ok_and(|p| p.is_exact() && p.filter() == subject), "{pattern:?}");
        prop_assert_eq!(validate_subject_prefix(&subject), Ok(()));
        prop_assert_eq!(validate_subject_prefix(&format!("{subject}.")), Ok(()));
        prop_assert_eq!(validate_queue(&subject), Ok(()));
    }

    #[test]
    fn a_subject_with_whitespace_or_a_control_character_is_refused_naming_the_token(
        (tokens, at, offset, bad) in subject_tokens().prop_flat_map(|tokens| {
            let count = tokens.len();
            (
                Just(tokens),
                0..count,
                0..=8usize,
                prop_oneof![
                    select(vec![' ', '\t', '\n', '\r', '\0', '\u{7f}', '\u{a0}', '\u{2003}']),
                    any::<char>().prop_filter("invisible", |c| c.is_whitespace() || c.is_control()),
                ],
            )
        })
    ) {
        let mut tokens = tokens;
        let token = &mut tokens[at];
        let offset = token.char_indices().nth(offset).map_or(token.len(), |(byte, _)| byte);
        token.insert(offset, bad);
        let subject = tokens.join(".");
        let named = format!("character U+{:04X} ", u32::from(bad));
        let in_token = format!("in token {}", at + 1);
        for error in [
            validate_subject(&subject).err(),
            KeyPattern::parse_subject(&subject).err(),
            validate_subject_prefix(&subject).err(),
        ] {
            let error = error.map(|error| error.to_string());
            prop_assert!(
                error.as_ref().is_some_and(|e| e.contains(&named) && e.contains(&in_token)),
                "{subject:?}: {error:?}"
            );
        }
        prop_assert!(validate_queue(&subject).is_err());
        prop_assert!(validate_stream(&subject).is_err());
    }

    #[test]
    fn a_prefix_keeps_a_subject_valid_and_a_dotted_prefix_keeps_a_pattern_valid(
        prefix in subject_tokens(),
        dotted in any::<bool>(),
        (tokens, stands, tail) in key_and_pattern(),
    ) {
        let prefix = if dotted { format!("{}.", prefix.join(".")) } else { prefix.join(".") };
        prop_assert_eq!(validate_subject_prefix(&prefix), Ok(()));
        let subject = tokens.join(".");
        prop_assert_eq!(validate_subject(&format!("{prefix}{subject}")), Ok(()));
        if dotted {
            let mut written: Vec<String> = tokens
                .iter()
                .zip(&stands)
                .enumerate()
                .take(tail)
                .map(|(index, (token, stand))| match stand {
                    Stand::Literal => token.clone(),
                    Stand::Star => "*".to_owned(),
                    Stand::Param(name) => format!("{{{}}}", unique(name, index)),
                })
                .collect();
            if tail < tokens.len() {
                written.push(">".to_owned());
            }
            let pattern = format!("{prefix}{}", written.join("."));
            let parsed = KeyPattern::parse_subject(&pattern);
            prop_assert!(parsed.is_ok(), "{pattern:?}: {parsed:?}");
        }
    }

    #[test]
    fn stream_and_durable_names_follow_one_rule(text in subject_text()) {
        let valid = !text.is_empty()
            && text.len() <= MAX_STREAM_NAME
            && text.chars().all(|c| {
                !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>' | '/' | '\\')
            });
        prop_assert_eq!(validate_stream(&text).is_ok(), valid, "{:?}", text);
        prop_assert_eq!(validate_durable(&text).is_ok(), valid, "{:?}", text);
        if valid {
            prop_assert_eq!(validate_queue(&text), Ok(()));
        }
    }
}
