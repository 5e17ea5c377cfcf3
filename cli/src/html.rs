//! HTML text escaping for the pages the CLI renders on the server side (the report), by the
//! `html-escape` crate.

/// `text` with `& < > " '` escaped, for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_and_quotes_are_escaped() {
        let escaped = super::escape(r#"<a href="x">Tom & Jerry's</a>"#);
        assert!(!escaped.contains(['<', '>', '"', '\'']), "{escaped}");
        assert!(escaped.starts_with("&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry"));
    }
}
