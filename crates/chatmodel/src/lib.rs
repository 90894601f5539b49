//! Streaming LLM clients with one neutral part stream.
//!
//! Today this crate holds the neutral request and part types, the typed failures
//! ([`ModelError`], whose sources are the values `chaterror` classifies), and the wire formats
//! of the two provider families: the Anthropic Messages API ([`anthropic`]) and OpenAI Chat
//! Completions, also for OpenAI-compatible servers ([`openai`]) — request bodies and stream
//! decoders as pure code — and the HTTP transport ([`client::ModelClient`]: one shared reqwest
//! client per provider configuration, separate connect / first-byte / inter-event timeouts,
//! HTTP/2 resets found by walking the error's sources down to `h2::Error`).
//!
//! chatmodel never retries: `chatretry` is the one retry owner. It knows no database and no gRPC.

pub mod anthropic;
pub mod client;
pub mod openai;

mod error;
mod types;

pub use error::ModelError;
pub use types::{
    AssistantPart, FinishReason, ModelMessage, ModelRequest, StreamPart, ToolDefinition,
    ToolResultBlock, Usage,
};
