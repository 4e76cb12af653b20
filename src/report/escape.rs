//! Escaping for the HTML page and the SVG charts inside it: both are markup with the same five active
//! characters, so one function serves both renderers (the Markdown renderer escapes differently, in
//! markdown.rs).

/// Escapes text for HTML or SVG element content and quoted attribute values.
pub fn html(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_content_and_attributes() {
        assert_eq!(html(r#"<b>&"x"'y'"#), "&lt;b&gt;&amp;&quot;x&quot;&#39;y&#39;");
    }
}
