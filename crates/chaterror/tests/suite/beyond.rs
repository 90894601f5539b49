//! spec/chaterror.md §15: in-stream errors, structured-first sources, `x-should-retry`, the
//! machine-readable context-window sub-reason, determinism.

use std::time::Duration;

use chaterror::{ClassificationSource, ErrorKind, Provider, ProviderStreamError, SubReason};

use crate::support::*;

fn stream_error(provider: Provider, error_type: &str, code: &str, message: &str) -> BoxError {
    boxed(ProviderStreamError {
        provider: Some(provider),
        error_type: error_type.to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        status: 0,
    })
}

#[test]
fn stream_anthropic_overloaded_error() {
    let c = run(&stream_error(
        Provider::Anthropic,
        "overloaded_error",
        "",
        "Overloaded",
    ));
    check(
        &c,
        ErrorKind::Overloaded,
        true,
        0,
        Some(Provider::Anthropic),
        "Overloaded",
        "Anthropic is temporarily overloaded.",
    );
    assert_eq!(c.provider_code.as_deref(), Some("overloaded_error"));
    assert_eq!(c.source, ClassificationSource::Structured);
}

#[test]
fn stream_anthropic_api_error() {
    let c = run(&stream_error(
        Provider::Anthropic,
        "api_error",
        "",
        "Internal server error",
    ));
    check(
        &c,
        ErrorKind::Generic,
        true,
        0,
        Some(Provider::Anthropic),
        "Internal server error",
        "Anthropic returned an unexpected error.",
    );
}

#[test]
fn stream_anthropic_rate_limit_error() {
    let c = run(&stream_error(
        Provider::Anthropic,
        "rate_limit_error",
        "",
        "Number of requests has exceeded your rate limit",
    ));
    assert_eq!(
        (c.kind, c.retryable, c.status_code, c.provider),
        (
            Some(ErrorKind::RateLimit),
            true,
            0,
            Some(Provider::Anthropic)
        )
    );
}

#[test]
fn stream_openai_rate_limit_exceeded_reads_the_body_hint() {
    let c = run(&stream_error(
        Provider::OpenAi,
        "",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o in organization org-x on tokens per min. Please try again in 1.5s.",
    ));
    assert_eq!(
        (c.kind, c.retryable, c.status_code, c.provider),
        (Some(ErrorKind::RateLimit), true, 0, Some(Provider::OpenAi))
    );
    assert_eq!(c.retry_after, Duration::from_millis(1500));
    assert_eq!(
        c.retry_after_source,
        Some(chaterror::RetryAfterSource::Body)
    );
}

#[test]
fn response_failed_openai_server_error() {
    let c = run(&stream_error(
        Provider::OpenAi,
        "",
        "server_error",
        "The server had an error processing your request.",
    ));
    assert_eq!(
        (c.kind, c.retryable, c.status_code, c.provider),
        (Some(ErrorKind::Generic), true, 0, Some(Provider::OpenAi))
    );
}

#[test]
fn response_failed_openai_insufficient_quota() {
    let c = run(&stream_error(
        Provider::OpenAi,
        "",
        "insufficient_quota",
        "You exceeded your current quota.",
    ));
    assert_eq!(
        (c.kind, c.retryable, c.provider),
        (Some(ErrorKind::UsageLimit), false, Some(Provider::OpenAi))
    );
}

#[test]
fn stream_openai_context_length_exceeded() {
    let c = run(&stream_error(
        Provider::OpenAi,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens.",
    ));
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Config), false));
    assert_eq!(c.sub_reason, Some(SubReason::ContextWindowExceeded));
}

#[test]
fn stream_openai_server_is_overloaded() {
    let c = run(&stream_error(
        Provider::OpenAi,
        "",
        "server_is_overloaded",
        "The server is overloaded.",
    ));
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Overloaded), true));
}

#[test]
fn stream_status_200_is_never_a_status() {
    let err = boxed(ProviderStreamError {
        provider: Some(Provider::Google),
        error_type: "INTERNAL".into(),
        message: "internal".into(),
        status: 200,
        ..ProviderStreamError::default()
    });
    assert_eq!(run(&err).status_code, 0);
}

