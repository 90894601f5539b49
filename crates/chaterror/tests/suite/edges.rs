//! Rules of spec/chaterror.md that the tables do not pin row by row.

use std::time::Duration;

use chaterror::{
    Classification, ClassificationSource, ErrorKind, MessageTemplate, Provider,
    ProviderTransportReset, with_classification,
};

use crate::support::*;

#[test]
fn an_auth_failure_never_echoes_the_clients_message() {
    // §10: auth detail is structured only; a client message may repeat the key.
    let c = run(&boxed(pe("invalid api key test-key-123", 401)));
    assert_eq!((c.kind, c.detail.as_str()), (Some(ErrorKind::Auth), ""));
}

#[test]
fn a_success_status_is_never_reported() {
    assert_eq!(run(&boxed(pe("odd", 200))).status_code, 0);
    assert_eq!(
        run(&text("stream response: HTTP 200: unexpected EOF")).status_code,
        0
    );
}

#[test]
fn a_stream_error_never_takes_its_status_from_text() {
    let err = boxed(chaterror::ProviderStreamError {
        provider: Some(Provider::Anthropic),
        message: "rate limit reached, status 429 from upstream".into(),
        ..Default::default()
    });
    let c = run(&err);
    assert_eq!(c.status_code, 0);
    assert_eq!(
        c.kind,
        Some(ErrorKind::RateLimit),
        "the text still decides the kind"
    );
}

#[test]
fn the_http_error_wins_over_a_stream_error_above_it() {
    let err = wrap(
        "",
        join(vec![
            boxed(chaterror::ProviderStreamError {
                message: "x".into(),
                ..Default::default()
            }),
            boxed(pe("", 503).with_header("x-should-retry", "false")),
        ]),
    );
    let c = run(&err);
    assert_eq!((c.status_code, c.retryable), (503, false));
}

#[test]
fn a_tiny_retry_after_ms_falls_back_to_retry_after() {
    let err = boxed(
        pe("", 429)
            .with_header("retry-after-ms", "0.0000001")
            .with_header("retry-after", "2"),
    );
    assert_eq!(run(&err).retry_after, Duration::from_secs(2));
}

#[test]
fn retry_after_zero_negative_and_fractional() {
    let after =
        |value: &str| run(&boxed(pe("", 429).with_header("retry-after", value))).retry_after;
    assert_eq!(after("0"), Duration::ZERO);
    assert_eq!(after("-3"), Duration::ZERO);
    assert_eq!(after("1.5"), Duration::from_millis(1500));
}

#[test]
fn retry_after_rfc850_and_asctime_dates() {
    // 2027-01-15T08:00:03Z is now() + 3 s (now() is 1_800_000_000 s after the epoch).
    for date in ["Friday, 15-Jan-27 08:00:03 GMT", "Fri Jan 15 08:00:03 2027"] {
        let c = run(&boxed(pe("", 429).with_header("retry-after", date)));
        assert_eq!(c.retry_after, Duration::from_secs(3), "{date}");
    }
}

#[test]
fn only_the_first_64_kib_of_a_body_is_read() {
    let mut body = br#"{"error":{"message":"hidden"}}"#.to_vec();
    let mut padded = vec![b' '; 64 * 1024];
    padded.append(&mut body);
    let c = run(&boxed(pe("visible", 400).with_body(padded)));
    assert_eq!(c.detail, "visible");
}

#[test]
fn a_top_level_message_is_a_structured_detail() {
    let c = run(&boxed(
        pe("", 400).with_body(r#"{"message":"bad request shape"}"#),
    ));
    assert_eq!(c.detail, "bad request shape");
}

#[test]
fn a_transport_reset_with_a_status_is_not_forced_to_timeout() {
    let err = wrap("status 401: ", boxed(ProviderTransportReset::new()));
    assert_eq!(run(&err).kind, Some(ErrorKind::Auth));
    let err = boxed(ProviderTransportReset::wrapping(pe("", 400)));
    assert_eq!(run(&err).kind, Some(ErrorKind::Generic));
}

#[test]
fn a_local_reset_keeps_status_rules() {
    let err = wrap("status 429: ", h2_local(3, "CANCEL", None));
    assert_eq!(run(&err).kind, Some(ErrorKind::RateLimit));
}

#[test]
fn an_empty_kind_with_a_message_becomes_generic() {
    let c = chaterror::normalize(Classification {
        message: "something".into(),
        ..Default::default()
    });
    assert_eq!(c.kind, Some(ErrorKind::Generic));
}

#[test]
fn a_hint_re_renders_the_stream_closed_template() {
    let c = run(&text(
        "openai responses stream closed before terminal event: EOF",
    ))
    .with_provider("azure openai");
    assert_eq!(
        c.message,
        "Azure OpenAI stream closed unexpectedly before the response completed."
    );
}

#[test]
fn the_same_provider_does_not_re_render_an_existing_message() {
    let pinned = boxed(with_classification(
        "x",
        Classification {
            kind: Some(ErrorKind::Generic),
            provider: Some(Provider::OpenAi),
            message: "Custom words.".into(),
            ..Default::default()
        },
    ));
    assert_eq!(
        run(&pinned).with_provider("openai").message,
        "Custom words."
    );
}

#[test]
fn content_filter_without_a_category() {
    let c = chaterror::normalize(Classification {
        kind: Some(ErrorKind::ContentFilter),
        provider: Some(Provider::Anthropic),
        ..Default::default()
    });
    assert_eq!(
        c.message,
        "Anthropic blocked this response under its content policy."
    );
}

#[test]
fn the_compaction_message() {
    let c = Classification::compaction_still_over_limit();
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Config), false));
    assert_eq!(c.message_template, MessageTemplate::CompactionOverLimit);
    assert_eq!(
        c.message,
        "Conversation compaction could not reduce the history below the configured limit. Raise the compaction limit in settings, or start a new conversation."
    );
}

#[test]
fn should_retry_true_is_ignored_for_config_and_usage_limit() {
    for (message, kind) in [
        ("invalid model", ErrorKind::Config),
        ("insufficient_quota", ErrorKind::UsageLimit),
    ] {
        let c = run(&boxed(
            pe(message, 400).with_header("x-should-retry", "true"),
        ));
        assert_eq!(
            (c.kind, c.retryable, c.should_retry_ignored),
            (Some(kind), false, true)
        );
    }
}

#[test]
fn should_retry_never_applies_to_a_pinned_classification() {
    let pinned = with_classification(
        pe("", 503).with_header("x-should-retry", "true"),
        Classification {
            kind: Some(ErrorKind::Timeout),
            retryable: false,
            ..Default::default()
        },
    );
    let c = run(&boxed(pinned));
    assert_eq!(
        (c.retryable, c.source),
        (false, ClassificationSource::Explicit)
    );
}

#[test]
fn rows84_to_86_do_not_break_the_chain() {
    for input in [
        text("No Tool Output Found For Function Call call_sensitive123"),
        text(
            "Item 'ws_abc123' of type 'web_search_call' WAS PROVIDED WITHOUT ITS REQUIRED 'reasoning' item: 'rs_def456'",
        ),
    ] {
        assert!(!run(&input).chain_broken);
    }
}

#[test]
fn a_looping_source_chain_does_not_hang() {
    #[derive(Debug)]
    struct Loop;
    impl std::fmt::Display for Loop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("loop")
        }
    }
    static LOOP: Loop = Loop;
    impl std::error::Error for Loop {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&LOOP)
        }
    }
    let c = chaterror::classify(&Loop, &ctx());
    assert_eq!(c.kind, Some(ErrorKind::Generic));
}
