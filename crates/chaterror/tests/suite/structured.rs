//! spec/chaterror.md §14.5, rows 64–76: structured extraction, Retry-After, provider hints and
//! pinning.

use std::time::Duration;

use chaterror::{Classification, ClassificationSource, ErrorKind, Provider, with_classification};

use crate::rows;
use crate::support::*;

fn rate_limited_for_30s() -> BoxError {
    boxed(pe("", 429).with_header("Retry-After", "30"))
}

#[test]
fn row64_retry_after_seconds() {
    let c = run(&rate_limited_for_30s());
    check(&c, ErrorKind::RateLimit, true, 429, None, "", RATE_LIMITING);
    assert_eq!(c.retry_after, Duration::from_secs(30));
    assert_eq!(
        c.retry_after_source,
        Some(chaterror::RetryAfterSource::Header)
    );
}

#[test]
fn row65_retry_after_ms_wins_and_names_are_case_insensitive() {
    let err = boxed(
        pe("", 429)
            .with_header("Retry-After", "30")
            .with_header("ReTrY-AfTeR-Ms", "1500"),
    );
    assert_eq!(run(&err).retry_after, Duration::from_millis(1500));
}

#[test]
fn row66_retry_after_http_date() {
    let at = httpdate::fmt_http_date(now() + Duration::from_secs(3));
    let err = boxed(pe("", 429).with_header("Retry-After", at));
    assert_eq!(run(&err).retry_after, Duration::from_secs(3));
}

#[test]
fn row66_retry_after_http_date_in_the_past_is_no_hint() {
    let at = httpdate::fmt_http_date(now() - Duration::from_secs(3));
    let err = boxed(pe("", 429).with_header("Retry-After", at));
    assert_eq!(run(&err).retry_after, Duration::ZERO);
}

#[test]
fn row67_unparseable_retry_after() {
    let err = boxed(pe("", 429).with_header("Retry-After", "definitely not a delay"));
    let c = run(&err);
    assert_eq!(c.retry_after, Duration::ZERO);
    assert_eq!(c.retry_after_source, None);
}

#[test]
fn row68_hint_keeps_retry_after() {
    let c = run(&rate_limited_for_30s()).with_provider("openai");
    assert_eq!(c.retry_after, Duration::from_secs(30));
    assert_eq!(c.message, "OpenAI is rate limiting requests.");
    assert_eq!(c.provider, Some(Provider::OpenAi));
}

fn image_too_large() -> BoxError {
    boxed(pe("", 400).with_body(
        r#"{"error":{"type":"invalid_request_error","message":"Image exceeds 5 MB maximum."}}"#,
    ))
}

rows! {
    row69_structured_detail_from_body: image_too_large() => Generic, false, 400, None, "Image exceeds 5 MB maximum.", UNEXPECTED;
    row70_key_in_message_never_leaks: boxed(pe("invalid api key test-key", 401).with_body(r#"{"error":{"message":"Incorrect API key provided."}}"#)) => Auth, false, 401, None, "Incorrect API key provided.", A;
    row71_message_used_when_body_is_not_json: boxed(pe("  image exceeds 5 MB maximum  ", 400).with_body("not-json")) => Generic, false, 400, None, "image exceeds 5 MB maximum", UNEXPECTED;
}

#[test]
fn row72_detail_is_capped_at_500_characters() {
    let body = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(510));
    let c = run(&boxed(pe("", 400).with_body(body)));
    assert_eq!(c.detail, format!("{}…", "x".repeat(499)));
    assert_eq!(c.detail.chars().count(), 500);
}

#[test]
fn row73_hint_overrides_detected_provider() {
    let c = run(&text("openai received status 429 from upstream")).with_provider("azure openai");
    check(
        &c,
        ErrorKind::RateLimit,
        true,
        429,
        Some(Provider::Azure),
        "openai received status 429 from upstream",
        "Azure OpenAI is rate limiting requests.",
    );
}

#[test]
fn row74_hint_sets_provider() {
    let c = run(&text("received status 429 from upstream")).with_provider("openai");
    assert_eq!(c.provider, Some(Provider::OpenAi));
    assert_eq!(c.message, "OpenAI is rate limiting requests.");
}

#[test]
fn row74_unknown_hint_is_ignored() {
    let before = run(&text("received status 429 from upstream"));
    assert_eq!(before.clone().with_provider("something-else"), before);
}

#[test]
fn row75_pinned_stream_silence() {
    let pinned = boxed(with_classification(
        "context canceled",
        Classification {
            kind: Some(ErrorKind::StreamSilenceTimeout),
            provider: Some(Provider::OpenAi),
            retryable: true,
            ..Classification::default()
        },
    ));
    let c = run(&pinned);
    assert_eq!(c.kind, Some(ErrorKind::StreamSilenceTimeout));
    assert!(c.retryable);
    assert_eq!(c.provider, Some(Provider::OpenAi));
    assert_eq!(c.message, "OpenAI did not send response data in time.");
    assert_eq!(c.source, ClassificationSource::Explicit);
}

#[test]
fn row76_pinned_missing_key_keeps_detail() {
    let detail = "If this error persists after resending, please report it as a bug.";
    let pinned = boxed(with_classification(
        "routing requires the turn's API key",
        Classification {
            kind: Some(ErrorKind::MissingKey),
            detail: detail.to_owned(),
            ..Classification::default()
        },
    ));
    check(
        &run(&pinned),
        ErrorKind::MissingKey,
        false,
        0,
        None,
        detail,
        "This conversation was started with an API key that is no longer available. Send your message again to continue.",
    );
}

#[test]
fn pinned_wins_even_when_wrapped_and_keeps_the_original_in_the_graph() {
    let pinned = with_classification(
        cancelled(),
        Classification {
            kind: Some(ErrorKind::ContentFilter),
            content_filter_category: Some("violence".into()),
            ..Classification::default()
        },
    );
    let outer = wrap("stream response: ", boxed(pinned));
    let c = run(&outer);
    assert_eq!(
        c.message,
        "The AI provider blocked this response under its content policy (violence)."
    );
    // The original error is still reachable for other code (e.g. the retry loop's Cancelled check).
    let mut source = outer.source();
    let mut found = false;
    while let Some(err) = source {
        found |= err.is::<chaterror::Cancelled>();
        source = err.source();
    }
    assert!(found);
}
