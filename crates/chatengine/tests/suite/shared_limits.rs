//! Rate limits shared by the chats of one provider credential: a 429 with a Retry-After on one
//! chat holds the others back (in this replica, and through the store in replicas started
//! later), visible in their retry state as `delay_source: shared_limit`.

use std::time::{Duration, Instant};

use chatd_e2e::workspaces::{Harness, eventually};
use chatstate::ChatStatus;
use chatstore::types::Chat;
use chattest::emulator::{FaultKind, FaultPoint, Match, Turn};
use uuid::Uuid;

use super::engine::{Run, config, reply, text_of};

/// The hold the provider asks for.
const HOLD: Duration = Duration::from_secs(5);

/// Chat "chat a" is rate limited once for [`HOLD`], then answered; "chat b" is answered.
fn script() -> Vec<Turn> {
    let limited = reply("never sent")
        .when(Match::LastUserTextContains("chat a".into()))
        .fault(
            FaultPoint::BeforeHeaders,
            FaultKind::Status {
                status: 429,
                headers: vec![("retry-after".into(), HOLD.as_secs().to_string())],
                body:
                    r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
                        .into(),
            },
        );
    vec![
        limited,
        reply("for a").when(Match::LastUserTextContains("chat a".into())),
        reply("for b").when(Match::LastUserTextContains("chat b".into())),
    ]
}

/// When the emulator received each request carrying `text`.
fn requests_of(run: &Run, text: &str) -> Vec<Instant> {
    run.emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().is_some_and(|t| t.contains(text)))
        .map(|r| r.received_at)
        .collect()
}

async fn limited(run: &Run, chat: Uuid) -> Chat {
    run.wait(chat, "chat a to be rate limited", |c| {
        c.retry_state
            .as_ref()
            .is_some_and(|s| s["kind"] == "rate_limit")
    })
    .await
}

/// Both chats end with their replies, each asked for once more than `a_limited` times.
async fn both_answered(run: &Run, a: Uuid, b: Uuid) {
    for (chat, text) in [(a, "for a"), (b, "for b")] {
        let done = run.settled(chat).await;
        assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
        let history = run.history(chat).await;
        assert_eq!(text_of(&history[1]), text);
    }
    assert_eq!(requests_of(run, "chat a").len(), 2);
    assert_eq!(requests_of(run, "chat b").len(), 1, "chat b was asked once");
}

/// Creates chat b while chat `a` is rate limited: it waits for that limit (saying so in its
/// retry state) and calls the provider only after it ended; both chats are answered.
async fn chat_b_waits_for_the_limit_of_chat(run: &Run, a: Uuid) {
    let b = run.chat("chat b").await;
    let waiting = run
        .wait(b, "chat b to wait for the shared limit", |c| {
            c.retry_state.is_some()
        })
        .await;
    let state = waiting.retry_state.as_ref().unwrap();
    assert_eq!(state["delay_source"], "shared_limit", "{state}");
    assert_eq!(state["kind"], "rate_limit", "{state}");
    assert_eq!(state["status_code"], 429, "{state}");
    assert_eq!(state["retry_status"], "retrying", "{state}");
    assert_eq!(state["attempt"], 0, "{state}");
    both_answered(run, a, b).await;
    // Chat b's one call went after the hold, which started when chat a's call was refused.
    let held = requests_of(run, "chat b")[0] - requests_of(run, "chat a")[0];
    assert!(held >= HOLD, "chat b called {held:?} after chat a's limit");
}

#[tokio::test]
async fn a_rate_limit_on_one_chat_holds_back_the_other_chats_of_its_credential_until_it_ends() {
    let run = Run::new(Harness::bare().await, script()).await;
    let engine = run.engine().await;
    let a = run.chat("chat a").await;
    limited(&run, a).await;
    chat_b_waits_for_the_limit_of_chat(&run, a).await;
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn with_shared_limits_off_a_chat_waits_only_for_its_own_limit() {
    let run = Run::new(Harness::bare().await, script()).await;
    let engine = run
        .engine_with(chatengine::EngineConfig {
            shared_rate_limits: false,
            ..config()
        })
        .await;
    let a = run.chat("chat a").await;
    limited(&run, a).await;
    let b = run.chat("chat b").await;
    let done = run.settled(b).await;
    assert_eq!(done.status, ChatStatus::Waiting, "{:?}", done.last_error);
    // Chat b was answered while chat a still waited.
    assert_eq!(requests_of(&run, "chat a").len(), 1);
    both_answered(&run, a, b).await;
    engine.shutdown().await;
    run.finish().await;
}

#[tokio::test]
async fn a_hold_is_shared_through_the_store_with_a_replica_that_starts_later() {
    let run = Run::new(Harness::bare().await, script()).await;
    let first = run.engine().await;
    let a = run.chat("chat a").await;
    limited(&run, a).await;
    let holds = eventually("the hold to reach the store", || async {
        let holds = run.store.credential_holds().await.unwrap();
        (!holds.is_empty()).then_some(holds)
    })
    .await;
    assert_eq!(holds.len(), 1, "{holds:?}");
    let credential = &holds[0].credential;
    assert!(
        credential.starts_with("anthropic ") && credential.contains(&run.emulator.base_url()),
        "{credential}"
    );
    assert!(holds[0].remaining <= HOLD, "{holds:?}");
    assert_eq!(holds[0].reason["kind"], "rate_limit");
    first.shutdown().await;

    // A replica that knew nothing of the limit reads it before it takes any chat.
    let second = run.engine().await;
    chat_b_waits_for_the_limit_of_chat(&run, a).await;
    second.shutdown().await;
    run.finish().await;
}
