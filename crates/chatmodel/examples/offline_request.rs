//! Use chatmodel the way a service would, without a network or an API key: build a
//! `ModelRequest`, look at the body each wire format sends, decode a recorded Anthropic stream
//! into neutral parts, and configure a client whose call fails — it points at a closed local
//! port — so the failure can be classified with chaterror.
//!
//! Run with `cargo run -p chatmodel --example offline_request`.

#![allow(clippy::print_stdout)] // an example reports on stdout

use std::time::{Duration, SystemTime};

use chaterror::{ClassifyContext, ErrorKind, classify, full_text};
use chatmodel::anthropic::{self, AnthropicDecoder};
use chatmodel::client::{ModelClient, ProviderConfig, Timeouts, WireFormat};
use chatmodel::{ModelMessage, ModelRequest, StreamPart, ToolDefinition, openai};
use futures_util::StreamExt as _;
use serde_json::json;

/// A short Anthropic Messages stream, as (event, data) pairs.
const RECORDED: &[(&str, &str)] = &[
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_01","usage":{"input_tokens":12,"output_tokens":1}}}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello!"}}"#,
    ),
    (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
    ),
    ("message_stop", r#"{"type":"message_stop"}"#),
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // 1. One neutral request, whatever the provider.
    let request = ModelRequest {
        model: "claude-sonnet-4-5".into(),
        system: "You are terse.".into(),
        messages: vec![ModelMessage::User {
            text: "Say hello.".into(),
        }],
        tools: vec![ToolDefinition {
            name: "read_file".into(),
            description: "Read a file of the workspace.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            }),
        }],
        max_output_tokens: Some(256),
        ..ModelRequest::default()
    };

    // 2. The body each wire format would POST (pure functions).
    println!("Anthropic body: {}", anthropic::request_body(&request));
    println!("OpenAI body:    {}", openai::request_body(&request));

    // 3. Decoding: provider events in, neutral parts out.
    let mut decoder = AnthropicDecoder::default();
    for (event, data) in RECORDED {
        match decoder.decode(event, data) {
            Ok(parts) => parts.iter().for_each(|part| println!("part: {part:?}")),
            Err(err) => println!("bad event: {err}"),
        }
    }
    println!("stream complete: {}", decoder.is_complete());

    // 4. The HTTP client. 127.0.0.1:9 (discard) is closed on almost every machine, so the call
    //    fails at once; the short timeouts bound it if something does listen there.
    let config = ProviderConfig {
        format: WireFormat::Anthropic,
        base_url: "http://127.0.0.1:9".into(),
        api_key: None, // a real service passes the key; none is needed to fail
        extra_headers: vec![("x-team".into(), "example".into())],
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(2),
            ..Timeouts::default()
        },
        http2_prior_knowledge: false,
    };
    let client = match ModelClient::new(config) {
        Ok(client) => client,
        Err(err) => return println!("client configuration failed: {err}"),
    };
    match client.stream(&request).await {
        Ok(mut parts) => {
            // Only if something does answer on 127.0.0.1:9: print what it streams.
            while let Some(part) = parts.next().await {
                match part {
                    Ok(StreamPart::TextDelta(text)) => println!("text: {text}"),
                    Ok(other) => println!("part: {other:?}"),
                    Err(err) => println!("stream failed: {}", full_text(&err)),
                }
            }
        }
        Err(err) => {
            // chatmodel never retries; classify the failure and let the retry owner decide.
            let c = classify(&err, &ClassifyContext::new(SystemTime::now()));
            // `full_text` joins the error with its sources (the Display is only the top).
            println!("call failed: {}", full_text(&err));
            println!(
                "  classified: kind={} retryable={} source={}; message: {}",
                c.kind.map_or("-", ErrorKind::as_str),
                c.retryable,
                c.source.as_str(),
                c.message,
            );
        }
    }
}
