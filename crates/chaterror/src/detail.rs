//! Diagnostic `detail` text: the fallback diagnostic, the secret scrubber and the 500-character
//! cap (spec/chaterror.md §10).

use std::sync::LazyLock;

use regex::Regex;

/// Longest `detail`, in characters (Unicode scalar values).
pub const MAX_DETAIL_CHARS: usize = 500;

/// Caps text at [`MAX_DETAIL_CHARS`]: longer text becomes its first 499 characters and `…`.
pub(crate) fn cap(text: &str) -> String {
    if text.chars().count() <= MAX_DETAIL_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_DETAIL_CHARS - 1).collect();
    out.push('…');
    out
}

/// The fallback diagnostic built from an error's full text: empty when the text contains a URL
/// (`://`, which may carry credentials), otherwise whitespace-collapsed and scrubbed.
pub(crate) fn fallback(full_text: &str) -> String {
    if full_text.contains("://") {
        return String::new();
    }
    let collapsed = full_text.split_whitespace().collect::<Vec<_>>().join(" ");
    scrub(&collapsed)
}

/// Structured detail (the provider's own message): URLs carrying userinfo or a query string
/// become `[REDACTED_URL]`, then the secret scrubber runs.
pub(crate) fn structured(text: &str) -> String {
    let without_urls = URL.replace_all(text.trim(), |caps: &regex::Captures<'_>| {
        let url = &caps[0];
        let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') || url.contains('?') {
            "[REDACTED_URL]".to_owned()
        } else {
            url.to_owned()
        }
    });
    scrub(&without_urls)
}

static URL: LazyLock<Regex> = LazyLock::new(|| compile(r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+"#));
static SK_KEY: LazyLock<Regex> = LazyLock::new(|| compile(r"sk-[A-Za-z0-9_\-]{16,}"));
static BEARER: LazyLock<Regex> = LazyLock::new(|| compile(r#"(?i)(bearer\s+)[^\s&"']+"#));
static KEY_VALUE: LazyLock<Regex> =
    LazyLock::new(|| compile(r#"(?i)(x-api-key:|api-key:|api_key=|key=)(\s*)[^\s&"']+"#));

/// The secret scrubber: `sk-` keys, bearer tokens and `key=`-style values become `[REDACTED]`.
pub(crate) fn scrub(text: &str) -> String {
    let text = SK_KEY.replace_all(text, "[REDACTED]");
    let text = BEARER.replace_all(&text, "${1}[REDACTED]");
    KEY_VALUE
        .replace_all(&text, "${1}${2}[REDACTED]")
        .into_owned()
}

/// Compiles a pattern known to be valid; an invalid one is a bug caught by every test.
pub(crate) fn compile(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(re) => re,
        // The patterns are literals of this crate; the unit tests compile every one of them.
        Err(err) => panic!("invalid built-in pattern {pattern:?}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_at_500_characters_with_an_ellipsis() {
        let long = "é".repeat(510);
        let capped = cap(&long);
        assert_eq!(capped.chars().count(), 500);
        assert!(capped.ends_with("é…"));
        assert_eq!(cap("short"), "short");
        assert_eq!(cap(&"x".repeat(500)), "x".repeat(500));
    }

    #[test]
    fn fallback_drops_text_with_urls_and_collapses_whitespace() {
        assert_eq!(fallback("Post \"https://a.b/c\": eof"), "");
        assert_eq!(fallback("  a \n\t b  "), "a b");
    }

    #[test]
    fn scrubs_keys_and_tokens() {
        assert_eq!(
            scrub("bad key sk-abcdefghijklmnop1234 here"),
            "bad key [REDACTED] here"
        );
        assert_eq!(scrub("sk-short stays"), "sk-short stays");
        assert_eq!(
            scrub("Authorization: Bearer abc.def"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(scrub("x-api-key: s3cr3t&x=1"), "x-api-key: [REDACTED]&x=1");
        assert_eq!(scrub("url?key=s3cr3t\"rest"), "url?key=[REDACTED]\"rest");
    }

    #[test]
    fn structured_detail_redacts_urls_with_credentials_or_queries() {
        assert_eq!(
            structured("see https://user:pw@host/x and https://host/y?token=1 and https://host/z"),
            "see [REDACTED_URL] and [REDACTED_URL] and https://host/z"
        );
    }
}
