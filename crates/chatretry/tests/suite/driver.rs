//! The in-process driver, spec/chatretry.md §10 rows 1–12, plus typed events (§11.4).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chaterror::{BoxError, Cancelled, ErrorKind, ProviderHttpError};
use chatretry::{
    CancelCause, CancelToken, DelaySource, FixedRng, Jitter, Retrier, RetryError, RetryEvent,
    RetryPolicy,
};
use tokio::time::Instant;

fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn retrier() -> Retrier {
    Retrier::new(RetryPolicy::reference())
        .with_rng(FixedRng::new([0.0]))
        .with_wall_clock(wall)
}

fn text(s: &str) -> BoxError {
    s.into()
}

#[derive(Debug)]
struct Prefixed(&'static str, BoxError);
impl std::fmt::Display for Prefixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}
impl std::error::Error for Prefixed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.1.as_ref())
    }
}

/// Runs the driver with an op that returns the scripted results in turn (then succeeds), and
/// records calls and events.
async fn drive(
    token: &CancelToken,
    mut r: Retrier,
    script: Vec<Box<dyn Fn() -> BoxError + Send>>,
) -> (Result<u32, RetryError>, usize, Vec<RetryEvent>) {
    let calls = Arc::new(Mutex::new(0usize));
    let mut events = Vec::new();
    let result = r
        .run(
            token,
            |_attempt| {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                let outcome = script.get(n - 1).map(|make| make());
                async move {
                    match outcome {
                        Some(err) => Err(err),
                        None => Ok(n as u32),
                    }
                }
            },
            |e| events.push(e.clone()),
        )
        .await;
    let calls = *calls.lock().unwrap();
    (result, calls, events)
}

fn always(n: usize, make: fn() -> BoxError) -> Vec<Box<dyn Fn() -> BoxError + Send>> {
    (0..n)
        .map(|_| Box::new(make) as Box<dyn Fn() -> BoxError + Send>)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn row01_success_at_once() {
    let (result, calls, events) = drive(&CancelToken::new(), retrier(), vec![]).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(calls, 1);
    assert!(events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn row02_retryable_failure_then_success() {
    let started = Instant::now();
    let (result, calls, events) = drive(
        &CancelToken::new(),
        retrier(),
        always(1, || text("status 503")),
    )
    .await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(calls, 2);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].attempt, events[0].delay),
        (1, Duration::from_secs(1))
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the driver slept exactly the delay"
    );
}

#[tokio::test(start_paused = true)]
async fn row03_non_retryable_failure_is_terminal() {
    let (result, calls, events) = drive(
        &CancelToken::new(),
        retrier(),
        always(1, || text("status 401")),
    )
    .await;
    match result.unwrap_err() {
        RetryError::Terminal {
            classification,
            error,
        } => {
            assert_eq!(classification.kind, Some(ErrorKind::Auth));
            assert_eq!(error.to_string(), "status 401");
        }
        other => panic!("expected Terminal, got {other:?}"),
    }
    assert_eq!(calls, 1);
    assert!(events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn row04_always_503_exhausts_after_25_calls() {
    let started = Instant::now();
    let (result, calls, events) = drive(
        &CancelToken::new(),
        retrier(),
        always(100, || text("status 503")),
    )
    .await;
    assert_eq!(calls, 25);
    assert_eq!(
        events.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        (1..=24).collect::<Vec<_>>()
    );
    let delays: Vec<u64> = events.iter().map(|e| e.delay.as_secs()).collect();
    let mut expected = vec![1, 2, 4, 8, 16, 32];
    expected.extend([60; 18]);
    assert_eq!(delays, expected);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "max retry attempts (25) exceeded: status 503"
    );
    assert_eq!(err.classification().unwrap().kind, Some(ErrorKind::Timeout));
    assert!(matches!(err, RetryError::Exhausted { attempts: 25, .. }));
    assert_eq!(started.elapsed(), Duration::from_secs(1143));
}

#[tokio::test(start_paused = true)]
async fn row05_retry_after_3s_sets_the_first_delay() {
    let script = always(1, || {
        Box::new(ProviderHttpError::new(429, "").with_header("retry-after", "3"))
    });
    let (_, _, events) = drive(&CancelToken::new(), retrier(), script).await;
    assert_eq!(events[0].delay, Duration::from_secs(3));
    assert_eq!(events[0].delay_source, DelaySource::RetryAfterHeader);
}

#[tokio::test(start_paused = true)]
async fn row06_retry_after_500ms_is_only_a_floor() {
    let script = always(1, || {
        Box::new(ProviderHttpError::new(429, "").with_header("retry-after-ms", "500"))
    });
    let (_, _, events) = drive(&CancelToken::new(), retrier(), script).await;
    assert_eq!(events[0].delay, Duration::from_secs(1));
    assert_eq!(events[0].delay_source, DelaySource::Backoff);
}

#[tokio::test(start_paused = true)]
async fn row07_cancelled_before_the_first_call() {
    let token = CancelToken::new();
    token.cancel(CancelCause::Shutdown);
    let (result, calls, _) = drive(&token, retrier(), vec![]).await;
    assert!(matches!(
        result.unwrap_err(),
        RetryError::Cancelled(CancelCause::Shutdown)
    ));
    assert_eq!(calls, 0);
}

#[tokio::test(start_paused = true)]
async fn row08_interrupt_while_the_op_runs_is_returned_untouched() {
    let token = CancelToken::new();
    let canceller = token.clone();
    let mut events = Vec::new();
    let result: Result<(), RetryError> = retrier()
        .run(
            &token,
            |attempt| {
                let canceller = canceller.clone();
                async move {
                    canceller.cancel(CancelCause::UserInterrupt);
                    // The op notices its token and fails with whatever error it has.
                    assert!(attempt.is_cancelled());
                    Err(text("status 503"))
                }
            },
            |e| events.push(e.clone()),
        )
        .await;
    assert!(matches!(
        result.unwrap_err(),
        RetryError::Cancelled(CancelCause::UserInterrupt)
    ));
    assert!(events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn row09_cancel_during_the_backoff_returns_at_once() {
    let token = CancelToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel(CancelCause::UserInterrupt);
    });
    let started = Instant::now();
    let (result, calls, _) = drive(&token, retrier(), always(100, || text("status 503"))).await;
    assert!(matches!(
        result.unwrap_err(),
        RetryError::Cancelled(CancelCause::UserInterrupt)
    ));
    assert_eq!(calls, 1);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(300),
        "not after the 1 s delay"
    );
}

