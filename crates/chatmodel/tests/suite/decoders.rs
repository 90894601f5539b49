//! The stream decoders on transcripts in the providers' documented wire formats: text,
//! reasoning, parallel tool calls with streamed arguments, usage, every finish reason, in-stream
//! errors (classified end to end by chaterror), malformed frames and truncated streams.

use std::time::SystemTime;

use chaterror::{ClassifyContext, ErrorKind, Provider, classify};
use chatmodel::anthropic::AnthropicDecoder;
use chatmodel::openai::OpenAiDecoder;
use chatmodel::{FinishReason, ModelError, StreamPart, Usage};

/// Splits an SSE transcript into (event, data) pairs.
fn events(sse: &str) -> Vec<(String, String)> {
    sse.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                }
            }
            (event, data)
        })
        .collect()
}

fn anthropic(sse: &str) -> (Vec<StreamPart>, AnthropicDecoder) {
    let mut decoder = AnthropicDecoder::default();
    let mut parts = Vec::new();
    for (event, data) in events(sse) {
        parts.extend(decoder.decode(&event, &data).unwrap());
    }
    (parts, decoder)
}

const ANTHROPIC_TOOLS: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me check."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig=="}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking two files."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_a","name":"read_file","input":{}}}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_b","name":"read_file","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"path\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"path\":\"b\"}"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"a\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}

event: message_stop
data: {"type":"message_stop"}

"#;

#[test]
fn anthropic_reasoning_text_and_parallel_tool_calls() {
    let (parts, decoder) = anthropic(ANTHROPIC_TOOLS);
    assert!(decoder.is_complete());
    assert_eq!(
        parts,
        vec![
            StreamPart::ResponseId("msg_01".into()),
            StreamPart::ReasoningDelta("Let me check.".into()),
            StreamPart::ReasoningSignature("sig==".into()),
            StreamPart::TextDelta("Checking two files.".into()),
            StreamPart::ToolCallStart {
                id: "toolu_a".into(),
                name: "read_file".into()
            },
            StreamPart::ToolCallStart {
                id: "toolu_b".into(),
                name: "read_file".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "toolu_a".into(),
                delta: "{\"path\":".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "toolu_b".into(),
                delta: "{\"path\":\"b\"}".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "toolu_a".into(),
                delta: "\"a\"}".into()
            },
            StreamPart::ToolCallEnd {
                id: "toolu_a".into(),
                name: "read_file".into(),
                args: "{\"path\":\"a\"}".into()
            },
            StreamPart::ToolCallEnd {
                id: "toolu_b".into(),
                name: "read_file".into(),
                args: "{\"path\":\"b\"}".into()
            },
            StreamPart::Usage(Usage {
                input_tokens: 25,
                output_tokens: 42,
                cache_write_tokens: 3,
                cache_read_tokens: 7,
                reasoning_tokens: 0
            }),
            StreamPart::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[test]
fn anthropic_finish_reasons() {
    for (reason, expected) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("something_new", FinishReason::Other),
    ] {
        let mut decoder = AnthropicDecoder::default();
        let parts = decoder
            .decode(
                "message_delta",
                &format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"{reason}"}}}}"#),
            )
            .unwrap();
        assert_eq!(parts, vec![StreamPart::Finish(expected)], "{reason}");
    }
}

#[test]
fn anthropic_error_event_is_a_structured_overloaded_error() {
    let mut decoder = AnthropicDecoder::default();
    let err = decoder
        .decode(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::Stream(_)));
    let c = classify(&err, &ClassifyContext::new(SystemTime::UNIX_EPOCH));
    assert_eq!(
        (c.kind, c.retryable, c.provider),
        (Some(ErrorKind::Overloaded), true, Some(Provider::Anthropic))
    );
    assert_eq!(c.provider_code.as_deref(), Some("overloaded_error"));
}

#[test]
fn anthropic_malformed_frame_is_a_typed_error() {
    let mut decoder = AnthropicDecoder::default();
    let err = decoder
        .decode("content_block_delta", "{not json")
        .unwrap_err();
    assert!(matches!(err, ModelError::InvalidEvent { .. }), "{err}");
    assert!(err.to_string().contains("content_block_delta"));
}

