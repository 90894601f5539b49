//! Transitions against the database: typed errors for bad input, and the writes the model
//! check does not look at (texts, triplets, queue order, promotion bookkeeping).

use chatstate::{BusyBehavior, ChatStatus, TransitionError};
use chatstore::CLEARED_CONTEXT_TEXT;
use chatstore::types::{Fence, MessagePart, NewChat, NewMessage, Role, Visibility};
use chatstore::{Change, Store, StoreConfig, StoreError, ToolResultInput};
use uuid::Uuid;

use super::support::*;

/// The fixture's chat, titled "t", with a client-executed tool when `dynamic`.
fn new_chat(s: &Fixture, dynamic: bool) -> NewChat {
    NewChat {
        title: Some("t".into()),
        dynamic_tools: dynamic.then(|| serde_json::json!([{"name": "client_tool"}])),
        ..s.new_chat()
    }
}

fn send(user: Uuid, text: &str) -> Change {
    Change::SendMessage {
        message: NewMessage::user(user, vec![MessagePart::text(text)]),
        busy: BusyBehavior::Queue,
        reasoning_effort: None,
    }
}

/// A tool call part with empty arguments.
fn tool_call(id: &str, name: &str) -> MessagePart {
    MessagePart::ToolCall {
        tool_call_id: id.into(),
        tool_name: name.into(),
        args: "{}".into(),
        provider_executed: false,
        provider_metadata: None,
    }
}

/// Acquires the chat and returns a fence for its current history.
async fn own<S: Store>(store: &S, chat: Uuid) -> Fence {
    let (worker_id, runner_id) = (Uuid::new_v4(), Uuid::new_v4());
    let c = store
        .acquire(chat, worker_id, runner_id)
        .await
        .unwrap()
        .unwrap();
    Fence {
        worker_id,
        runner_id,
        history_version: Some(c.history_version),
        generation_attempt: None,
    }
}

async fn refresh<S: Store>(store: &S, chat: Uuid, fence: Fence) -> Fence {
    Fence {
        history_version: Some(store.chat(chat).await.unwrap().history_version),
        ..fence
    }
}

pub async fn create_starts_running_with_history_version_one<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let applied = store.create_chat(new_chat(&s, false)).await.unwrap();
    assert_eq!(applied.chat.status, ChatStatus::Running);
    assert_eq!(
        (applied.chat.snapshot_version, applied.chat.history_version),
        (1, 1)
    );
    assert_eq!(applied.inserted.len(), 1);
    let mut empty = new_chat(&s, false);
    empty.content = vec![MessagePart::text("  ")];
    assert!(matches!(
        store.create_chat(empty).await.unwrap_err(),
        StoreError::InvalidInput(_)
    ));
    b.finish().await;
}

pub async fn the_queue_holds_twenty_messages_in_order<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, new_chat(&s, false)).await;
    for i in 0..20 {
        let applied = store
            .apply(chat, send(s.user, &format!("q{i}")), None)
            .await
            .unwrap();
        assert!(applied.queued.is_some());
    }
    let err = store
        .apply(chat, send(s.user, "one too many"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Transition(TransitionError::MessageQueueFull { max: 20 })
        ),
        "{err}"
    );
    let queue = store.queue(chat).await.unwrap();
    assert_eq!(queue.len(), 20);
    assert_eq!(queue[0].content, vec![MessagePart::text("q0")]);

    // A deployment's own cap.
    let small = b.store_with(StoreConfig {
        max_queue: 2,
        ..StoreConfig::default()
    });
    let other = created(&small, new_chat(&s, false)).await;
    for i in 0..2 {
        small
            .apply(other, send(s.user, &format!("q{i}")), None)
            .await
            .unwrap();
    }
    let err = small
        .apply(other, send(s.user, "over the cap"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Transition(TransitionError::MessageQueueFull { max: 2 })
        ),
        "{err}"
    );

    // Promote the last to the head; delete the first.
    let last = queue[19].id;
    store
        .apply(
            chat,
            Change::PromoteQueuedMessage {
                queued_message_id: last,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.queue(chat).await.unwrap()[0].id, last);
    assert_eq!(
        store.chat(chat).await.unwrap().status,
        ChatStatus::Interrupting
    );
    let err = store
        .apply(
            chat,
            Change::DeleteQueuedMessage {
                queued_message_id: 999_999,
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::QueuedMessageNotFound(999_999)),
        "{err}"
    );
    b.finish().await;
}

