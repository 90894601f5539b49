//! OpenAI Chat Completions (and compatible servers): the request body and the chunk decoder.
//!
//! The stream is `data: <chunk JSON>` lines ending with `data: [DONE]`. Chunks carry
//! `choices[0].delta` (`content`, `tool_calls` by `index`, and — on compatible servers —
//! `reasoning_content`), `finish_reason`, and with `stream_options.include_usage` a last chunk
//! with `usage` and no choices. An error arrives as a chunk with an `error` object.

use std::collections::BTreeMap;

use chaterror::{Provider, ProviderStreamError};
use serde_json::{Value, json};

use crate::{
    AssistantPart, FinishReason, ModelError, ModelMessage, ModelRequest, StreamPart, Usage,
};

/// The JSON body of a streaming `POST /chat/completions`.
pub fn request_body(req: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system}));
    }
    for m in &req.messages {
        match m {
            ModelMessage::User { text } => messages.push(json!({"role": "user", "content": text})),
            ModelMessage::Assistant { parts } => {
                let text: String = parts
                    .iter()
                    .filter_map(|p| match p {
                        AssistantPart::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<Value> = parts
                    .iter()
                    .filter_map(|p| match p {
                        AssistantPart::ToolCall { id, name, args } => Some(json!({
                            "id": id, "type": "function", "function": {"name": name, "arguments": args}
                        })),
                        _ => None,
                    })
                    .collect();
                let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                messages.push(message);
            }
            ModelMessage::ToolResults { results } => {
                for r in results {
                    messages.push(
                        json!({"role": "tool", "tool_call_id": r.call_id, "content": r.content}),
                    );
                }
            }
        }
    }
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(max) = req.max_output_tokens {
        body["max_completion_tokens"] = json!(max);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}})
            })
            .collect();
    }
    req.apply_sampling_and_options(&mut body);
    body
}

#[derive(Debug, Default)]
struct Call {
    started: bool,
    id: String,
    name: String,
    args: String,
}

/// Turns Chat Completions chunks into neutral parts.
#[derive(Debug)]
pub struct OpenAiDecoder {
    provider: Provider,
    calls: BTreeMap<u64, Call>,
    response_id_sent: bool,
    done: bool,
}

impl OpenAiDecoder {
    /// A decoder for `provider` (`OpenAi`, or `OpenAiCompat` for compatible servers).
    pub fn new(provider: Provider) -> Self {
        Self {
            provider,
            calls: BTreeMap::new(),
            response_id_sent: false,
            done: false,
        }
    }

    /// Whether `[DONE]` arrived.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    fn invalid(&self, detail: impl Into<String>) -> ModelError {
        ModelError::InvalidEvent {
            provider: self.provider,
            event: "data".to_owned(),
            detail: detail.into(),
        }
    }

    /// Ends every open tool call, in index order.
    fn close_calls(&mut self, parts: &mut Vec<StreamPart>) {
        for (_, call) in std::mem::take(&mut self.calls) {
            let args = if call.args.trim().is_empty() {
                "{}".to_owned()
            } else {
                call.args
            };
            parts.push(StreamPart::ToolCallEnd {
                id: call.id,
                name: call.name,
                args,
            });
        }
    }

    /// Decodes one `data:` payload.
    pub fn decode(&mut self, data: &str) -> Result<Vec<StreamPart>, ModelError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| self.invalid(e.to_string()))?;
        if let Some(error) = chunk.get("error") {
            let text = |key: &str| match error.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            return Err(ModelError::Stream(ProviderStreamError {
                provider: Some(self.provider),
                error_type: text("type"),
                code: text("code"),
                message: text("message"),
                status: 0,
            }));
        }
        let mut parts = Vec::new();
        if !self.response_id_sent
            && let Some(id) = chunk
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
        {
            self.response_id_sent = true;
            parts.push(StreamPart::ResponseId(id.to_owned()));
        }
        if let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = choice.get("delta").cloned().unwrap_or_default();
            for key in ["reasoning_content", "reasoning"] {
                if let Some(text) = delta
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    parts.push(StreamPart::ReasoningDelta(text.to_owned()));
                }
            }
            if let Some(text) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                parts.push(StreamPart::TextDelta(text.to_owned()));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| self.invalid("tool call without index"))?;
                let function = call.get("function").cloned().unwrap_or_default();
                let entry = self.calls.entry(index).or_default();
                if !entry.started {
                    entry.started = true;
                    // Some compatible servers send no id: the call's index names it then, so
                    // two calls of one response never share one.
                    entry.id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map_or_else(|| format!("call_{index}"), str::to_owned);
                    entry.name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    parts.push(StreamPart::ToolCallStart {
                        id: entry.id.clone(),
                        name: entry.name.clone(),
                    });
                }
                if let Some(fragment) = function
                    .get("arguments")
                    .and_then(Value::as_str)
                    .filter(|f| !f.is_empty())
                {
                    entry.args.push_str(fragment);
                    parts.push(StreamPart::ToolCallArgsDelta {
                        id: entry.id.clone(),
                        delta: fragment.to_owned(),
                    });
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close_calls(&mut parts);
                parts.push(StreamPart::Finish(match reason {
                    "stop" => FinishReason::Stop,
                    "tool_calls" | "function_call" => FinishReason::ToolCalls,
                    "length" => FinishReason::Length,
                    "content_filter" => FinishReason::ContentFilter,
                    _ => FinishReason::Other,
                }));
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let n = |ptr: &str| usage.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
            let cached = n("/prompt_tokens_details/cached_tokens");
            parts.push(StreamPart::Usage(Usage {
                input_tokens: n("/prompt_tokens").saturating_sub(cached),
                output_tokens: n("/completion_tokens"),
                cache_write_tokens: 0,
                cache_read_tokens: cached,
                reasoning_tokens: n("/completion_tokens_details/reasoning_tokens"),
            }));
        }
        Ok(parts)
    }
}
