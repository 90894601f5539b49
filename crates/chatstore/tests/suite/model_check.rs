//! The model check: random transition sequences applied to the database and to
//! `chatstate::ChatModel`; after every step the database agrees with the model.

use std::collections::HashSet;

use chatstate::{ChatModel, ExecState, StepContent, Transition, TransitionError};
use chatstore::types::{Fence, MessagePart, NewMessage, Role};
use chatstore::{Change, Store, StoreError, ToolResultInput};
use proptest::prelude::*;
use uuid::Uuid;

use super::support::*;

const LOCAL_TOOL: &str = "execute";
const CLIENT_TOOL: &str = "client_tool";

/// (call id, tool name) of live tool calls without a result, from the database's history.
async fn open_calls<S: Store>(store: &S, chat: Uuid) -> Vec<(String, String)> {
    let history = store.history(chat, false).await.unwrap();
    let answered: HashSet<String> = history
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            MessagePart::ToolResult { tool_call_id, .. } => Some(tool_call_id.clone()),
            _ => None,
        })
        .collect();
    history
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            MessagePart::ToolCall {
                tool_call_id,
                tool_name,
                ..
            } if !answered.contains(tool_call_id) => {
                Some((tool_call_id.clone(), tool_name.clone()))
            }
            _ => None,
        })
        .collect()
}

fn results_for(calls: &[(String, String)]) -> NewMessage {
    NewMessage::tool(
        calls
            .iter()
            .map(|(id, name)| MessagePart::ToolResult {
                tool_call_id: id.clone(),
                tool_name: name.clone(),
                result: serde_json::json!({"ok": true}),
                is_error: false,
                provider_executed: false,
            })
            .collect(),
    )
}

/// Builds the database change for a model step; `None` when the model would find no target.
async fn change_for<S: Store>(
    store: &S,
    chat: Uuid,
    user: Uuid,
    t: Transition,
    pick: usize,
    step: StepContent,
) -> Option<Change> {
    let text = || vec![MessagePart::text("hello")];
    Some(match t {
        Transition::SendMessage(busy) => Change::SendMessage {
            message: NewMessage::user(user, text()),
            busy,
            reasoning_effort: None,
        },
        Transition::EditMessage => {
            let users: Vec<i64> = store
                .history(chat, false)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.role == Role::User)
                .map(|m| m.id)
                .collect();
            Change::EditMessage {
                message_id: *users.get(pick % users.len().max(1))?,
                replacement: NewMessage::user(user, text()),
            }
        }
        Transition::DeleteQueuedMessage | Transition::PromoteQueuedMessage => {
            let queue = store.queue(chat).await.unwrap();
            let id = queue.get(pick % queue.len().max(1))?.id;
            if t == Transition::DeleteQueuedMessage {
                Change::DeleteQueuedMessage {
                    queued_message_id: id,
                }
            } else {
                Change::PromoteQueuedMessage {
                    queued_message_id: id,
                }
            }
        }
        Transition::SetArchived(archived) => Change::SetArchived(archived),
        Transition::Interrupt => Change::Interrupt,
        Transition::CompleteRequiresAction => Change::CompleteRequiresAction {
            results: open_calls(store, chat)
                .await
                .into_iter()
                .filter(|(_, name)| name == CLIENT_TOOL)
                .map(|(id, _)| ToolResultInput {
                    tool_call_id: id,
                    output: "{\"done\": true}".into(),
                    is_error: false,
                })
                .collect(),
        },
        Transition::RequestCompaction => Change::RequestCompaction,
        Transition::ClearContext => Change::ClearContext,
        Transition::ReconcileInvalidState => Change::ReconcileInvalidState,
        Transition::Acquire => Change::Acquire {
            worker_id: Uuid::new_v4(),
            runner_id: Uuid::new_v4(),
        },
        Transition::Abandon => Change::Abandon,
        Transition::RecordGenerationAttempt => Change::RecordGenerationAttempt,
        Transition::RecordRetryState => Change::RecordRetryState {
            retry_state: serde_json::json!({"attempt": 1, "delay_ms": 1000}),
            window_restarts_at: None,
        },
        Transition::CommitStep { consume_compaction } => {
            let messages = match step {
                StepContent::Assistant {
                    local_calls,
                    dynamic_calls,
                } => {
                    let call = |name: &str| MessagePart::ToolCall {
                        tool_call_id: Uuid::new_v4().to_string(),
                        tool_name: name.to_owned(),
                        args: "{}".into(),
                        provider_executed: false,
                        provider_metadata: None,
                    };
                    let mut parts = vec![MessagePart::text("thinking aloud")];
                    parts.extend((0..local_calls).map(|_| call(LOCAL_TOOL)));
                    parts.extend((0..dynamic_calls).map(|_| call(CLIENT_TOOL)));
                    vec![NewMessage::assistant(parts)]
                }
                StepContent::LocalResults => {
                    let local: Vec<(String, String)> = open_calls(store, chat)
                        .await
                        .into_iter()
                        .filter(|(_, name)| name == LOCAL_TOOL)
                        .collect();
                    if local.is_empty() {
                        vec![NewMessage::assistant(vec![MessagePart::text("done")])]
                    } else {
                        vec![results_for(&local)]
                    }
                }
            };
            Change::CommitStep {
                messages,
                consume_compaction,
            }
        }
        Transition::EnterRequiresAction => Change::EnterRequiresAction,
        Transition::FinishInterruption => {
            let mut partial = vec![NewMessage::assistant(vec![MessagePart::text("partial")])];
            let open = open_calls(store, chat).await;
            if !open.is_empty() {
                partial.push(results_for(&open));
            }
            Change::FinishInterruption { partial }
        }
        Transition::FinishTurn => Change::FinishTurn,
        Transition::FinishError => Change::FinishError {
            error: serde_json::json!({"message": "The AI provider is temporarily overloaded."}),
        },
        Transition::CancelRequiresAction => Change::CancelRequiresAction,
        Transition::Create => return None,
    })
}

