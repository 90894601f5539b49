//! The cause-carrying cancellation token (spec/chatretry.md §2.2).

use std::time::Duration;

use chatretry::{CancelCause, CancelToken};

#[test]
fn a_new_token_is_not_cancelled() {
    let token = CancelToken::new();
    assert!(!token.is_cancelled());
    assert_eq!(token.cause(), None);
}

#[test]
fn the_first_cause_wins() {
    let token = CancelToken::new();
    token.cancel(CancelCause::UserInterrupt);
    token.cancel(CancelCause::Shutdown);
    assert_eq!(token.cause(), Some(CancelCause::UserInterrupt));
}

#[test]
fn children_inherit_the_parents_cause() {
    let parent = CancelToken::new();
    let child = parent.child();
    let grandchild = child.child();
    parent.cancel(CancelCause::Shutdown);
    assert!(grandchild.is_cancelled());
    assert_eq!(grandchild.cause(), Some(CancelCause::Shutdown));
}

#[test]
fn cancelling_a_child_never_affects_the_parent() {
    let parent = CancelToken::new();
    let child = parent.child();
    child.cancel(CancelCause::StreamSilence);
    assert!(!parent.is_cancelled());
    assert_eq!(parent.cause(), None);
    assert_eq!(child.cause(), Some(CancelCause::StreamSilence));
}

#[test]
fn a_childs_own_cause_wins_over_a_later_parent_cause() {
    let parent = CancelToken::new();
    let child = parent.child();
    child.cancel(CancelCause::StreamSilence);
    parent.cancel(CancelCause::UserInterrupt);
    assert_eq!(child.cause(), Some(CancelCause::StreamSilence));
    assert_eq!(parent.cause(), Some(CancelCause::UserInterrupt));
}

#[tokio::test(start_paused = true)]
async fn cancelled_resolves_with_the_cause() {
    let token = CancelToken::new();
    let waiter = {
        let token = token.clone();
        tokio::spawn(async move { token.cancelled().await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    token.child(); // unrelated children change nothing
    token.cancel(CancelCause::TurnSuperseded);
    assert_eq!(waiter.await.unwrap(), CancelCause::TurnSuperseded);
}

#[tokio::test(start_paused = true)]
async fn run_drops_the_future_on_cancellation() {
    let token = CancelToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        canceller.cancel(CancelCause::UserInterrupt);
    });
    let result = token
        .run(tokio::time::sleep(Duration::from_secs(3600)))
        .await;
    let err = result.unwrap_err();
    assert_eq!(err.cause, Some(CancelCause::UserInterrupt));
    assert_eq!(err.to_string(), "context canceled");
}

#[tokio::test]
async fn run_returns_the_output_when_not_cancelled() {
    assert_eq!(CancelToken::new().run(async { 7 }).await.unwrap(), 7);
}

#[test]
fn cause_texts_are_the_contract() {
    assert_eq!(CancelCause::UserInterrupt.to_string(), "chat interrupted");
    assert_eq!(
        CancelCause::Shutdown.to_string(),
        "chatd server shutting down"
    );
    assert_eq!(
        CancelCause::TurnSuperseded.to_string(),
        "chat turn superseded"
    );
    assert_eq!(
        CancelCause::StreamSilence.to_string(),
        "chat stream was silent for longer than the configured timeout"
    );
    assert_eq!(
        CancelCause::ProviderReset { h2_code: None }.to_string(),
        "provider transport reset"
    );
    assert_eq!(
        CancelCause::DialTimeout.to_string(),
        "connection to the workspace agent timed out. The agent may still be reachable on the next attempt."
    );
}
