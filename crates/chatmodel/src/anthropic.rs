//! Anthropic Messages API: the request body and the SSE decoder.
//!
//! Stream events (per Anthropic's documentation): `message_start`, `content_block_start`,
//! `content_block_delta` (`text_delta`, `thinking_delta`, `signature_delta`,
//! `input_json_delta`), `content_block_stop`, `message_delta` (stop reason, cumulative usage),
//! `message_stop`, `ping`, and `error`.

use std::collections::BTreeMap;

use chaterror::{Provider, ProviderStreamError};
use serde_json::{Value, json};

use crate::{
    AssistantPart, FinishReason, ModelError, ModelMessage, ModelRequest, StreamPart, Usage,
};

/// Output tokens when the request does not say (the Messages API requires a value).
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// The JSON body of a streaming `POST /v1/messages`.
pub fn request_body(req: &ModelRequest) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| match m {
            ModelMessage::User { text } => json!({"role": "user", "content": [{"type": "text", "text": text}]}),
            ModelMessage::Assistant { parts } => {
                let content: Vec<Value> = parts
                    .iter()
                    .map(|p| match p {
                        AssistantPart::Text(text) => json!({"type": "text", "text": text}),
                        AssistantPart::Reasoning { text, signature } => {
                            json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()})
                        }
                        AssistantPart::ToolCall { id, name, args } => json!({
                            "type": "tool_use",
                            "id": id,
                            "name": name,
                            "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
                        }),
                    })
                    .collect();
                json!({"role": "assistant", "content": content})
            }
            ModelMessage::ToolResults { results } => {
                let content: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        json!({"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error})
                    })
                    .collect();
                json!({"role": "user", "content": content})
            }
        })
        .collect();
    let mut messages = messages;
    if req.cache_prompt {
        // The last block of each of the last two messages: the prefix up to the newest one is
        // written to the cache, and the next call (one message longer) reads it back.
        for message in messages.iter_mut().rev().take(2) {
            if let Some(block) = message["content"].as_array_mut().and_then(|c| c.last_mut()) {
                block["cache_control"] = ephemeral();
            }
        }
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
        "stream": true,
    });
    if !req.system.is_empty() {
        body["system"] = if req.cache_prompt {
            json!([{"type": "text", "text": req.system, "cache_control": ephemeral()}])
        } else {
            json!(req.system)
        };
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    req.apply_sampling_and_options(&mut body);
    body
}

/// Anthropic's cache mark.
fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    ToolUse {
        id: String,
        name: String,
        args: String,
    },
    Other,
}

/// Turns Anthropic SSE events into neutral parts. Feed every event to [`decode`](Self::decode);
/// when the byte stream ends, [`is_complete`](Self::is_complete) says whether `message_stop`
/// arrived (if not, the stream was truncated).
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
    stopped: bool,
}

fn invalid(event: &str, detail: impl Into<String>) -> ModelError {
    ModelError::InvalidEvent {
        provider: Provider::Anthropic,
        event: event.to_owned(),
        detail: detail.into(),
    }
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl AnthropicDecoder {
    /// Whether `message_stop` arrived.
    pub fn is_complete(&self) -> bool {
        self.stopped
    }

    /// Decodes one event (`event:` name and `data:` payload).
    pub fn decode(&mut self, event: &str, data: &str) -> Result<Vec<StreamPart>, ModelError> {
        if event == "ping" {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(data).map_err(|e| invalid(event, e.to_string()))?;
        let kind = value.get("type").and_then(Value::as_str).unwrap_or(event);
        let mut parts = Vec::new();
        match kind {
            "message_start" => {
                let message = value
                    .get("message")
                    .ok_or_else(|| invalid(event, "missing message"))?;
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    parts.push(StreamPart::ResponseId(id.to_owned()));
                }
                if let Some(usage) = message.get("usage") {
                    self.usage.input_tokens = u64_at(usage, "input_tokens");
                    self.usage.cache_write_tokens = u64_at(usage, "cache_creation_input_tokens");
                    self.usage.cache_read_tokens = u64_at(usage, "cache_read_input_tokens");
                    self.usage.output_tokens = u64_at(usage, "output_tokens");
                }
            }
            "content_block_start" => {
                let index = value
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid(event, "missing index"))?;
                let block = value
                    .get("content_block")
                    .ok_or_else(|| invalid(event, "missing content_block"))?;
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            parts.push(StreamPart::TextDelta(text.to_owned()));
                        }
                        Block::Text
                    }
                    Some("thinking") => Block::Thinking,
                    Some("tool_use") => {
                        let id = block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let name = block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        parts.push(StreamPart::ToolCallStart {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        Block::ToolUse {
                            id,
                            name,
                            args: String::new(),
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = value
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid(event, "missing index"))?;
                let delta = value
                    .get("delta")
                    .ok_or_else(|| invalid(event, "missing delta"))?;
                let text = |key: &str| {
                    delta
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match (
                    delta.get("type").and_then(Value::as_str),
                    self.blocks.get_mut(&index),
                ) {
                    (Some("text_delta"), _) => parts.push(StreamPart::TextDelta(text("text"))),
                    (Some("thinking_delta"), _) => {
                        parts.push(StreamPart::ReasoningDelta(text("thinking")))
                    }
                    (Some("signature_delta"), _) => {
                        parts.push(StreamPart::ReasoningSignature(text("signature")))
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { id, args, .. })) => {
                        let fragment = text("partial_json");
                        args.push_str(&fragment);
                        parts.push(StreamPart::ToolCallArgsDelta {
                            id: id.clone(),
                            delta: fragment,
                        });
                    }
                    (Some("input_json_delta"), _) => {
                        return Err(invalid(event, "input_json_delta outside a tool_use block"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = value
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid(event, "missing index"))?;
                if let Some(Block::ToolUse { id, name, args }) = self.blocks.remove(&index) {
                    let args = if args.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        args
                    };
                    parts.push(StreamPart::ToolCallEnd { id, name, args });
                }
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    // Output tokens are cumulative; some servers repeat the input counts here.
                    self.usage.output_tokens =
                        u64_at(usage, "output_tokens").max(self.usage.output_tokens);
                    if usage.get("input_tokens").is_some() {
                        self.usage.input_tokens = u64_at(usage, "input_tokens");
                    }
                    parts.push(StreamPart::Usage(self.usage));
                }
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    parts.push(StreamPart::Finish(finish_reason(reason)));
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = value.get("error").cloned().unwrap_or_default();
                return Err(ModelError::Stream(ProviderStreamError {
                    provider: Some(Provider::Anthropic),
                    error_type: error
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    code: String::new(),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    status: 0,
                }));
            }
            _ => {} // new event types are ignored, as the API documentation asks
        }
        Ok(parts)
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}