#[test]
fn a_truncated_anthropic_stream_classifies_as_the_spec_says() {
    let err = ModelError::Truncated {
        provider: Provider::Anthropic,
        cause: "unexpected EOF".into(),
    };
    assert_eq!(
        chaterror::full_text(&err),
        "anthropic stream closed before message_stop: unexpected EOF"
    );
    let c = classify(&err, &ClassifyContext::new(SystemTime::UNIX_EPOCH));
    assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
    assert_eq!(
        c.message,
        "Anthropic stream closed unexpectedly before the response completed."
    );
}

fn openai(chunks: &[&str]) -> (Vec<StreamPart>, OpenAiDecoder) {
    let mut decoder = OpenAiDecoder::new(Provider::OpenAi);
    let mut parts = Vec::new();
    for chunk in chunks {
        parts.extend(decoder.decode(chunk).unwrap());
    }
    (parts, decoder)
}

#[test]
fn openai_text_parallel_tool_calls_and_usage() {
    let (parts, decoder) = openai(&[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Reading."},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"read_file","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"execute","arguments":"{\"command\":"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\":\"a\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"ls\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":40},"completion_tokens_details":{"reasoning_tokens":5}}}"#,
        "[DONE]",
    ]);
    assert!(decoder.is_complete());
    assert_eq!(
        parts,
        vec![
            StreamPart::ResponseId("chatcmpl-1".into()),
            StreamPart::TextDelta("Reading.".into()),
            StreamPart::ToolCallStart {
                id: "call_a".into(),
                name: "read_file".into()
            },
            StreamPart::ToolCallStart {
                id: "call_b".into(),
                name: "execute".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "call_b".into(),
                delta: "{\"command\":".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "call_a".into(),
                delta: "{\"path\":\"a\"}".into()
            },
            StreamPart::ToolCallArgsDelta {
                id: "call_b".into(),
                delta: "\"ls\"}".into()
            },
            StreamPart::ToolCallEnd {
                id: "call_a".into(),
                name: "read_file".into(),
                args: "{\"path\":\"a\"}".into()
            },
            StreamPart::ToolCallEnd {
                id: "call_b".into(),
                name: "execute".into(),
                args: "{\"command\":\"ls\"}".into()
            },
            StreamPart::Finish(FinishReason::ToolCalls),
            StreamPart::Usage(Usage {
                input_tokens: 60,
                output_tokens: 20,
                cache_write_tokens: 0,
                cache_read_tokens: 40,
                reasoning_tokens: 5
            }),
        ]
    );
}

