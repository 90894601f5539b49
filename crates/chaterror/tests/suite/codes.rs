//! Every row of the provider error-code table (spec/chaterror.md §15(a)), each keyed on the
//! payload field its provider uses.

use chaterror::{ClassificationSource, ErrorKind, Provider, ProviderStreamError, SubReason};

use crate::support::*;

/// A stream error carrying `code` in the given field (`type` or `code`).
fn in_stream(provider: Provider, field: &str, code: &str) -> BoxError {
    boxed(ProviderStreamError {
        provider: Some(provider),
        error_type: if field == "type" {
            code.to_owned()
        } else {
            String::new()
        },
        code: if field == "code" {
            code.to_owned()
        } else {
            String::new()
        },
        message: "provider said no".to_owned(),
        status: 0,
    })
}

macro_rules! code_rows {
    ($($name:ident: $provider:ident $field:literal $code:literal => $kind:ident, $retry:literal;)*) => {$(
        #[test]
        fn $name() {
            let c = run(&in_stream(Provider::$provider, $field, $code));
            assert_eq!((c.kind, c.retryable), (Some(ErrorKind::$kind), $retry), "{c:#?}");
            assert_eq!(c.provider_code.as_deref(), Some($code));
            assert_eq!(c.source, ClassificationSource::Structured);
            assert_eq!(c.provider, Some(Provider::$provider));
        }
    )*};
}

code_rows! {
    anthropic_overloaded_error: Anthropic "type" "overloaded_error" => Overloaded, true;
    anthropic_rate_limit_error: Anthropic "type" "rate_limit_error" => RateLimit, true;
    anthropic_api_error: Anthropic "type" "api_error" => Generic, true;
    anthropic_timeout_error: Anthropic "type" "timeout_error" => Timeout, true;
    anthropic_authentication_error: Anthropic "type" "authentication_error" => Auth, false;
    anthropic_permission_error: Anthropic "type" "permission_error" => Auth, false;
    anthropic_billing_error: Anthropic "type" "billing_error" => UsageLimit, false;
    openai_server_is_overloaded: OpenAi "code" "server_is_overloaded" => Overloaded, true;
    openai_slow_down: OpenAi "code" "slow_down" => Overloaded, true;
    openai_rate_limit_exceeded: OpenAi "code" "rate_limit_exceeded" => RateLimit, true;
    openai_insufficient_quota_code: OpenAi "code" "insufficient_quota" => UsageLimit, false;
    openai_insufficient_quota_type: OpenAi "type" "insufficient_quota" => UsageLimit, false;
    openai_context_length_exceeded: OpenAi "code" "context_length_exceeded" => Config, false;
    openai_invalid_api_key: OpenAi "code" "invalid_api_key" => Auth, false;
    openai_model_not_found: OpenAi "code" "model_not_found" => Config, false;
    openai_server_error: OpenAi "code" "server_error" => Generic, true;
    openai_previous_response_not_found: OpenAi "code" "previous_response_not_found" => Generic, true;
    google_resource_exhausted: Google "type" "RESOURCE_EXHAUSTED" => RateLimit, true;
    google_unavailable: Google "type" "UNAVAILABLE" => Timeout, true;
    google_deadline_exceeded: Google "type" "DEADLINE_EXCEEDED" => Timeout, true;
    google_internal: Google "type" "INTERNAL" => Generic, true;
    google_unauthenticated: Google "type" "UNAUTHENTICATED" => Auth, false;
    google_permission_denied: Google "type" "PERMISSION_DENIED" => Auth, false;
}

#[test]
fn openai_context_length_code_sets_the_sub_reason() {
    let c = run(&in_stream(
        Provider::OpenAi,
        "code",
        "context_length_exceeded",
    ));
    assert_eq!(c.sub_reason, Some(SubReason::ContextWindowExceeded));
}

#[test]
fn previous_response_not_found_breaks_the_chain() {
    assert!(
        run(&in_stream(
            Provider::OpenAi,
            "code",
            "previous_response_not_found"
        ))
        .chain_broken
    );
}

#[test]
fn an_openai_code_in_the_type_field_does_not_decide() {
    // OpenAI's 5xx bodies say `"type": "server_error"`; only `code` is keyed (§15(a)).
    let err = boxed(pe("", 503).with_body(
        r#"{"error":{"message":"Service Unavailable","type":"server_error","code":null}}"#,
    ));
    let c = run(&err);
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
    assert_eq!(
        c.provider_code.as_deref(),
        Some("server_error"),
        "the code read is still reported"
    );
}

#[test]
fn an_unknown_code_falls_through_to_the_rules() {
    let c = run(&in_stream(Provider::Anthropic, "type", "request_too_large"));
    assert_eq!(
        (c.kind, c.source),
        (Some(ErrorKind::Generic), ClassificationSource::Default)
    );
    assert_eq!(c.provider_code.as_deref(), Some("request_too_large"));
}

#[test]
fn auth_rows_take_their_detail_from_the_payload_only() {
    let err = wrap(
        "gemini call with key AIzaSyExampleKey1234: ",
        boxed(ProviderStreamError {
            provider: Some(Provider::Google),
            error_type: "UNAUTHENTICATED".into(),
            ..ProviderStreamError::default()
        }),
    );
    let c = run(&err);
    assert_eq!(c.kind, Some(ErrorKind::Auth));
    assert_eq!(
        c.detail, "",
        "the wrapper's text must not become the detail"
    );
}
