//! Streaming LLM clients with one neutral part stream.
//!
//! The crate holds the neutral request and part types, the typed failures
//! ([`ModelError`], whose sources are the values `chaterror` classifies), and the wire formats
//! of the two provider families: the Anthropic Messages API ([`anthropic`]) and OpenAI Chat
//! Completions, also for OpenAI-compatible servers ([`openai`]) — request bodies and stream
//! decoders as pure code — and the HTTP transport ([`client::ModelClient`]: one shared reqwest
//! client per provider configuration, separate connect / first-byte / inter-event timeouts,
//! HTTP/2 resets found by walking the error's sources down to `h2::Error`).
//!
//! chatmodel never retries: `chatretry` is the one retry owner. It knows no database and no gRPC.
//!
//! ```
//! use chaterror::{ClassifyContext, ErrorKind, ProviderHttpError, classify};
//! use chatmodel::{ModelError, ModelMessage, ModelRequest, anthropic};
//! use std::time::SystemTime;
//!
//! // One neutral request; each wire format turns it into its own body.
//! let request = ModelRequest {
//!     model: "claude-sonnet-4-5".into(),
//!     messages: vec![ModelMessage::User { text: "Say hello.".into() }],
//!     ..ModelRequest::default()
//! };
//! let body = anthropic::request_body(&request);
//! assert_eq!(body["stream"], true);
//! assert_eq!(body["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
//!
//! // Failures keep chaterror's typed values as their source, so they classify precisely.
//! let err = ModelError::Http(ProviderHttpError::new(529, "529 Overloaded"));
//! let c = classify(&err, &ClassifyContext::new(SystemTime::now()));
//! assert_eq!(c.kind, Some(ErrorKind::Overloaded));
//! assert!(c.retryable);
//! ```

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