/// A compatible server that sends no call ids: each call is named by its index, so two calls
/// of one response stay apart.
#[test]
fn openai_calls_without_ids_are_named_by_their_index() {
    let (parts, _) = openai(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"","function":{"name":"execute","arguments":"{}"}},{"index":1,"function":{"name":"read_file","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ]);
    let ends: Vec<(String, String)> = parts
        .iter()
        .filter_map(|p| match p {
            StreamPart::ToolCallEnd { id, name, .. } => Some((id.clone(), name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("call_0".to_owned(), "execute".to_owned()),
            ("call_1".to_owned(), "read_file".to_owned())
        ]
    );
}

#[test]
fn openai_finish_reasons_and_reasoning_content() {
    for (reason, expected) in [
        ("stop", FinishReason::Stop),
        ("length", FinishReason::Length),
        ("tool_calls", FinishReason::ToolCalls),
        ("content_filter", FinishReason::ContentFilter),
    ] {
        let (parts, _) = openai(&[&format!(
            r#"{{"choices":[{{"index":0,"delta":{{}},"finish_reason":"{reason}"}}]}}"#
        )]);
        assert_eq!(parts, vec![StreamPart::Finish(expected)], "{reason}");
    }
    let (parts, _) = openai(&[r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#]);
    assert_eq!(parts, vec![StreamPart::ReasoningDelta("hmm".into())]);
}

#[test]
fn openai_error_chunk_is_classified_by_its_code() {
    let mut decoder = OpenAiDecoder::new(Provider::OpenAi);
    let err = decoder
        .decode(r#"{"error":{"message":"Rate limit reached. Please try again in 1.5s.","type":"requests","code":"rate_limit_exceeded"}}"#)
        .unwrap_err();
    let c = classify(&err, &ClassifyContext::new(SystemTime::UNIX_EPOCH));
    assert_eq!(
        (c.kind, c.retryable, c.provider),
        (Some(ErrorKind::RateLimit), true, Some(Provider::OpenAi))
    );
    assert_eq!(c.retry_after, std::time::Duration::from_millis(1500));
}

#[test]
fn openai_malformed_chunk_is_a_typed_error() {
    let mut decoder = OpenAiDecoder::new(Provider::OpenAiCompat);
    assert!(matches!(
        decoder.decode("{\"choices\": [").unwrap_err(),
        ModelError::InvalidEvent { .. }
    ));
    assert!(!decoder.is_complete());
}

#[test]
fn request_bodies_follow_the_wire_formats() {
    use chatmodel::{AssistantPart, ModelMessage, ModelRequest, ToolDefinition, ToolResultBlock};
    let req = ModelRequest {
        model: "m".into(),
        system: "be brief".into(),
        messages: vec![
            ModelMessage::User { text: "hi".into() },
            ModelMessage::Assistant {
                parts: vec![
                    AssistantPart::Text("calling".into()),
                    AssistantPart::ToolCall {
                        id: "c1".into(),
                        name: "execute".into(),
                        args: "{\"command\":\"ls\"}".into(),
                    },
                ],
            },
            ModelMessage::ToolResults {
                results: vec![ToolResultBlock {
                    call_id: "c1".into(),
                    name: "execute".into(),
                    content: "{\"ok\":true}".into(),
                    is_error: false,
                }],
            },
        ],
        tools: vec![ToolDefinition {
            name: "execute".into(),
            description: "run".into(),
            input_schema: serde_json::json!({"type": "object"}),
        }],
        max_output_tokens: Some(100),
        temperature: None,
        provider_options: None,
        cache_prompt: false,
    };
    let a = chatmodel::anthropic::request_body(&req);
    assert_eq!(a["system"], "be brief");
    assert_eq!(a["max_tokens"], 100);
    assert_eq!(a["stream"], true);
    assert_eq!(a["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(a["messages"][1]["content"][1]["input"]["command"], "ls");
    assert_eq!(a["messages"][2]["content"][0]["tool_use_id"], "c1");
    assert_eq!(a["tools"][0]["input_schema"]["type"], "object");

    let o = chatmodel::openai::request_body(&req);
    assert_eq!(o["messages"][0]["role"], "system");
    assert_eq!(
        o["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"command\":\"ls\"}"
    );
    assert_eq!(o["messages"][3]["role"], "tool");
    assert_eq!(o["stream_options"]["include_usage"], true);
    assert_eq!(o["tools"][0]["function"]["parameters"]["type"], "object");
    assert!(!a.to_string().contains("cache_control"));

    // Prompt caching marks the system prompt and the last block of the last two messages.
    let cached = ModelRequest {
        cache_prompt: true,
        ..req
    };
    let a = chatmodel::anthropic::request_body(&cached);
    let ephemeral = serde_json::json!({"type": "ephemeral"});
    assert_eq!(a["system"][0]["text"], "be brief");
    assert_eq!(a["system"][0]["cache_control"], ephemeral);
    assert!(
        a["messages"][0]["content"][0]
            .get("cache_control")
            .is_none()
    );
    assert_eq!(a["messages"][1]["content"][1]["cache_control"], ephemeral);
    assert!(
        a["messages"][1]["content"][0]
            .get("cache_control")
            .is_none()
    );
    assert_eq!(a["messages"][2]["content"][0]["cache_control"], ephemeral);
    assert_eq!(a.to_string().matches("cache_control").count(), 3);
    // OpenAI caches prefixes on its own.
    assert!(
        !chatmodel::openai::request_body(&cached)
            .to_string()
            .contains("cache_control")
    );
}
