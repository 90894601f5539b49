//! The gRPC server's transport limits as clients see them: a request larger than a service
//! decodes answers RESOURCE_EXHAUSTED, as gRPC's conventions have it (tonic says OUT_OF_RANGE),
//! with the limit in the message; a call whose handler takes longer than the request timeout
//! answers DEADLINE_EXCEEDED.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::TryFutureExt as _;
use futures_util::future::MapOk;
use http::HeaderValue;

/// The start of tonic's message for a request over the decoding limit, percent-encoded as it
/// travels in `grpc-message`.
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// `grpc-status` of OUT_OF_RANGE and RESOURCE_EXHAUSTED.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The layer of [`OversizedRequests`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OversizedRequestsLayer;

impl<S> tower::Layer<S> for OversizedRequestsLayer {
    type Service = OversizedRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OversizedRequests(inner)
    }
}

/// Rewrites the status of a request refused for its size; everything else passes untouched.
#[derive(Debug, Clone)]
pub(crate) struct OversizedRequests<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for OversizedRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<R>) -> http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.0
            .call(request)
            .map_ok(resource_exhausted_when_too_large)
    }
}

/// The layer of [`HandlerTimeout`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandlerTimeoutLayer(pub(crate) Duration);

impl<S> tower::Layer<S> for HandlerTimeoutLayer {
    type Service = HandlerTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandlerTimeout {
            inner,
            limit: self.0,
        }
    }
}

/// Answers DEADLINE_EXCEEDED when a handler has not produced its response within the limit.
/// A unary call's response comes when the handler is done; a streaming call's comes as soon as
/// its stream is open, so open streams are never cut by this.
#[derive(Debug, Clone)]
pub(crate) struct HandlerTimeout<S> {
    inner: S,
    limit: Duration,
}

type Answer<E> = Result<http::Response<tonic::body::Body>, E>;

impl<S, B> tower::Service<http::Request<B>> for HandlerTimeout<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the server did not answer within {} s",
                    limit.as_secs()
                ))
                .into_http()),
            }
        })
    }
}

/// A response that refuses a request for its size, as RESOURCE_EXHAUSTED.
fn resource_exhausted_when_too_large<R>(mut response: http::Response<R>) -> http::Response<R> {
    let headers = response.headers_mut();
    let refused = headers
        .get("grpc-status")
        .is_some_and(|s| s == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.starts_with(TOO_LARGE));
    if refused {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
        if let Some(message) = headers.get("grpc-message").and_then(|m| m.to_str().ok()) {
            let rest = message.trim_start_matches(TOO_LARGE);
            let clearer = format!("the%20request%20is%20too%20large{rest}");
            if let Ok(value) = HeaderValue::from_str(&clearer) {
                headers.insert("grpc-message", value);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, message: &str) -> http::Response<()> {
        let mut response = http::Response::new(());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_str(status).unwrap());
        response
            .headers_mut()
            .insert("grpc-message", HeaderValue::from_str(message).unwrap());
        response
    }

    #[tokio::test]
    async fn a_handler_that_never_answers_is_a_deadline_exceeded() {
        use tower::{Layer as _, Service as _};
        let never = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<
                Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            >()
        });
        let mut service = HandlerTimeoutLayer(Duration::from_millis(20)).layer(never);
        let answer = service.call(http::Request::new(())).await.unwrap();
        assert_eq!(answer.headers()["grpc-status"], "4");
        let quick = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut service = HandlerTimeoutLayer(Duration::from_secs(5)).layer(quick);
        let answer = service.call(http::Request::new(())).await.unwrap();
        assert!(answer.headers().get("grpc-status").is_none());
    }

    #[test]
    fn only_a_refused_size_becomes_resource_exhausted() {
        let too_large = format!("{TOO_LARGE}:%20found%203000000%20bytes");
        let mapped = resource_exhausted_when_too_large(response(OUT_OF_RANGE, &too_large));
        assert_eq!(mapped.headers()["grpc-status"], RESOURCE_EXHAUSTED);
        assert_eq!(
            mapped.headers()["grpc-message"],
            "the%20request%20is%20too%20large:%20found%203000000%20bytes"
        );
        let other = resource_exhausted_when_too_large(response(OUT_OF_RANGE, "page%20past%20end"));
        assert_eq!(other.headers()["grpc-status"], OUT_OF_RANGE);
        let ok = resource_exhausted_when_too_large(response("0", ""));
        assert_eq!(ok.headers()["grpc-status"], "0");
    }
}