pub async fn oversized_and_empty_messages_are_refused<B: Backend>(b: B) {
    let s = b.fixture();
    let config = StoreConfig {
        max_message_bytes: 1024,
        ..StoreConfig::default()
    };
    let store = b.store_with(config);
    let chat = created(&store, new_chat(&s, false)).await;
    let big = store
        .apply(chat, send(s.user, &"x".repeat(2000)), None)
        .await
        .unwrap_err();
    assert!(big.to_string().contains("the limit is 1024 bytes"), "{big}");
    let empty = store.apply(chat, send(s.user, ""), None).await.unwrap_err();
    assert!(empty.to_string().contains("must contain text"), "{empty}");
    assert!(store.queue(chat).await.unwrap().is_empty());
    b.finish().await;
}

pub async fn unknown_chats_and_messages_are_not_found<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let missing = Uuid::new_v4();
    assert!(
        matches!(store.chat(missing).await.unwrap_err(), StoreError::ChatNotFound(id) if id == missing)
    );
    assert!(matches!(
        store
            .apply(missing, Change::Interrupt, None)
            .await
            .unwrap_err(),
        StoreError::ChatNotFound(_)
    ));
    let applied = store.create_chat(new_chat(&s, false)).await.unwrap();
    let chat = applied.chat.id;
    let edit = |message_id| Change::EditMessage {
        message_id,
        replacement: NewMessage::user(s.user, vec![MessagePart::text("again")]),
    };
    assert!(matches!(
        store.apply(chat, edit(424_242), None).await.unwrap_err(),
        StoreError::MessageNotFound(_)
    ));
    let fence = own(&store, chat).await;
    let step = store
        .apply(
            chat,
            Change::CommitStep {
                messages: vec![NewMessage::assistant(vec![MessagePart::text("answer")])],
                consume_compaction: false,
            },
            Some(fence),
        )
        .await
        .unwrap();
    let assistant = step.inserted[0].id;
    assert!(matches!(
        store.apply(chat, edit(assistant), None).await.unwrap_err(),
        StoreError::MessageNotUser(_)
    ));
    b.finish().await;
}

pub async fn edit_soft_deletes_from_the_target_and_clears_the_queue<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let applied = store.create_chat(new_chat(&s, false)).await.unwrap();
    let (chat, first) = (applied.chat.id, applied.inserted[0].id);
    store
        .apply(chat, send(s.user, "queued"), None)
        .await
        .unwrap();
    let edited = store
        .apply(
            chat,
            Change::EditMessage {
                message_id: first,
                replacement: NewMessage::user(s.user, vec![MessagePart::text("better")]),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(edited.deleted_message_ids, vec![first]);
    assert!(store.queue(chat).await.unwrap().is_empty());
    let history = store.history(chat, true).await.unwrap();
    assert!(history[0].deleted);
    assert_eq!(
        history.last().unwrap().content,
        vec![MessagePart::text("better")]
    );
    assert_eq!(store.history(chat, false).await.unwrap().len(), 1);
    b.finish().await;
}

pub async fn requires_action_round_trip_and_result_validation<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = store.create_chat(new_chat(&s, true)).await.unwrap().chat.id;
    let fence = own(&store, chat).await;
    let call = |id: &str| tool_call(id, "client_tool");
    store
        .apply(
            chat,
            Change::CommitStep {
                messages: vec![NewMessage::assistant(vec![call("c1"), call("c2")])],
                consume_compaction: false,
            },
            Some(fence),
        )
        .await
        .unwrap();
    let fence = refresh(&store, chat, fence).await;
    let entered = store
        .apply(chat, Change::EnterRequiresAction, Some(fence))
        .await
        .unwrap();
    assert_eq!(entered.chat.status, ChatStatus::RequiresAction);
    assert!(entered.chat.requires_action_deadline_at.is_some());

    let result = |id: &str, output: &str| ToolResultInput {
        tool_call_id: id.into(),
        output: output.into(),
        is_error: false,
    };
    for (results, expected) in [
        (vec![result("c1", "1")], "missing result for tool call c2"),
        (
            vec![result("c1", "1"), result("c1", "1")],
            "duplicate result for tool call c1",
        ),
        (
            vec![result("c1", "1"), result("c3", "1")],
            "unexpected tool call id c3",
        ),
        (
            vec![result("c1", "1"), result("c2", "not json")],
            "is not valid JSON",
        ),
    ] {
        let err = store
            .apply(chat, Change::CompleteRequiresAction { results }, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
    let done = store
        .apply(
            chat,
            Change::CompleteRequiresAction {
                results: vec![result("c1", "{\"a\":1}"), result("c2", "2")],
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.chat.status, ChatStatus::Running);
    assert!(done.chat.requires_action_deadline_at.is_none());
    assert_eq!(done.inserted.len(), 2);
    b.finish().await;
}

pub async fn a_new_message_cancels_open_tool_calls_with_the_spec_reason<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, new_chat(&s, false)).await;
    let fence = own(&store, chat).await;
    store
        .apply(
            chat,
            Change::CommitStep {
                messages: vec![NewMessage::assistant(vec![tool_call("call-1", "execute")])],
                consume_compaction: false,
            },
            Some(fence),
        )
        .await
        .unwrap();
    let fence = refresh(&store, chat, fence).await;
    store
        .apply(chat, Change::FinishTurn, Some(fence))
        .await
        .unwrap();
    let sent = store.apply(chat, send(s.user, "next"), None).await.unwrap();
    assert_eq!(sent.inserted.len(), 2);
    assert_eq!(sent.inserted[0].role, Role::Tool);
    assert_eq!(
        sent.inserted[0].content,
        vec![MessagePart::error_result(
            "call-1",
            "execute",
            "Tool execution interrupted by new user message"
        )]
    );
    assert_eq!(sent.inserted[1].role, Role::User);
    b.finish().await;
}

pub async fn finish_interruption_refuses_to_leave_a_call_unanswered<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, new_chat(&s, false)).await;
    let fence = own(&store, chat).await;
    store.apply(chat, Change::Interrupt, None).await.unwrap();
    let partial = vec![NewMessage::assistant(vec![tool_call("c", "execute")])];
    let err = store
        .apply(chat, Change::FinishInterruption { partial }, Some(fence))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("still unanswered"), "{err}");
    assert_eq!(
        store.chat(chat).await.unwrap().status,
        ChatStatus::Interrupting,
        "nothing was written"
    );
    b.finish().await;
}

