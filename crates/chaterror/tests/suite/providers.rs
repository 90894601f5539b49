//! spec/chaterror.md §14.6 (broken response chain, continuity diagnostics, rows 77–86) and §14.7
//! (provider detection and hint normalisation).

use chaterror::{Classification, ErrorKind, Provider, normalize_provider, with_classification};

use crate::rows;
use crate::support::*;

const CONTINUITY: &str = "The chat continuation failed due to an internal state mismatch. This is not a configuration or billing issue.";
const FUNCTION_CALL_DIAGNOSTIC: &str =
    "OpenAI Responses API request continuity diagnostic: match=function_call_output_missing.";

rows! {
    row77_chain_broken: text("Previous response with id 'resp_abc' not found.") => Generic, true, 0, Some(Provider::OpenAi), "", "OpenAI returned an unexpected error.";
    row78_chain_broken_http: boxed(pe("Previous response with id 'resp_abc' not found.", 404)) => Generic, true, 404, Some(Provider::OpenAi), "Previous response with id 'resp_abc' not found.", "OpenAI returned an unexpected error.";
    row79_chain_broken_upper: text("PREVIOUS RESPONSE WITH ID 'RESP_ABC' NOT FOUND.") => Generic, true, 0, Some(Provider::OpenAi), "", "OpenAI returned an unexpected error.";
    row80_invalid_is_not_broken_chain: text("Previous response with id 'resp_abc' is invalid.") => Generic, false, 0, None, "Previous response with id 'resp_abc' is invalid.", FAILED_UNEXPECTEDLY;
    row81_not_found: boxed(pe("resource not found", 404)) => Generic, false, 404, None, "resource not found", UNEXPECTED;
    row82_image_too_large: boxed(pe("", 400).with_body(r#"{"error":{"type":"invalid_request_error","message":"Image exceeds 5 MB maximum."}}"#)) => Generic, false, 400, None, "Image exceeds 5 MB maximum.", UNEXPECTED;
    row84_function_call_output_missing: text("No Tool Output Found For Function Call call_sensitive123") => Generic, false, 0, None, FUNCTION_CALL_DIAGNOSTIC, CONTINUITY;
    row85_function_call_output_missing_in_body: boxed(pe("", 400).with_body(r#"{"error":{"message":"No tool output found for function call call_sensitive123.","type":"invalid_request_error"}}"#)) => Generic, false, 400, None, FUNCTION_CALL_DIAGNOSTIC, CONTINUITY;
    row86_web_search_reasoning_missing: text("Item 'ws_abc123' of type 'web_search_call' WAS PROVIDED WITHOUT ITS REQUIRED 'reasoning' item: 'rs_def456'") => Generic, false, 0, None, "OpenAI Responses API request continuity diagnostic: match=web_search_reasoning_missing.", CONTINUITY;
}

#[test]
fn rows77_to_79_mark_the_chain_broken_and_80_to_82_do_not() {
    for input in [
        text("Previous response with id 'resp_abc' not found."),
        boxed(pe("Previous response with id 'resp_abc' not found.", 404)),
        text("PREVIOUS RESPONSE WITH ID 'RESP_ABC' NOT FOUND."),
    ] {
        assert!(run(&input).chain_broken, "{input}");
    }
    for input in [
        text("Previous response with id 'resp_abc' is invalid."),
        boxed(pe("resource not found", 404)),
        boxed(pe("", 400).with_body(r#"{"error":{"message":"Image exceeds 5 MB maximum."}}"#)),
    ] {
        assert!(!run(&input).chain_broken, "{input}");
    }
}

#[test]
fn row83_pinned_chain_broken_round_trips() {
    let pinned = boxed(with_classification(
        "anything",
        Classification {
            kind: Some(ErrorKind::Generic),
            retryable: true,
            provider: Some(Provider::OpenAi),
            chain_broken: true,
            ..Classification::default()
        },
    ));
    let c = run(&pinned);
    check(
        &c,
        ErrorKind::Generic,
        true,
        0,
        Some(Provider::OpenAi),
        "",
        "OpenAI returned an unexpected error.",
    );
    assert!(c.chain_broken);
}

#[test]
fn rows84_to_86_never_echo_provider_ids() {
    for input in [
        text("No Tool Output Found For Function Call call_sensitive123"),
        boxed(pe("", 400).with_body(
            r#"{"error":{"message":"No tool output found for function call call_sensitive123.","type":"invalid_request_error"}}"#,
        )),
        text("Item 'ws_abc123' of type 'web_search_call' WAS PROVIDED WITHOUT ITS REQUIRED 'reasoning' item: 'rs_def456'"),
    ] {
        let c = run(&input);
        for id in ["call_sensitive123", "ws_abc123", "rs_def456"] {
            assert!(!c.message.contains(id) && !c.detail.contains(id), "{id} leaked: {c:?}");
        }
    }
}

macro_rules! detect_rows {
    ($($name:ident: $text:literal => $expected:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(Provider::detect($text), $expected, "{}", $text);
        }
    )*};
}

detect_rows! {
    detect_openai_compatible: "openai compatible endpoint failed" => Some(Provider::OpenAiCompat);
    detect_openai_compat: "openai-compat: status 500" => Some(Provider::OpenAiCompat);
    detect_azure_openai: "azure-openai deployment busy" => Some(Provider::Azure);
    detect_openrouter: "openrouter upstream error" => Some(Provider::OpenRouter);
    detect_aws_bedrock: "aws bedrock throttled" => Some(Provider::Bedrock);
    detect_bedrock: "bedrock throttled" => Some(Provider::Bedrock);
    detect_vercel: "vercel ai gateway error" => Some(Provider::Vercel);
    detect_claude: "claude overloaded" => Some(Provider::Anthropic);
    detect_vertex: "vertex ai quota" => Some(Provider::Google);
    detect_gemini: "gemini error" => Some(Provider::Google);
    detect_openai: "openai error" => Some(Provider::OpenAi);
    detect_none: "upstream error" => None;
}

macro_rules! hint_rows {
    ($($name:ident: $hint:literal => $expected:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(normalize_provider($hint), $expected, "{}", $hint);
        }
    )*};
}

hint_rows! {
    hint_azure_openai: "Azure OpenAI" => Some(Provider::Azure);
    hint_openai_compat_underscore: "openai_compat" => Some(Provider::OpenAiCompat);
    hint_openai_compat_space: "openai compat" => Some(Provider::OpenAiCompat);
    hint_anthropic: "anthropic" => Some(Provider::Anthropic);
    hint_unknown: "something-else" => None;
}