#[test]
fn stream_numeric_code_in_payload_is_the_status() {
    let err = boxed(ProviderStreamError {
        provider: Some(Provider::Google),
        error_type: "RESOURCE_EXHAUSTED".into(),
        message: "Resource has been exhausted".into(),
        status: 429,
        ..ProviderStreamError::default()
    });
    let c = run(&err);
    assert_eq!((c.kind, c.status_code), (Some(ErrorKind::RateLimit), 429));
}

#[test]
fn should_retry_false_makes_a_timeout_final() {
    let err = boxed(pe("service unavailable", 503).with_header("x-should-retry", "false"));
    check(
        &run(&err),
        ErrorKind::Timeout,
        false,
        503,
        None,
        "service unavailable",
        UNAVAILABLE,
    );
}

#[test]
fn should_retry_true_makes_a_generic_error_retryable() {
    let err = boxed(
        pe("", 400)
            .with_body(r#"{"error":{"type":"invalid_request_error","message":"Image exceeds 5 MB maximum."}}"#)
            .with_header("X-Should-Retry", "TRUE"),
    );
    check(
        &run(&err),
        ErrorKind::Generic,
        true,
        400,
        None,
        "Image exceeds 5 MB maximum.",
        UNEXPECTED,
    );
}

#[test]
fn should_retry_true_is_ignored_for_auth() {
    let c = run(&boxed(pe("", 401).with_header("x-should-retry", "true")));
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Auth), false));
    assert!(
        c.should_retry_ignored,
        "the caller must be able to log the ignored header"
    );
}

#[test]
fn text_status_is_heuristic_and_http_status_is_structured() {
    assert_eq!(
        run(&text("status 429 from upstream")).source,
        ClassificationSource::Heuristic
    );
    assert_eq!(
        run(&boxed(pe("", 429))).source,
        ClassificationSource::Structured
    );
}

#[test]
fn nothing_matched_is_default_and_markers_are_structured() {
    assert_eq!(
        run(&text("something odd")).source,
        ClassificationSource::Default
    );
    assert_eq!(run(&cancelled()).source, ClassificationSource::Structured);
    assert_eq!(run(&deadline()).source, ClassificationSource::Structured);
    assert_eq!(
        run(&h2_peer(1, "REFUSED_STREAM")).source,
        ClassificationSource::Structured
    );
}

#[test]
fn transport_timeouts_are_retryable_structured_timeouts() {
    for phase in [
        chaterror::TimeoutPhase::Connect,
        chaterror::TimeoutPhase::FirstByte,
        chaterror::TimeoutPhase::InterEvent,
    ] {
        let c = run(&boxed(chaterror::TransportTimeout { phase }));
        assert_eq!(
            (c.kind, c.retryable, c.source),
            (
                Some(ErrorKind::Timeout),
                true,
                ClassificationSource::Structured
            )
        );
    }
}

/// The table of §15(d): input → kind `config`, not retryable, sub-reason, source.
macro_rules! context_window_rows {
    ($($name:ident: $input:expr => $sub:expr, $source:ident;)*) => {$(
        #[test]
        fn $name() {
            let c = run(&$input);
            assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Config), false), "{c:#?}");
            assert_eq!((c.sub_reason, c.source), ($sub, ClassificationSource::$source), "{c:#?}");
        }
    )*};
}

context_window_rows! {
    context_window_forbidden_text: text("forbidden: context length exceeded") => Some(SubReason::ContextWindowExceeded), Heuristic;
    context_window_invalid_model_has_no_sub_reason: text("invalid model") => None, Heuristic;
    context_window_anthropic_prompt_too_long: boxed(pe("", 400).with_body(
        r#"{"error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
    )) => Some(SubReason::ContextWindowExceeded), Heuristic;
    context_window_openai_code: boxed(pe("", 400).with_body(
        r#"{"error":{"code":"context_length_exceeded","message":"…"}}"#,
    )) => Some(SubReason::ContextWindowExceeded), Structured;
}

#[test]
fn code_rows_marked_dagger_yield_to_a_config_match() {
    let c = run(&stream_error(
        Provider::Anthropic,
        "rate_limit_error",
        "",
        "rate limited: invalid model",
    ));
    assert_eq!(c.kind, Some(ErrorKind::Config));
}