pub async fn clear_context_inserts_the_boundary_triplet<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, new_chat(&s, false)).await;
    let fence = own(&store, chat).await;
    store
        .apply(chat, Change::FinishTurn, Some(fence))
        .await
        .unwrap();
    let cleared = store.apply(chat, Change::ClearContext, None).await.unwrap();
    assert_eq!(cleared.chat.status, ChatStatus::Waiting);
    let [sentinel, call, result] = cleared.inserted.as_slice() else {
        panic!("expected three rows, got {:?}", cleared.inserted);
    };
    assert_eq!(
        (sentinel.role, sentinel.visibility, sentinel.compressed),
        (Role::System, Visibility::Model, true)
    );
    assert_eq!(
        sentinel.content,
        vec![MessagePart::text(CLEARED_CONTEXT_TEXT)]
    );
    assert_eq!(call.visibility, Visibility::User);
    assert_eq!(result.visibility, Visibility::User);
    b.finish().await;
}

pub async fn an_invalid_chat_is_reconciled_into_error<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let chat = created(&store, new_chat(&s, false)).await;
    b.force_status(chat, "paused").await;
    let err = store
        .apply(chat, send(s.user, "hi"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Transition(TransitionError::InvalidState)),
        "{err}"
    );
    let fixed = store
        .apply(chat, Change::ReconcileInvalidState, None)
        .await
        .unwrap();
    assert_eq!(fixed.chat.status, ChatStatus::Error);
    assert_eq!(
        fixed.chat.last_error,
        Some(
            serde_json::json!({"message": "chat was in an invalid state; send a new message or edit history to continue"})
        )
    );
    b.finish().await;
}

pub async fn a_snapshot_reads_chat_history_and_queue_consistently<B: Backend>(b: B) {
    let s = b.fixture();
    let store = b.store().clone();
    let created = store.create_chat(new_chat(&s, false)).await.unwrap();
    let (chat, first) = (created.chat.id, created.inserted[0].id);
    store
        .apply(chat, send(s.user, "queued"), None)
        .await
        .unwrap();

    let whole = store.snapshot(chat, 0).await.unwrap();
    assert_eq!(whole.history.len(), 1);
    assert_eq!(whole.queue.len(), 1);
    assert_eq!(whole.chat.queue_version, whole.chat.snapshot_version);
    let seen = whole.chat.history_version;

    let edited = store
        .apply(
            chat,
            Change::EditMessage {
                message_id: first,
                replacement: NewMessage::user(s.user, vec![MessagePart::text("better")]),
            },
            None,
        )
        .await
        .unwrap();
    // Since the last history seen: the soft-deleted original and its replacement.
    let delta = store.snapshot(chat, seen).await.unwrap();
    assert_eq!(delta.chat.history_version, edited.chat.history_version);
    let ids: Vec<(i64, bool)> = delta.history.iter().map(|m| (m.id, m.deleted)).collect();
    assert_eq!(
        ids,
        vec![(first, true), (edited.inserted.last().unwrap().id, false)]
    );
    assert!(delta.queue.is_empty(), "the edit cleared the queue");
    assert!(delta.history.iter().all(|m| m.revision > seen));
    b.finish().await;
}
