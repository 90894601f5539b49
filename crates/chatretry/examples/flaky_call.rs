//! Drive a flaky model call with chatretry the way a service would: retry what is retryable,
//! stop on what is not, honour a caller's cancellation cause, and bound a silent stream.
//!
//! Everything is in process and fake; the waits are shortened by a small `RetryPolicy`, so the
//! example finishes in well under a second.
//!
//! Run with `cargo run -p chatretry --example flaky_call`.

#![allow(clippy::print_stdout, clippy::expect_used)] // an example reports on stdout

use std::pin::pin;
use std::time::Duration;

use chaterror::{BoxError, ClassifyContext, ErrorKind, Provider, ProviderHttpError, classify};
use chatretry::{
    CancelCause, CancelToken, Jitter, RetryError, RetryEvent, RetryPolicy, SilenceTimeout,
    guard_silence, retry,
};
use tokio_stream::StreamExt as _;

/// A fake provider call: HTTP 503, then HTTP 429 asking for 120 ms, then an answer.
async fn flaky_call(call: u32) -> Result<String, BoxError> {
    match call {
        1 => Err(Box::new(ProviderHttpError::new(
            503,
            "503 Service Unavailable",
        ))),
        2 => Err(Box::new(
            ProviderHttpError::new(429, "429 Too Many Requests")
                .with_header("retry-after-ms", "120")
                .with_header("request-id", "req_42"),
        )),
        _ => Ok("Hello from the model".to_owned()),
    }
}

/// Prints a retry event as a chat UI's retry banner would use it.
fn report(event: &RetryEvent) {
    println!(
        "  retry: attempt {}/{} failed ({}: {}), next in {:?} ({}), request id {}",
        event.attempt,
        event.max_attempts,
        event.classification.kind.map_or("-", ErrorKind::as_str),
        event.error,
        event.delay,
        event.delay_source.as_str(),
        event.provider_request_id.as_deref().unwrap_or("-"),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The defaults are chatd's (1 s doubling to 60 s, 25 attempts, 30 min budget); shorten them
    // for the example. No jitter, so the printed delays are exact.
    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        max_attempts: 5,
        jitter: Jitter::None,
        budget: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    policy.validate().expect("a valid policy");

    // 1. Two retryable failures, then success.
    println!("flaky call:");
    let turn = CancelToken::new();
    let mut calls = 0;
    let answer = retry(
        &turn,
        &policy,
        |_attempt: CancelToken| {
            calls += 1;
            flaky_call(calls)
        },
        report,
    )
    .await;
    match answer {
        Ok(text) => println!("  ok after {calls} calls: {text:?}"),
        Err(err) => println!("  failed: {err}"),
    }

    // 2. A failure that is not retryable ends the loop at once, classified.
    println!("bad API key:");
    let result = retry(
        &turn,
        &policy,
        |_attempt: CancelToken| async {
            Err::<String, BoxError>(Box::new(ProviderHttpError::new(401, "401 Unauthorized")))
        },
        report,
    )
    .await;
    if let Err(RetryError::Terminal { classification, .. }) = &result {
        println!("  terminal: {}", classification.message);
    }

    // 3. The user presses Stop during an attempt: the cause comes back untouched, never
    //    classified as a provider failure.
    println!("user interrupt:");
    let turn = CancelToken::new();
    let result = retry(
        &turn,
        &policy,
        |attempt: CancelToken| {
            turn.cancel(CancelCause::UserInterrupt);
            async move {
                // The attempt's token is a child of the turn's: it sees the cancellation.
                let cause = attempt.cancelled().await;
                Err::<String, BoxError>(Box::new(chaterror::Cancelled { cause: Some(cause) }))
            }
        },
        report,
    )
    .await;
    if let Err(RetryError::Cancelled(cause)) = result {
        println!("  cancelled: {cause}");
    }

    // 4. A provider stream that goes silent: the guard cancels the attempt and yields one
    //    retryable `stream_silence_timeout` error, which the retry loop would retry.
    println!("silent stream:");
    let attempt = CancelToken::new();
    let silent = tokio_stream::pending::<Result<String, BoxError>>();
    let timeout = SilenceTimeout::new(Duration::from_millis(100)).expect("at most 24 h");
    let mut guarded = pin!(guard_silence(
        silent,
        timeout,
        attempt.clone(),
        Some(Provider::Anthropic)
    ));
    if let Some(Err(err)) = guarded.next().await {
        let c = classify(
            err.as_ref(),
            &ClassifyContext::new(std::time::SystemTime::now()),
        );
        println!(
            "  {}: retryable={}, attempt cancelled by {:?}; message: {}",
            c.kind.map_or("-", ErrorKind::as_str),
            c.retryable,
            attempt.cause(),
            c.message,
        );
    }
}
