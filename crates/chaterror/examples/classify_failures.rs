//! Classify failures the way a service's model client would, then decide what to do.
//!
//! The failures are built from chaterror's typed values (what a provider client returns), a
//! service's own wrapper error and plain `std::io::Error`s. Nothing here does I/O.
//!
//! Run with `cargo run -p chaterror --example classify_failures`.

#![allow(clippy::print_stdout)] // an example reports on stdout

use std::error::Error;
use std::fmt;
use std::time::SystemTime;

use chaterror::{
    BoxError, ClassifyContext, ErrorKind, Provider, ProviderHttpError, ProviderStreamError,
    TimeoutPhase, TransportTimeout, classify,
};

/// A service's own error that keeps the provider failure as its `source()`: the classifier
/// walks the chain, so wrapping loses nothing.
#[derive(Debug)]
struct CallFailed {
    source: BoxError,
}

impl fmt::Display for CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("model call failed")
    }
}

impl Error for CallFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

fn main() {
    let failures: Vec<(&str, BoxError)> = vec![
        (
            "HTTP 429 with Retry-After",
            Box::new(
                ProviderHttpError::new(429, "429 Too Many Requests")
                    .with_header("retry-after", "2")
                    .with_header("request-id", "req_123"),
            ),
        ),
        (
            "HTTP 401 with an Anthropic body",
            Box::new(ProviderHttpError::new(401, "401 Unauthorized").with_body(
                br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#
                    .to_vec(),
            )),
        ),
        (
            "error event inside a 200 stream",
            Box::new(ProviderStreamError {
                provider: Some(Provider::Anthropic),
                error_type: "overloaded_error".into(),
                message: "Overloaded".into(),
                ..ProviderStreamError::default()
            }),
        ),
        (
            "connect timeout",
            Box::new(TransportTimeout {
                phase: TimeoutPhase::Connect,
            }),
        ),
        (
            "HTTP 503 wrapped in the service's own error",
            Box::new(CallFailed {
                source: Box::new(ProviderHttpError::new(503, "503 Service Unavailable")),
            }),
        ),
        (
            "plain io::Error (connection refused)",
            Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
        ),
        (
            "plain io::Error (untyped text)",
            Box::new(std::io::Error::other(
                "openai: This model's maximum context length is 128000 tokens",
            )),
        ),
    ];

    // `classify` never reads the clock: the caller passes `now` (used for HTTP-date Retry-After).
    let ctx = ClassifyContext::new(SystemTime::now());
    for (label, err) in &failures {
        let c = classify(err.as_ref(), &ctx);
        println!("{label}");
        println!(
            "  kind={} retryable={} status={} provider={} source={}",
            c.kind.map_or("-", ErrorKind::as_str),
            c.retryable,
            c.status_code,
            c.provider.map_or("-", Provider::as_str),
            c.source.as_str(),
        );
        if let Some(sub) = c.sub_reason {
            println!("  sub_reason={}", sub.as_str());
        }
        println!("  message: {}", c.message);
        if !c.detail.is_empty() {
            println!("  detail:  {}", c.detail);
        }
        // chaterror only decides *whether* a retry may happen; the wait and the attempt count
        // belong to the retry owner (chatretry in chatd).
        let decision = if !c.retryable {
            "give up and show the message".to_owned()
        } else if c.retry_after.is_zero() {
            "retry after the back-off schedule".to_owned()
        } else {
            format!(
                "retry, honouring the provider's hint of {:?}",
                c.retry_after
            )
        };
        println!("  -> {decision}");
    }

    // A typed HTTP error does not name its provider; a client that knows it says so, and the
    // user-facing message follows.
    let err = ProviderHttpError::new(529, "529 Overloaded");
    let c = classify(&err, &ctx).with_provider("anthropic");
    println!("HTTP 529 from a client that knows it talks to Anthropic");
    println!("  message: {}", c.message);
}
