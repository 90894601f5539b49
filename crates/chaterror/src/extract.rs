//! Structured extraction from provider errors (spec/chaterror.md §5, §15(a)) and status
//! extraction from text (§6).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use regex::Regex;
use serde_json::Value;

use crate::codes::{CodeField, ReadCode};
use crate::detail::compile;
use crate::{Provider, ProviderHttpError, ProviderStreamError, RetryAfterSource};

/// How much of a response body the classifier reads.
const MAX_BODY: usize = 64 * 1024;

/// What the first typed provider error in the graph says, before any text is examined.
#[derive(Debug, Default)]
pub(crate) struct Structured {
    /// A `ProviderHttpError` or `ProviderStreamError` was found.
    pub(crate) found: bool,
    /// Structured status; 0 = none.
    pub(crate) status: u16,
    /// The provider's own message (not yet scrubbed).
    pub(crate) detail: String,
    pub(crate) retry_after: Duration,
    pub(crate) retry_after_source: Option<RetryAfterSource>,
    /// Error types/codes read from the payload, in reading order.
    pub(crate) codes: Vec<ReadCode>,
    /// `detail` came from the payload (a JSON body or a stream error), not from the client's
    /// message, which may echo request data such as a key.
    pub(crate) detail_from_payload: bool,
    /// The structure came from an in-stream error: its status is never read from text.
    pub(crate) from_stream: bool,
    /// `x-should-retry` of the first HTTP error.
    pub(crate) should_retry: Option<bool>,
    /// The provider named by a stream adapter.
    pub(crate) provider: Option<Provider>,
}

impl Structured {
    pub(crate) fn from_http(err: &ProviderHttpError, now: SystemTime) -> Self {
        let mut out = Self {
            found: true,
            status: non_success(err.status),
            ..Self::default()
        };
        let body = &err.body[..err.body.len().min(MAX_BODY)];
        if let Ok(json) = serde_json::from_slice::<Value>(body) {
            let error = json.get("error");
            out.detail = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .filter(|m| !m.trim().is_empty())
                .or_else(|| {
                    json.get("message")
                        .and_then(Value::as_str)
                        .filter(|m| !m.trim().is_empty())
                })
                .unwrap_or_default()
                .to_owned();
            let fields = [
                (CodeField::Type, error.and_then(|e| e.get("type"))),
                (CodeField::Code, error.and_then(|e| e.get("code"))),
                (CodeField::Status, error.and_then(|e| e.get("status"))),
                (CodeField::Type, json.get("type")),
            ];
            for (field, value) in fields {
                if let Some(value) = value.and_then(Value::as_str).filter(|v| !v.is_empty()) {
                    out.codes.push(ReadCode {
                        field,
                        value: value.to_owned(),
                    });
                }
            }
        }
        out.detail_from_payload = !out.detail.is_empty();
        if out.detail.is_empty() {
            out.detail = clean_client_message(&err.message);
        }
        if let Some(after) = retry_after(err, now) {
            out.retry_after = after;
            out.retry_after_source = Some(RetryAfterSource::Header);
        }
        out.should_retry = err.header("x-should-retry").and_then(|v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        });
        out
    }

    pub(crate) fn from_stream(err: &ProviderStreamError) -> Self {
        let codes = [
            (CodeField::Type, &err.error_type),
            (CodeField::Code, &err.code),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(field, value)| ReadCode {
            field,
            value: value.clone(),
        })
        .collect();
        Self {
            found: true,
            // The stream's HTTP 200 is never a status.
            status: non_success(err.status),
            detail: err.message.trim().to_owned(),
            detail_from_payload: true,
            from_stream: true,
            codes,
            provider: err.provider,
            ..Self::default()
        }
    }
}

/// A status that describes a failure: 2xx (a stream's 200, say) is never one, and reads as 0.
pub(crate) fn non_success(status: u16) -> u16 {
    if (200..300).contains(&status) {
        0
    } else {
        status
    }
}

