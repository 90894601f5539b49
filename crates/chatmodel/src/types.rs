//! The neutral request and part stream every provider client speaks.

use serde_json::Value;

/// A model call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelRequest {
    /// Model name as the provider knows it.
    pub model: String,
    /// System prompt; empty = none.
    pub system: String,
    /// The conversation, oldest first.
    pub messages: Vec<ModelMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Most output tokens; `None` = the client's default.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Provider-specific options merged into the request body (e.g. `{"thinking": {...}}`).
    pub provider_options: Option<Value>,
    /// Ask the provider to cache the prompt's prefix. Anthropic: the system prompt and the last
    /// two messages are marked `cache_control: ephemeral`, so the next call of the same
    /// conversation reads them from the cache. Providers that cache on their own ignore it.
    pub cache_prompt: bool,
}

impl ModelRequest {
    /// Sets the fields every provider's body spells the same way: `temperature`, then the
    /// provider options, which win over anything already in `body`.
    pub(crate) fn apply_sampling_and_options(&self, body: &mut Value) {
        if let Some(temperature) = self.temperature {
            body["temperature"] = Value::from(temperature);
        }
        if let Some(Value::Object(options)) = &self.provider_options {
            for (key, value) in options {
                body[key] = value.clone();
            }
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelMessage {
    /// The user's text.
    User {
        /// The text.
        text: String,
    },
    /// An earlier model reply.
    Assistant {
        /// Its parts, in order.
        parts: Vec<AssistantPart>,
    },
    /// Results of the previous reply's tool calls.
    ToolResults {
        /// The results.
        results: Vec<ToolResultBlock>,
    },
}

/// A part of an assistant message in the history.
#[derive(Debug, Clone, PartialEq)]
pub enum AssistantPart {
    /// Text.
    Text(String),
    /// Reasoning, with the provider's signature when it gave one (Anthropic requires it back).
    Reasoning {
        /// The reasoning text.
        text: String,
        /// The signature.
        signature: Option<String>,
    },
    /// A tool call.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as JSON text.
        args: String,
    },
}

/// A tool call's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResultBlock {
    /// The call answered.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The content (JSON text, or the error text for an error result).
    pub content: String,
    /// The tool failed.
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: Value,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end (or a stop sequence).
    Stop,
    /// It called tools.
    ToolCalls,
    /// It hit the output token limit.
    Length,
    /// The provider filtered the output.
    ContentFilter,
    /// Anything else the provider reported.
    Other,
}

/// Token usage of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens (not counting cache reads and writes).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Prompt tokens written to the cache.
    pub cache_write_tokens: u64,
    /// Prompt tokens read from the cache.
    pub cache_read_tokens: u64,
    /// Reasoning tokens (included in the output where the provider counts them so).
    pub reasoning_tokens: u64,
}

/// One item of the neutral part stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamPart {
    /// The provider's response id.
    ResponseId(String),
    /// Text to append.
    TextDelta(String),
    /// Reasoning to append.
    ReasoningDelta(String),
    /// The reasoning block's signature (Anthropic).
    ReasoningSignature(String),
    /// A tool call begins.
    ToolCallStart {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// The next fragment of a tool call's JSON arguments.
    ToolCallArgsDelta {
        /// Call id.
        id: String,
        /// The fragment.
        delta: String,
    },
    /// A tool call is complete.
    ToolCallEnd {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// The complete arguments as JSON text.
        args: String,
    },
    /// Usage so far (the last one wins).
    Usage(Usage),
    /// The model finished.
    Finish(FinishReason),
}
