//! The names in the document: FastStream's ids for channels, operations and messages, keys
//! that components allow, and `$ref`s that resolve.

/// FastStream's `call_name`: a function's last path segment in CamelCase (`on_order` is
/// `OnOrder`; `app::handlers::on_order[orders.new]` is `OnOrder` too).
pub(crate) fn call_name(function: &str) -> String {
    let last = function.rsplit("::").next().unwrap_or(function);
    let last = last.split('[').next().unwrap_or(last);
    last.split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

/// A key of `components` (AsyncAPI allows `[A-Za-z0-9._-]` there): every other character
/// becomes `_`, so `orders.{id}:OnOrder` is `orders._id__OnOrder`.
pub(crate) fn component_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `#/<section>/<key>/...` with each part escaped as a JSON pointer (`~` as `~0`, `/` as
/// `~1`) and then percent-encoded where a URI fragment does not allow the character (`{`,
/// `}`, `>`, spaces...), as RFC 6901 §6 writes a pointer in a URI.
pub(crate) fn reference(parts: &[&str]) -> String {
    let mut reference = String::from("#");
    for part in parts {
        reference.push('/');
        for c in part.chars() {
            match c {
                '~' => reference.push_str("~0"),
                '/' => reference.push_str("~1"),
                c if c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        '-' | '.'
                            | '_'
                            | '!'
                            | '$'
                            | '&'
                            | '\''
                            | '('
                            | ')'
                            | '*'
                            | '+'
                            | ','
                            | ';'
                            | '='
                            | ':'
                            | '@'
                    ) =>
                {
                    reference.push(c);
                }
                c => {
                    let mut bytes = [0; 4];
                    for byte in c.encode_utf8(&mut bytes).bytes() {
                        reference.push_str(&format!("%{byte:02X}"));
                    }
                }
            }
        }
    }
    reference
}

/// The `{name}` placeholders of a subject or key pattern, in order.
pub(crate) fn placeholders(pattern: &str) -> Vec<&str> {
    pattern
        .split('.')
        .filter_map(|token| token.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The first paragraph of a doc comment, on one line: an operation's summary.
pub(crate) fn summary(docs: &str) -> Option<String> {
    let first: Vec<&str> = docs
        .lines()
        .map(str::trim)
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty())
        .collect();
    (!first.is_empty()).then(|| first.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_names_are_camel_case() {
        assert_eq!(call_name("app::handlers::on_order"), "OnOrder");
        assert_eq!(call_name("app::on_order[orders.new]"), "OnOrder");
        assert_eq!(call_name("handle"), "Handle");
        assert_eq!(call_name("a::__private_x"), "PrivateX");
    }

    #[test]
    fn component_keys_keep_only_what_asyncapi_allows() {
        assert_eq!(
            component_key("orders.{id}:OnOrder:Message"),
            "orders._id__OnOrder_Message"
        );
        assert_eq!(component_key("Order-v1.2_x"), "Order-v1.2_x");
    }

    #[test]
    fn references_escape_pointers_then_encode_for_uris() {
        assert_eq!(
            reference(&["channels", "orders.{id}:OnOrder", "messages", "a/b~c"]),
            "#/channels/orders.%7Bid%7D:OnOrder/messages/a~1b~0c"
        );
        assert_eq!(reference(&["channels", "logs.>"]), "#/channels/logs.%3E");
        assert_eq!(reference(&["channels", "é"]), "#/channels/%C3%A9");
    }

    #[test]
    fn placeholders_and_summaries() {
        assert_eq!(placeholders("orders.{id}.{kind}.>"), ["id", "kind"]);
        assert!(placeholders("orders.*").is_empty());
        assert_eq!(
            summary("\nBills an order\nonce paid.\n\nMore.").as_deref(),
            Some("Bills an order once paid.")
        );
        assert_eq!(summary("  "), None);
    }
}