static SDK_WRAPPER: LazyLock<Regex> = LazyLock::new(|| compile(r#"^[A-Z]+ "[^"]*": [0-9]{3} "#));

/// A client's message as a detail: trimmed, cut at the first blank line (a dumped HTTP response
/// must not leak its headers), without a leading `POST "https://…": 429 ` wrapper.
fn clean_client_message(message: &str) -> String {
    let trimmed = message.trim();
    let cut = [trimmed.find("\r\n\r\n"), trimmed.find("\n\n")]
        .into_iter()
        .flatten()
        .min()
        .map_or(trimmed, |at| &trimmed[..at]);
    SDK_WRAPPER.replace(cut, "").trim().to_owned()
}

/// `retry-after-ms` (milliseconds) wins over `retry-after` (seconds or an HTTP-date in the
/// future of `now`); unparseable, zero, negative or past values mean no hint.
fn retry_after(err: &ProviderHttpError, now: SystemTime) -> Option<Duration> {
    let positive = |d: Duration| (!d.is_zero()).then_some(d);
    if let Some(ms) = err
        .header("retry-after-ms")
        .and_then(positive_number)
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .and_then(positive)
    {
        return Some(ms);
    }
    let value = err.header("retry-after")?.trim();
    if let Some(secs) = positive_number(value) {
        return Duration::try_from_secs_f64(secs).ok().and_then(positive);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

fn positive_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
}

static BODY_RETRY_HINT: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)try again in\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|milliseconds?|s|secs?|seconds?)\b")
});

/// A "try again in 1.5s" hint in an error message (OpenAI `rate_limit_exceeded`).
pub(crate) fn body_retry_hint(text: &str) -> Option<Duration> {
    let caps = BODY_RETRY_HINT.captures(text)?;
    let value = positive_number(caps.get(1)?.as_str())?;
    let unit = caps.get(2)?.as_str().to_ascii_lowercase();
    let secs = if unit.starts_with("ms") || unit.starts_with("milli") {
        value / 1000.0
    } else {
        value
    };
    Duration::try_from_secs_f64(secs).ok()
}

static EXPLICIT_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"(?i)\b(?:status(?:\s*code)?|http)\s*[:=]?\s*([0-9]{3})(?:[^0-9]|$)")
});

/// Statuses recognised as standalone numbers in text.
const STANDALONE: [&str; 9] = [
    "401", "403", "408", "429", "500", "502", "503", "504", "529",
];

/// A status read from text (spec/chaterror.md §6): the explicit `status 429` / `HTTP 502` form,
/// else the first standalone well-known status that is not a port or an HTTP/2 stream id;
/// 0 when none.
pub(crate) fn status_from_text(lower: &str) -> u16 {
    if let Some(code) = EXPLICIT_STATUS
        .captures(lower)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse().ok())
    {
        return non_success(code);
    }
    let bytes = lower.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for start in 0..bytes.len().saturating_sub(2) {
        let Some(candidate) = lower.get(start..start + 3) else {
            continue;
        };
        if !STANDALONE.contains(&candidate) {
            continue;
        }
        let before = start.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(start + 3).copied();
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            continue;
        }
        if before == Some(b':') || lower[..start].trim_end().ends_with("stream id") {
            continue;
        }
        if let Ok(code) = candidate.parse() {
            return code;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! status_rows {
        ($($name:ident: $text:literal => $status:literal;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(status_from_text(&$text.to_lowercase()), $status, "{}", $text);
            }
        )*};
    }

    // spec/chaterror.md §6 table.
    status_rows! {
        status_explicit: "status 429 from upstream" => 429;
        status_code_colon: "status code: 503" => 503;
        http_upper: "HTTP 502 bad gateway" => 502;
        status_equals: "status=500" => 500;
        standalone: "upstream returned 504" => 504;
        port_is_skipped: "dial tcp 10.0.0.1:503: connection refused" => 0;
        port_skipped_then_status: "dial tcp 10.0.0.1:503: upstream returned 502" => 502;
        stream_id_is_skipped: "stream error: stream ID 503; PROTOCOL_ERROR; received from peer" => 0;
        not_in_set: "error 418" => 0;
        explicit_any_value: "status 418" => 418;
        success_is_never_a_status: "stream response: HTTP 200: unexpected EOF" => 0;
        not_standalone_suffix: "code 5030" => 0;
        not_standalone_prefix: "x429" => 0;
        http2_is_not_http: "http2: server error 429 Too Many Requests" => 429;
    }

    #[test]
    fn client_message_cleanups() {
        assert_eq!(
            clean_client_message(
                "POST \"https://api.x/v1\": 429 Too Many Requests\n\nheader: secret"
            ),
            "Too Many Requests"
        );
        assert_eq!(clean_client_message("  plain  "), "plain");
    }

    #[test]
    fn body_hints() {
        assert_eq!(
            body_retry_hint("Please try again in 1.5s."),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            body_retry_hint("try again in 20ms"),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            body_retry_hint("Try again in 3 seconds"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(body_retry_hint("try again later"), None);
    }
}
