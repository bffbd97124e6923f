//! The document as YAML: block style, two-space indents, from the JSON value.
//!
//! A small writer rather than a YAML library: the input is a JSON value, so only its six
//! kinds need writing, and a string is written plain only when no YAML reader could take it
//! for anything else (a number, a boolean, null, a key, a comment); otherwise it is quoted
//! with JSON's escapes, which YAML's double-quoted style shares.

use std::fmt::Write as _;

use serde_json::Value;

/// A document of `fields`, in their order.
pub(crate) fn to_yaml_fields(fields: &[(&str, &Value)]) -> String {
    let mut out = String::new();
    write_fields(&mut out, fields.iter().copied(), 0);
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    write_fields(
        out,
        map.iter().map(|(key, value)| (key.as_str(), value)),
        indent,
    );
}

fn write_fields<'a>(
    out: &mut String,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
    indent: usize,
) {
    for (key, value) in fields {
        push_indent(out, indent);
        out.push_str(&string_text(key));
        out.push(':');
        write_nested(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        push_indent(out, indent);
        out.push('-');
        match item {
            // `- key: value` then the other keys under the first.
            Value::Object(map) if !map.is_empty() => {
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(nested.trim_start());
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: a scalar on the same line, or a block on the next lines.
fn write_nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    let _ = write!(out, "{:indent$}", "");
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Plain when unambiguous, else double-quoted with JSON's escapes.
fn string_text(text: &str) -> String {
    if is_plain(text) {
        text.to_owned()
    } else {
        Value::String(text.to_owned()).to_string()
    }
}

/// Words YAML 1.1 or 1.2 readers take as booleans or null.
const RESERVED: [&str; 12] = [
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "none", "nan",
];

/// A conservative test: starts with a letter, holds only letters, digits and `_ . / - $`
/// (a `:` only when not followed by a space, and not last), and is not a reserved word.
fn is_plain(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '$' | ':'))
        && !text.contains(": ")
        && !text.ends_with(':')
        && !RESERVED.contains(&text.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_yaml(value: &Value) -> String {
        let fields: Vec<(&str, &Value)> = value
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(key, value)| (key.as_str(), value))
                    .collect()
            })
            .unwrap_or_default();
        to_yaml_fields(&fields)
    }

    #[test]
    fn writes_blocks_and_scalars() {
        let yaml = to_yaml(&json!({
            "asyncapi": "3.0.0",
            "info": {"title": "shop", "version": "1.0"},
            "list": [1, "two", {"a": true, "b": null}, [], {}],
            "empty": {},
            "quoted": ["yes", "", "a: b", "#x", "10", "orders.{id}", "line\nbreak", "Ünï"],
        }));
        assert_eq!(
            yaml,
            "asyncapi: \"3.0.0\"\nempty: {}\ninfo:\n  title: shop\n  version: \"1.0\"\nlist:\n  - 1\n  - two\n  - a: true\n    b: null\n  - []\n  - {}\nquoted:\n  - \"yes\"\n  - \"\"\n  - \"a: b\"\n  - \"#x\"\n  - \"10\"\n  - \"orders.{id}\"\n  - \"line\\nbreak\"\n  - \"Ünï\"\n"
        );
    }

    #[test]
    fn plain_strings_are_never_other_scalars() {
        for text in [
            "true", "No", "null", "1e3", "-1", ".5", "~", "a: b", "x:", "", " a",
        ] {
            assert!(!is_plain(text), "{text:?}");
        }
        for text in ["orders.created", "KV_orders", "application/json", "x:y"] {
            assert!(is_plain(text), "{text:?}");
        }
    }
}