#[tokio::test(start_paused = true)]
async fn row10_bare_cancellation_with_caller_alive_is_a_transport_reset() {
    let script = always(1, || Box::new(Cancelled { cause: None }));
    let (result, calls, events) = drive(&CancelToken::new(), retrier(), script).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(calls, 2);
    assert_eq!(
        events[0].error,
        "provider transport reset: context canceled"
    );
    assert_eq!(events[0].classification.kind, Some(ErrorKind::Timeout));
}

#[tokio::test(start_paused = true)]
async fn row11_status_401_with_cancellation_stays_auth() {
    let script = always(1, || {
        Box::new(Prefixed(
            "status 401: ",
            Box::new(Cancelled { cause: None }),
        ))
    });
    let (result, _, _) = drive(&CancelToken::new(), retrier(), script).await;
    match result.unwrap_err() {
        RetryError::Terminal { classification, .. } => {
            assert_eq!(classification.kind, Some(ErrorKind::Auth))
        }
        other => panic!("expected Terminal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn row12_insufficient_quota_with_cancellation_stays_usage_limit() {
    let script = always(1, || {
        Box::new(Prefixed(
            "insufficient_quota: ",
            Box::new(Cancelled { cause: None }),
        ))
    });
    let (result, _, _) = drive(&CancelToken::new(), retrier(), script).await;
    match result.unwrap_err() {
        RetryError::Terminal {
            classification,
            error,
        } => {
            assert_eq!(classification.kind, Some(ErrorKind::UsageLimit));
            assert_eq!(
                chaterror::full_text(&error),
                "insufficient_quota: context canceled"
            );
        }
        other => panic!("expected Terminal, got {other:?}"),
    }
}

#[cfg(feature = "wire")]
#[tokio::test(start_paused = true)]
async fn retry_events_are_typed_on_the_wire() {
    let script = always(1, || {
        Box::new(
            ProviderHttpError::new(529, "")
                .with_body(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
                .with_header("request-id", "req_123"),
        )
    });
    let (_, _, events) = drive(&CancelToken::new(), retrier(), script).await;
    let wire = events[0].to_wire();
    use chatproto::chatd::v1 as w;
    assert_eq!(wire.attempt, 1);
    assert_eq!(wire.delay_ms, 1000);
    assert_eq!(wire.error, "The AI provider is temporarily overloaded.");
    assert_eq!(wire.kind(), w::ErrorKind::Overloaded);
    assert_eq!(wire.status_code, 529);
    assert_eq!(wire.retry_status(), w::RetryStatus::Retrying);
    assert_eq!(wire.delay_source(), w::RetryDelaySource::Backoff);
    assert_eq!(wire.max_attempts, 25);
    assert!(!wire.parked);
    assert_eq!(wire.provider_request_id, "req_123");
    assert_eq!(wire.retrying_at.unwrap().seconds, 1_800_000_001);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_parks_the_call() {
    let script = always(1, || {
        Box::new(ProviderHttpError::new(429, "").with_header("retry-after", "900"))
    });
    let (result, calls, events) = drive(&CancelToken::new(), retrier_with_ceiling(), script).await;
    assert_eq!(calls, 1);
    assert!(events[0].parked);
    match result.unwrap_err() {
        RetryError::Parked { resume_at, .. } => {
            assert_eq!(resume_at, wall() + Duration::from_secs(900))
        }
        other => panic!("expected Parked, got {other:?}"),
    }
}

fn retrier_with_ceiling() -> Retrier {
    Retrier::new(RetryPolicy {
        jitter: Jitter::None,
        ..RetryPolicy::default()
    })
    .with_wall_clock(wall)
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_a_failing_call() {
    let policy = RetryPolicy {
        jitter: Jitter::None,
        budget: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let r = Retrier::new(policy).with_wall_clock(wall);
    let (result, calls, _) =
        drive(&CancelToken::new(), r, always(100, || text("status 503"))).await;
    // Waits 1+2+4+8 = 15 s; the next 16 s would end after the 30 s budget.
    assert_eq!(calls, 5);
    assert!(matches!(
        result.unwrap_err(),
        RetryError::Exhausted {
            reason: chatretry::ExhaustedReason::Budget,
            ..
        }
    ));
}