#[test]
fn a_user_interrupt_cancellation_is_the_canceled_branch() {
    let err = boxed(chaterror::Cancelled {
        cause: Some(chaterror::CancelCause::UserInterrupt),
    });
    let c = run(&err);
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Generic), false));
    assert_eq!(c.message, CANCELED);
}

#[test]
fn a_provider_reset_cancellation_is_a_retryable_timeout() {
    let err = boxed(chaterror::Cancelled {
        cause: Some(chaterror::CancelCause::ProviderReset { h2_code: Some(2) }),
    });
    let c = run(&err);
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
}

#[test]
fn no_error_is_the_empty_classification() {
    let c = run(&text(""));
    assert!(c.is_empty());
    assert_eq!(c, chaterror::Classification::default());
    #[cfg(feature = "wire")]
    assert_eq!(chaterror::terminal_payload(&c), None);
}

#[cfg(feature = "wire")]
#[test]
fn terminal_payload_round_trips_through_the_wire_type() {
    let c = run(&boxed(pe("", 429).with_header("retry-after", "2")));
    let wire = chaterror::terminal_payload(&c).unwrap();
    assert_eq!(wire.kind(), chatproto::chatd::v1::ErrorKind::RateLimit);
    assert_eq!(wire.status_code, 429);
    assert_eq!(
        wire.source(),
        chatproto::chatd::v1::ClassificationSource::Structured
    );
    let back = chaterror::classification_from_wire(&wire);
    assert_eq!(
        (
            back.kind,
            back.retryable,
            back.status_code,
            back.message.as_str()
        ),
        (c.kind, c.retryable, c.status_code, c.message.as_str())
    );
    assert_eq!(back.retry_after, Duration::from_secs(2));
}

#[cfg(feature = "wire")]
#[test]
fn retry_payload_carries_the_banner_and_the_resume_time() {
    let c = run(&text("status 529"));
    let event = chaterror::retry_payload(&c, 3, Duration::from_secs(4), now());
    assert_eq!(event.attempt, 3);
    assert_eq!(event.delay_ms, 4000);
    assert_eq!(event.error, "The AI provider is temporarily overloaded.");
    assert_eq!(event.status_code, 529);
    assert_eq!(event.retrying_at.unwrap().seconds, 1_800_000_004);
}

#[test]
fn every_kind_and_provider_has_a_wire_string() {
    for kind in ErrorKind::ALL {
        assert_eq!(ErrorKind::from_wire(kind.as_str()), Some(kind));
    }
    for provider in Provider::DETECTION_ORDER {
        assert_eq!(Provider::from_wire(provider.as_str()), Some(provider));
    }
}

#[cfg(feature = "wire")]
#[test]
fn every_kind_and_provider_has_a_wire_enum() {
    for kind in ErrorKind::ALL {
        assert_eq!(
            chaterror::kind_from_wire(chaterror::kind_to_wire(Some(kind))),
            Some(kind)
        );
    }
    for provider in Provider::DETECTION_ORDER {
        assert_eq!(
            chaterror::provider_from_wire(chaterror::provider_to_wire(Some(provider))),
            Some(provider)
        );
    }
}

#[test]
fn retry_banner_short_forms() {
    let banner = |kind, provider| {
        chaterror::retry_banner_text(&chaterror::Classification {
            kind: Some(kind),
            provider,
            message: "m".into(),
            ..Default::default()
        })
    };
    assert_eq!(
        banner(ErrorKind::Auth, None),
        "Authentication with the AI provider failed."
    );
    assert_eq!(
        banner(ErrorKind::Config, Some(Provider::Anthropic)),
        "Anthropic rejected the model configuration."
    );
    assert_eq!(
        banner(ErrorKind::MissingKey, None),
        "The API key for this conversation is no longer available."
    );
    assert_eq!(
        banner(ErrorKind::ProviderDisabled, None),
        "The AI provider has been disabled by an administrator."
    );
    assert_eq!(
        banner(ErrorKind::UsageLimit, Some(Provider::OpenAi)),
        "OpenAI returned an unexpected error."
    );
    let retryable = chaterror::Classification {
        kind: Some(ErrorKind::Overloaded),
        retryable: true,
        message: "Anthropic is temporarily overloaded.".into(),
        ..Default::default()
    };
    assert_eq!(
        chaterror::retry_banner_text(&retryable),
        "Anthropic is temporarily overloaded."
    );
}