fn step() -> impl Strategy<Value = (Transition, usize, StepContent)> {
    let transition = prop::sample::select(
        Transition::ALL
            .into_iter()
            .filter(|t| *t != Transition::Create)
            .collect::<Vec<_>>(),
    );
    let content = prop_oneof![
        (0u8..3, 0u8..2).prop_map(|(local_calls, dynamic_calls)| StepContent::Assistant {
            local_calls,
            dynamic_calls
        }),
        Just(StepContent::LocalResults),
    ];
    (transition, 0usize..6, content)
}

async fn run_sequence<S: Store>(
    s: &Fixture,
    store: &S,
    steps: Vec<(Transition, usize, StepContent)>,
) -> Result<(), TestCaseError> {
    let mut model = ChatModel::default();
    model
        .apply(Transition::Create, 0, StepContent::LocalResults)
        .unwrap();
    let created = store
        .create_chat(chatstore::types::NewChat {
            content: vec![MessagePart::text("first")],
            dynamic_tools: Some(
                serde_json::json!([{"name": CLIENT_TOOL, "description": "runs on the client"}]),
            ),
            ..s.new_chat()
        })
        .await
        .unwrap();
    let chat = created.chat.id;

    for (t, pick, content) in steps {
        // Worker-side transitions only run for the current owner (with a valid fence).
        if t.is_worker_side() && t != Transition::Acquire && !model.owned {
            continue;
        }
        let Some(change) = change_for(store, chat, s.user, t, pick, content).await else {
            continue;
        };
        let current = store.chat(chat).await.unwrap();
        let fence = (t.is_worker_side() && t != Transition::Acquire).then(|| Fence {
            worker_id: current.worker_id.unwrap_or_default(),
            runner_id: current.runner_id.unwrap_or_default(),
            history_version: Some(current.history_version),
            generation_attempt: Some(current.generation_attempt),
        });
        let before = model.clone();
        let expected = model.apply(t, pick, content);
        let got = store.apply(chat, change, fence).await;
        match (&expected, &got) {
            (Ok(Some(_)), Ok(_)) => {}
            (Err(_), Err(StoreError::Transition(_) | StoreError::FenceMismatch(_))) => continue,
            (Ok(None), _) => continue,
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{t:?} from {}: model {expected:?}, database {got:?}",
                    before.state()
                )));
            }
        }
        let db = store.chat(chat).await.unwrap();
        let queue = store.queue(chat).await.unwrap();
        let state = ExecState::derive(Some(&db.status), db.archived, !queue.is_empty());
        prop_assert_eq!(state, model.state(), "state after {:?}", t);
        prop_assert_eq!(queue.len(), model.queue.len(), "queue after {:?}", t);
        prop_assert_eq!(
            db.last_error.is_some(),
            model.last_error.is_some(),
            "last_error after {:?}",
            t
        );
        prop_assert_eq!(
            db.requires_action_deadline_at.is_some(),
            model.deadline,
            "deadline after {:?}",
            t
        );
        prop_assert_eq!(
            db.compaction_requested_at.is_some(),
            model.compaction_requested,
            "compaction after {:?}",
            t
        );
        prop_assert_eq!(
            db.retry_state.is_some(),
            model.retry_state,
            "retry_state after {:?}",
            t
        );
        prop_assert_eq!(
            db.generation_attempt as u64,
            model.generation_attempt,
            "attempt after {:?}",
            t
        );
        prop_assert_eq!(
            db.worker_id.is_some(),
            model.owned,
            "ownership after {:?}",
            t
        );
        let open = open_calls(store, chat).await;
        prop_assert_eq!(
            open.len(),
            model.open_calls().len(),
            "open calls after {:?}",
            t
        );
        let users = store
            .history(chat, false)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        let model_users = model
            .history
            .iter()
            .filter(|m| m.role == chatstate::RowRole::User && !m.deleted)
            .count();
        prop_assert_eq!(users, model_users, "user messages after {:?}", t);
    }
    Ok(())
}

/// Random sequences of transitions, applied to the backend and to the model, compared after
/// every step.
pub fn the_database_follows_the_model<B: Backend>() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(B::open());
    let fixture = backend.fixture();
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = proptest::test_runner::TestRunner::new(config)
        .run(&prop::collection::vec(step(), 1..40), |steps| {
            runtime.block_on(run_sequence(&fixture, backend.store(), steps))
        });
    runtime.block_on(backend.finish());
    if let Err(err) = result {
        panic!("{err}");
    }
}

#[test]
fn transition_errors_are_typed() {
    // Compile-time check that the store reports chatstate's errors unchanged.
    let err = StoreError::from(TransitionError::MessageQueueFull { max: 20 });
    assert_eq!(err.to_string(), "message queue is full (20 messages)");
}
