//! Builders for the notation of spec/chaterror.md §14 and one assertion helper.

#![allow(dead_code)]

use std::error::Error;
use std::fmt;
use std::time::{Duration, SystemTime};

pub use chaterror::BoxError;
use chaterror::{
    Cancelled, Classification, ClassifyContext, DeadlineExceeded, ErrorKind, Http2ErrorCode,
    Http2StreamReset, JoinedError, Provider, ProviderHttpError, ProviderTransportReset,
    ResetOrigin, classify,
};

/// A whole second, so HTTP-date arithmetic is exact.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn ctx() -> ClassifyContext {
    ClassifyContext::new(now())
}

pub fn run(err: &BoxError) -> Classification {
    classify(err.as_ref(), &ctx())
}

/// `"text"`: a plain error whose full text is `text`.
pub fn text(s: &str) -> BoxError {
    Box::new(Plain(s.to_owned()))
}

#[derive(Debug)]
struct Plain(String);
impl fmt::Display for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl Error for Plain {}

/// `"x: " + e`: Display `x: ` followed by e's text, source e.
pub fn wrap(prefix: &str, inner: BoxError) -> BoxError {
    Box::new(Wrapped {
        prefix: prefix.to_owned(),
        inner,
    })
}

#[derive(Debug)]
struct Wrapped {
    prefix: String,
    inner: BoxError,
}
impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.inner)
    }
}
impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.inner.as_ref())
    }
}

/// `PE(msg, status)`; add a body or headers with the builder methods.
pub fn pe(message: &str, status: u16) -> ProviderHttpError {
    ProviderHttpError::new(status, message)
}

pub fn boxed(err: impl Error + Send + Sync + 'static) -> BoxError {
    Box::new(err)
}

pub fn cancelled() -> BoxError {
    Box::new(Cancelled { cause: None })
}

pub fn deadline() -> BoxError {
    Box::new(DeadlineExceeded)
}

pub fn reset() -> BoxError {
    Box::new(ProviderTransportReset::new())
}

pub fn join(errors: Vec<BoxError>) -> BoxError {
    Box::new(JoinedError::new(errors))
}

pub fn code(name: &str) -> Http2ErrorCode {
    match name {
        "NO_ERROR" => Http2ErrorCode::NO_ERROR,
        "PROTOCOL_ERROR" => Http2ErrorCode::PROTOCOL_ERROR,
        "INTERNAL_ERROR" => Http2ErrorCode::INTERNAL_ERROR,
        "FLOW_CONTROL_ERROR" => Http2ErrorCode::FLOW_CONTROL_ERROR,
        "FRAME_SIZE_ERROR" => Http2ErrorCode::FRAME_SIZE_ERROR,
        "REFUSED_STREAM" => Http2ErrorCode::REFUSED_STREAM,
        "CANCEL" => Http2ErrorCode::CANCEL,
        "COMPRESSION_ERROR" => Http2ErrorCode::COMPRESSION_ERROR,
        "ENHANCE_YOUR_CALM" => Http2ErrorCode::ENHANCE_YOUR_CALM,
        other => panic!("unknown code {other}"),
    }
}

/// `H2(id, CODE, peer)`.
pub fn h2_peer(id: u32, name: &str) -> BoxError {
    Box::new(Http2StreamReset {
        stream_id: id,
        code: code(name),
        origin: ResetOrigin::Peer,
    })
}

/// `H2(id, CODE, local ["cause"])`.
pub fn h2_local(id: u32, name: &str, cause: Option<&str>) -> BoxError {
    Box::new(Http2StreamReset {
        stream_id: id,
        code: code(name),
        origin: ResetOrigin::Local {
            cause: cause.map(str::to_owned),
        },
    })
}

/// Message **A**.
pub const A: &str =
    "Authentication with the AI provider failed. Check the API key and permissions.";
/// Message **C**.
pub const C: &str = "The AI provider rejected the model configuration. Check the selected model and provider settings.";

/// Message **U(x)**.
pub fn u(subject: &str) -> String {
    format!(
        "The usage quota for {subject} has been exceeded. Check the billing and quota settings for the provider account."
    )
}

pub const UNAVAILABLE: &str = "The AI provider is temporarily unavailable.";
pub const RATE_LIMITING: &str = "The AI provider is rate limiting requests.";
pub const FAILED_UNEXPECTEDLY: &str = "The chat request failed unexpectedly.";
pub const UNEXPECTED: &str = "The AI provider returned an unexpected error.";
pub const CANCELED: &str = "The request was canceled before it completed.";

/// Asserts the columns of a table row: kind, retryable, status, provider, detail, message.
#[track_caller]
pub fn check(
    c: &Classification,
    kind: ErrorKind,
    retryable: bool,
    status: u16,
    provider: Option<Provider>,
    detail: &str,
    message: &str,
) {
    assert_eq!(c.kind, Some(kind), "kind of {c:#?}");
    assert_eq!(c.retryable, retryable, "retryable of {c:#?}");
    assert_eq!(c.status_code, status, "status of {c:#?}");
    assert_eq!(c.provider, provider, "provider of {c:#?}");
    assert_eq!(c.detail, detail, "detail of {c:#?}");
    assert_eq!(c.message, message, "message of {c:#?}");
}

/// One test per row: `name: input => Kind, retryable, status, provider, detail, message;`.
/// Each row is also classified twice and must give identical results (spec §15).
#[macro_export]
macro_rules! rows {
    ($($name:ident: $input:expr => $kind:ident, $retry:expr, $status:expr, $provider:expr, $detail:expr, $message:expr;)*) => {$(
        #[test]
        fn $name() {
            let input: chaterror::BoxError = $input;
            let c = $crate::support::run(&input);
            $crate::support::check(
                &c,
                chaterror::ErrorKind::$kind,
                $retry,
                $status,
                $provider,
                &$detail,
                &$message,
            );
            assert_eq!(c, $crate::support::run(&input), "classification must be deterministic");
        }
    )*};
}
