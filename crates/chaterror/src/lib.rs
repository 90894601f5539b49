//! Classify LLM provider and transport failures (spec/chaterror.md).
//!
//! [`classify`] turns any error graph — the `source()` chain and every member of a
//! [`JoinedError`] — into a [`Classification`]: a kind, whether the retry owner may try again,
//! the HTTP status, the provider, a sanitised diagnostic `detail` and a user-facing `message`
//! that never repeats the raw error. Provider clients build the typed values of this crate
//! ([`ProviderHttpError`], [`ProviderStreamError`], [`Http2StreamReset`], [`TransportTimeout`],
//! ...) so the classifier decides on structure first and falls back to text heuristics only when
//! it must, and says which it did ([`ClassificationSource`]).
//!
//! This crate is pure policy: no I/O, no clock (the caller passes `now` in
//! [`ClassifyContext`]), no logging, no randomness, no async runtime, no HTTP or gRPC library.
//! With the `wire` feature (off by default) it knows the wire types of `chatproto` (without its
//! gRPC stack), only to convert to and from `chatd.v1.ChatError`.
//!
//! ```
//! use chaterror::{ClassifyContext, ErrorKind, Provider, classify};
//! use std::time::SystemTime;
//!
//! let err = std::io::Error::other("anthropic overloaded_error");
//! let c = classify(&err, &ClassifyContext::new(SystemTime::UNIX_EPOCH));
//! assert_eq!(c.kind, Some(ErrorKind::Overloaded));
//! assert_eq!(c.provider, Some(Provider::Anthropic));
//! assert!(c.retryable);
//! assert_eq!(c.message, "Anthropic is temporarily overloaded.");
//! ```

mod classification;
mod classify;
mod codes;
mod detail;
mod extract;
mod graph;
mod kind;
#[cfg(feature = "wire")]
mod payload;
mod values;

/// A boxed, thread-safe error: what errors carry as sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub use classification::{Classification, MessageTemplate, normalize, retry_banner_text};
pub use classify::{ClassifyContext, classify, is_retryable};
pub use detail::MAX_DETAIL_CHARS;
pub use graph::{find_in_graph, full_text};
pub use kind::{
    ClassificationSource, ErrorKind, Provider, RetryAfterSource, SubReason, normalize_provider,
};
#[cfg(feature = "wire")]
pub use payload::{
    classification_from_wire, kind_from_wire, kind_to_wire, provider_from_wire, provider_to_wire,
    retry_payload, terminal_payload,
};
pub use values::{
    CancelCause, Cancelled, DeadlineExceeded, Http2ErrorCode, Http2StreamReset, JoinedError,
    Pinned, ProviderHttpError, ProviderStreamError, ProviderTransportReset, ResetOrigin,
    TimeoutPhase, TransportTimeout, with_classification,
};
