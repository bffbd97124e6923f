//! The page at `/asyncapi`: one HTML file (`page.html`, its styles and script inline) with
//! the document embedded in a `<script type="application/json">` element, rendered in the
//! browser. Nothing is fetched: production networks often reach no CDN.

use serde_json::Value;

const TEMPLATE: &str = include_str!("page.html");

/// Where the document goes in [`TEMPLATE`].
const PLACEHOLDER: &str = r#"{"asyncapi_document_placeholder":true}"#;

/// The page showing `document`.
pub(crate) fn render(document: &Value) -> String {
    // `<` escaped: no text in the document can close the script element or open a comment.
    let json = document.to_string().replace('<', "\\u003c");
    TEMPLATE.replacen(PLACEHOLDER, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_embedded_once_and_cannot_close_its_element() {
        assert_eq!(TEMPLATE.matches(PLACEHOLDER).count(), 1);
        let page = render(&serde_json::json!({"info": {"title": "</script><b>x"}}));
        assert!(!page.contains(PLACEHOLDER));
        assert!(page.contains(r#""title":"\u003c/script>\u003cb>x""#));
        assert!(!page.contains("</script><b>"));
    }
}
