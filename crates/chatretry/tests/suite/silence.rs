//! The stream silence guard, spec/chatretry.md §10 rows 13–17.

use std::time::Duration;

use chaterror::{BoxError, ClassifyContext, ErrorKind, Provider, classify};
use chatretry::{CancelCause, CancelToken, Retrier, RetryPolicy, SilenceTimeout, guard_silence};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

fn timeout(secs: u64) -> SilenceTimeout {
    SilenceTimeout::new(Duration::from_secs(secs)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn row13_a_silent_attempt_fails_retryably_and_the_next_attempt_runs() {
    let turn = CancelToken::new();
    let mut attempts = 0;
    let result: Result<Vec<u32>, _> = Retrier::new(RetryPolicy::reference())
        .run(
            &turn,
            |attempt| {
                attempts += 1;
                let silent = attempts == 1;
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(4);
                    if !silent {
                        tx.send(Ok(1)).await.unwrap();
                        drop(tx);
                    } else {
                        // Keep the sender alive: the provider never sends anything.
                        std::mem::forget(tx);
                    }
                    let mut stream = Box::pin(guard_silence(
                        ReceiverStream::new(rx),
                        timeout(600),
                        attempt.clone(),
                        Some(Provider::OpenAi),
                    ));
                    let mut parts = Vec::new();
                    while let Some(part) = stream.next().await {
                        parts.push(part?);
                    }
                    assert_eq!(attempt.is_cancelled(), silent);
                    Ok(parts)
                }
            },
            |event| {
                assert_eq!(
                    event.classification.kind,
                    Some(ErrorKind::StreamSilenceTimeout)
                );
                assert!(event.classification.retryable);
                assert_eq!(event.classification.provider, Some(Provider::OpenAi));
                assert_eq!(
                    event.classification.message,
                    "OpenAI did not send response data in time."
                );
            },
        )
        .await;
    assert_eq!(result.unwrap(), vec![1]);
    assert_eq!(attempts, 2);
    assert!(!turn.is_cancelled(), "the turn's token stays alive");
}

#[tokio::test(start_paused = true)]
async fn row14_parts_just_inside_the_timeout_never_trip_the_guard() {
    let attempt = CancelToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(1);
    tokio::spawn(async move {
        // 3 × timeout worth of parts, each one millisecond before the guard would fire.
        for i in 0..31 {
            tokio::time::sleep(Duration::from_millis(9_999)).await;
            if tx.send(Ok(i)).await.is_err() {
                return;
            }
        }
    });
    let mut stream = Box::pin(guard_silence(
        ReceiverStream::new(rx),
        timeout(10),
        attempt.clone(),
        None,
    ));
    let mut count = 0;
    while let Some(part) = stream.next().await {
        part.unwrap();
        count += 1;
    }
    assert_eq!(count, 31);
    assert!(!attempt.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn row15_zero_disables_the_guard() {
    let attempt = CancelToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(1);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(48 * 3600)).await;
        tx.send(Ok(1)).await.unwrap();
    });
    let mut stream = Box::pin(guard_silence(
        ReceiverStream::new(rx),
        SilenceTimeout::new(Duration::ZERO).unwrap(),
        attempt.clone(),
        None,
    ));
    assert_eq!(stream.next().await.unwrap().unwrap(), 1);
    assert!(stream.next().await.is_none());
    assert!(!attempt.is_cancelled());
}

#[test]
fn row16_24h_is_accepted_and_a_second_more_rejected() {
    assert!(SilenceTimeout::new(Duration::from_secs(24 * 3600)).is_ok());
    assert_eq!(
        SilenceTimeout::new(Duration::from_secs(24 * 3600 + 1))
            .unwrap_err()
            .to_string(),
        "stream_silence_timeout must not exceed 24h"
    );
    assert_eq!(SilenceTimeout::default().get(), Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn row17_a_stream_ending_as_the_timer_fires_has_exactly_one_outcome() {
    // The stream's end and the timer become ready at the same instant; the guard settles once.
    for end_offset_ms in [0u64, 1] {
        let attempt = CancelToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10_000 - end_offset_ms)).await;
            tx.send(Ok(7)).await.unwrap();
            drop(tx);
        });
        let stream = guard_silence(ReceiverStream::new(rx), timeout(10), attempt.clone(), None);
        let items: Vec<Result<u32, BoxError>> = stream.collect().await;
        let errors = items.iter().filter(|i| i.is_err()).count();
        let parts = items.iter().filter(|i| i.is_ok()).count();
        assert!(
            (errors == 0 && parts == 1 && !attempt.is_cancelled())
                || (errors == 1
                    && parts == 0
                    && attempt.cause() == Some(CancelCause::StreamSilence)),
            "offset {end_offset_ms}: {parts} parts and {errors} errors, cancelled: {}",
            attempt.is_cancelled()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_guard_fires_once_and_never_after_the_stream_ended() {
    let attempt = CancelToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(1);
    tx.send(Ok(1)).await.unwrap();
    drop(tx);
    let mut stream = Box::pin(guard_silence(
        ReceiverStream::new(rx),
        timeout(1),
        attempt.clone(),
        None,
    ));
    assert_eq!(stream.next().await.unwrap().unwrap(), 1);
    assert!(stream.next().await.is_none());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(stream.next().await.is_none());
    assert!(!attempt.is_cancelled());

    let silent = CancelToken::new();
    let (_keep, rx) = tokio::sync::mpsc::channel::<Result<u32, BoxError>>(1);
    let mut stream = Box::pin(guard_silence(
        ReceiverStream::new(rx),
        timeout(1),
        silent.clone(),
        Some(Provider::Anthropic),
    ));
    let err = stream.next().await.unwrap().unwrap_err();
    let c = classify(
        err.as_ref(),
        &ClassifyContext::new(std::time::SystemTime::UNIX_EPOCH),
    );
    assert_eq!(c.kind, Some(ErrorKind::StreamSilenceTimeout));
    assert!(stream.next().await.is_none(), "fires exactly once");
    assert_eq!(silent.cause(), Some(CancelCause::StreamSilence));
}
