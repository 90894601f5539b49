//! How a [`Change`] is applied, for every backend: one transaction that starts with the
//! lock-and-bump of `snapshot_version`, checks the fence, asks `chatstate::plan` for the effects
//! and writes them, then publishes the chat update and, for a runnable chat without a live
//! owner, the ownership hint. A backend supplies the statements ([`ChatTx`]), opens and commits
//! the transaction, and delivers what was published only if it commits.
//!
//! The version rules (spec/engine.md §7: message revisions, `history_version`,
//! `queue_version`, `retry_state_version`) are the database's: triggers in both schemas, so
//! every statement here gets them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chatstate::{ChatFacts, ChatStatus, Effect, Transition, TransitionError, plan};
use uuid::Uuid;

use crate::StoreError;
use crate::pubsub::{ChatUpdate, Notification, OwnershipHint};
use crate::store::{Applied, Change, StoreConfig, ToolResultInput};
use crate::types::{
    Chat, Fence, Message, MessagePart, NewChat, NewMessage, QueuedMessage, Role, Visibility,
};

/// The text of the hidden sentinel row that `ClearContext` inserts.
pub const CLEARED_CONTEXT_TEXT: &str = "The conversation context was cleared here. Earlier messages are no longer part of this conversation.";

/// What the lock-and-bump statement returns.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Locked {
    pub(crate) status: String,
    pub(crate) archived: bool,
    pub(crate) worker_id: Option<Uuid>,
    pub(crate) runner_id: Option<Uuid>,
    pub(crate) history_version: i64,
    pub(crate) generation_attempt: i64,
    pub(crate) dynamic_tools: Option<serde_json::Value>,
}

/// A tool call in live history that no live row answers.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct OpenCall {
    pub(crate) tool_call_id: String,
    pub(crate) tool_name: String,
}

/// A write to the chat row itself.
#[derive(Debug, Clone)]
pub(crate) enum ChatWrite<'a> {
    Status(ChatStatus),
    Archived(bool),
    UnpinIt,
    LastError(Option<&'a serde_json::Value>),
    /// The requires-action deadline, this far from now (`None` clears it).
    Deadline(Option<Duration>),
    CompactionRequested(bool),
    ClearOwnership,
    /// Sets the owner and starts the runner's lease.
    Ownership {
        worker_id: Uuid,
        runner_id: Uuid,
    },
    /// `history_version` becomes the snapshot; the attempt count starts over.
    GrantHistoryEpoch,
    IncrementGenerationAttempt,
    /// Stores the retry state (opening the retry window if it is not open) or clears it.
    RetryState(Option<&'a serde_json::Value>),
    /// Moves the start of the retry window (a parked turn resumes with a fresh window).
    RetryWindow(chrono::DateTime<chrono::Utc>),
    /// The model and effort of the turn a message starts (`None` keeps the current one).
    TurnSettings {
        model_config_id: Option<Uuid>,
        reasoning_effort: Option<&'a str>,
    },
    /// `updated_at` becomes now.
    Touch,
    /// Binds the chat to a workspace build and forgets its agent.
    Workspace {
        workspace_id: Uuid,
        build_id: Uuid,
    },
    /// Binds the chat to an agent of a build, if the chat is still on `expected_workspace_id`.
    Agent {
        expected_workspace_id: Uuid,
        build_id: Uuid,
        agent_id: Uuid,
    },
    /// Forgets the workspace, build and agent.
    Unbind,
}

/// The statements of a transition, run by a backend inside one open transaction.
#[async_trait]
pub(crate) trait ChatTx: Send {
    /// Bumps the chat's snapshot (locking its row until commit) and returns its state; `None`
    /// when there is no such chat.
    async fn lock_and_bump(&mut self, chat_id: Uuid) -> Result<Option<Locked>, StoreError>;
    /// Whether a runnable, unarchived chat has no fresh lease of its current runner.
    async fn acquirable(
        &mut self,
        chat_id: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError>;
    /// Whether the runner holds a lease fresher than `stale_after`.
    async fn lease_is_live(
        &mut self,
        chat_id: Uuid,
        runner_id: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError>;
    async fn insert_chat(&mut self, new: &NewChat) -> Result<Uuid, StoreError>;
    async fn fetch_chat(&mut self, chat_id: Uuid) -> Result<Chat, StoreError>;
    /// Writes the chat row; how many rows changed (0: no such chat, or a condition not met).
    async fn write(&mut self, chat_id: Uuid, write: ChatWrite<'_>) -> Result<u64, StoreError>;
    /// The role of a live history row of the chat.
    async fn message_role(
        &mut self,
        chat_id: Uuid,
        message_id: i64,
    ) -> Result<Option<Role>, StoreError>;
    async fn insert_message(
        &mut self,
        chat_id: Uuid,
        message: &NewMessage,
        queued_message_id: Option<i64>,
    ) -> Result<Message, StoreError>;
    /// Soft-deletes live rows from `first_id` on; returns their ids.
    async fn soft_delete_from(
        &mut self,
        chat_id: Uuid,
        first_id: i64,
    ) -> Result<Vec<i64>, StoreError>;
    /// Tool calls of live history (not provider-executed) without a live result, oldest first.
    async fn open_calls(&mut self, chat_id: Uuid) -> Result<Vec<OpenCall>, StoreError>;
    async fn queue_len(&mut self, chat_id: Uuid) -> Result<i64, StoreError>;
    async fn queued_exists(&mut self, chat_id: Uuid, id: i64) -> Result<bool, StoreError>;
    async fn queue_head(&mut self, chat_id: Uuid) -> Result<Option<QueuedMessage>, StoreError>;
    /// Appends to the queue's tail.
    async fn enqueue(
        &mut self,
        chat_id: Uuid,
        message: &NewMessage,
        reasoning_effort: Option<&str>,
    ) -> Result<QueuedMessage, StoreError>;
    /// Deletes one queued message (all of them with `None`); returns how many.
    async fn delete_queued(&mut self, chat_id: Uuid, id: Option<i64>) -> Result<u64, StoreError>;
    async fn move_queued_to_head(&mut self, chat_id: Uuid, id: i64) -> Result<(), StoreError>;
    /// Publishes a notification, delivered if and only if the transaction commits.
    async fn publish(&mut self, notification: Notification) -> Result<(), StoreError>;
}

/// The fence and the content limits of one store configuration.
pub(crate) struct Rules<'a> {
    pub(crate) config: &'a StoreConfig,
}

impl Rules<'_> {
    pub(crate) fn check_content(
        &self,
        content: &[MessagePart],
        need_text: bool,
    ) -> Result<(), StoreError> {
        if need_text && !content.iter().any(MessagePart::has_text) {
            return Err(StoreError::InvalidInput(
                "message content must contain text".into(),
            ));
        }
        let size = serde_json::to_vec(content)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.config.max_message_bytes {
            return Err(StoreError::InvalidInput(format!(
                "message content is {size} bytes; the limit is {} bytes",
                self.config.max_message_bytes
            )));
        }
        Ok(())
    }

    /// Creates a chat (N → R0) with its first user message.
    pub(crate) async fn create_chat(
        &self,
        tx: &mut impl ChatTx,
        new: &NewChat,
    ) -> Result<Applied, StoreError> {
        self.check_content(&new.content, true)?;
        let chat_id = tx.insert_chat(new).await?;
        let mut first = NewMessage::user(new.owner_id, new.content.clone());
        first.model_config_id = Some(new.model_config_id);
        let message = tx.insert_message(chat_id, &first, None).await?;
        let chat = tx.fetch_chat(chat_id).await?;
        self.notify(tx, &chat).await?;
        Ok(Applied {
            chat,
            inserted: vec![message],
            queued: None,
            deleted_message_ids: Vec::new(),
        })
    }

    /// Acquires a candidate after re-checking it under the row lock; `None` when it is no
    /// longer acquirable (the caller rolls the bump back).
    pub(crate) async fn acquire(
        &self,
        tx: &mut impl ChatTx,
        chat_id: Uuid,
        worker_id: Uuid,
        runner_id: Uuid,
    ) -> Result<Option<Chat>, StoreError> {
        if tx.lock_and_bump(chat_id).await?.is_none() {
            return Ok(None);
        }
        // A separate statement after the lock, so a lease committed by a competing acquirer
        // while this one waited is seen.
        if !tx
            .acquirable(chat_id, self.config.lease_stale_after)
            .await?
        {
            return Ok(None);
        }
        tx.write(
            chat_id,
            ChatWrite::Ownership {
                worker_id,
                runner_id,
            },
        )
        .await?;
        let chat = tx.fetch_chat(chat_id).await?;
        self.notify(tx, &chat).await?;
        Ok(Some(chat))
    }

    /// Applies one change inside the caller's transaction.
    pub(crate) async fn apply(
        &self,
        tx: &mut impl ChatTx,
        chat_id: Uuid,
        change: &Change,
        fence: Option<Fence>,
    ) -> Result<Applied, StoreError> {
        let transition = change.transition();
        // Lock the row and bump the snapshot before anything else is written.
        let Some(locked) = tx.lock_and_bump(chat_id).await? else {
            return Err(StoreError::ChatNotFound(chat_id));
        };
        if transition.is_worker_side() && transition != Transition::Acquire {
            let fence = fence.ok_or(StoreError::FenceMismatch(
                "worker-side change without a fence",
            ))?;
            // An archived chat still lets its owner go.
            check_fence(&locked, &fence, transition != Transition::Abandon)?;
        }

        // Targets first, so an unknown id is reported as such.
        let mut edit_target = None;
        match change {
            Change::EditMessage {
                message_id,
                replacement,
            } => {
                self.check_content(&replacement.content, true)?;
                match tx.message_role(chat_id, *message_id).await? {
                    None => return Err(StoreError::MessageNotFound(*message_id)),
                    Some(Role::User) => edit_target = Some(*message_id),
                    Some(_) => return Err(StoreError::MessageNotUser(*message_id)),
                }
            }
            Change::DeleteQueuedMessage { queued_message_id }
            | Change::PromoteQueuedMessage { queued_message_id }
                if !tx.queued_exists(chat_id, *queued_message_id).await? =>
            {
                return Err(StoreError::QueuedMessageNotFound(*queued_message_id));
            }
            Change::SendMessage { message, .. } => self.check_content(&message.content, true)?,
            Change::CommitStep { messages, .. } if messages.is_empty() => {
                return Err(StoreError::InvalidInput(
                    "a step commits at least one message".into(),
                ));
            }
            _ => {}
        }

        let dynamic_names = dynamic_tool_names(locked.dynamic_tools.as_ref());
        let queue_len = tx.queue_len(chat_id).await?;
        let open = tx.open_calls(chat_id).await?;
        let pending: Vec<&OpenCall> = open
            .iter()
            .filter(|c| dynamic_names.contains(&c.tool_name))
            .collect();
        let facts = ChatFacts {
            status: Some(ChatStatus::parse(&locked.status)),
            archived: locked.archived,
            queue_len: usize::try_from(queue_len).unwrap_or(usize::MAX),
            owned: locked.worker_id.is_some(),
            pending_dynamic_calls: pending.len(),
            max_queue: self.config.max_queue,
        };
        let planned = plan(&facts, transition).map_err(|err| match err {
            // A worker whose chat moved on exits quietly.
            TransitionError::TransitionNotAllowed { .. } if fence.is_some() => {
                StoreError::FenceMismatch("the chat's status changed")
            }
            other => StoreError::Transition(other),
        })?;
        if let Change::CompleteRequiresAction { results } = change {
            check_tool_results(results, &pending)?;
        }

        let mut step = Step {
            chat_id,
            change,
            dynamic_names: &dynamic_names,
            edit_target,
            inserted: Vec::new(),
            queued: None,
            deleted_message_ids: Vec::new(),
        };
        for effect in &planned.effects {
            self.effect(tx, &mut step, effect).await?;
        }

        if matches!(change, Change::FinishInterruption { .. })
            && !tx.open_calls(chat_id).await?.is_empty()
        {
            return Err(StoreError::InvalidInput(
                "a tool call is still unanswered after the partial output".into(),
            ));
        }
        let bumps_updated_at = !matches!(
            transition,
            Transition::Acquire
                | Transition::Abandon
                | Transition::RecordGenerationAttempt
                | Transition::RecordRetryState
        );
        if bumps_updated_at {
            tx.write(chat_id, ChatWrite::Touch).await?;
        }
        let applied = Applied {
            chat: tx.fetch_chat(chat_id).await?,
            inserted: step.inserted,
            queued: step.queued,
            deleted_message_ids: step.deleted_message_ids,
        };
        self.notify(tx, &applied.chat).await?;
        Ok(applied)
    }

    async fn effect(
        &self,
        tx: &mut impl ChatTx,
        step: &mut Step<'_>,
        effect: &Effect,
    ) -> Result<(), StoreError> {
        use Effect as E;
        let chat_id = step.chat_id;
        let change = step.change;
        let write = match effect {
            // Creation has its own path (`create_chat`).
            E::InsertChat => None,
            E::SetStatus(status) => Some(ChatWrite::Status(status.clone())),
            E::SetArchived(archived) => Some(ChatWrite::Archived(*archived)),
            E::ResetPinOrder => Some(ChatWrite::UnpinIt),
            E::ClearLastError => Some(ChatWrite::LastError(None)),
            E::StoreLastError => match change {
                Change::FinishError { error } => Some(ChatWrite::LastError(Some(error))),
                _ => None,
            },
            E::StoreInvalidStateError => {
                let error = serde_json::json!({ "message": chatstate::INVALID_STATE_MESSAGE });
                tx.write(chat_id, ChatWrite::LastError(Some(&error)))
                    .await?;
                None
            }
            E::ClearDeadline => Some(ChatWrite::Deadline(None)),
            E::SetDeadline => Some(ChatWrite::Deadline(Some(
                self.config.requires_action_timeout,
            ))),
            E::SetCompactionRequested => Some(ChatWrite::CompactionRequested(true)),
            E::ClearCompactionRequested => Some(ChatWrite::CompactionRequested(false)),
            E::ClearOwnership => Some(ChatWrite::ClearOwnership),
            E::SetOwnership => match change {
                Change::Acquire {
                    worker_id,
                    runner_id,
                } => Some(ChatWrite::Ownership {
                    worker_id: *worker_id,
                    runner_id: *runner_id,
                }),
                _ => None,
            },
            E::GrantHistoryEpoch => Some(ChatWrite::GrantHistoryEpoch),
            E::IncrementGenerationAttempt => Some(ChatWrite::IncrementGenerationAttempt),
            E::StoreRetryState => match change {
                Change::RecordRetryState {
                    retry_state,
                    window_restarts_at,
                } => {
                    tx.write(chat_id, ChatWrite::RetryState(Some(retry_state)))
                        .await?;
                    window_restarts_at.map(ChatWrite::RetryWindow)
                }
                _ => None,
            },
            E::ClearRetryState => Some(ChatWrite::RetryState(None)),
            E::CancelOpenToolCalls(reason) | E::CancelPendingDynamicCalls(reason) => {
                let only_dynamic = matches!(effect, E::CancelPendingDynamicCalls(_));
                let parts: Vec<MessagePart> = tx
                    .open_calls(chat_id)
                    .await?
                    .into_iter()
                    .filter(|c| !only_dynamic || step.dynamic_names.contains(&c.tool_name))
                    .map(|c| {
                        MessagePart::error_result(&c.tool_call_id, &c.tool_name, reason.text())
                    })
                    .collect();
                if !parts.is_empty() {
                    step.insert(tx, &NewMessage::tool(parts), None).await?;
                }
                None
            }
            E::InsertUserMessage => {
                if let Change::SendMessage { message, .. } = change {
                    step.insert(tx, message, None).await?;
                }
                turn_settings(change)
            }
            E::InsertReplacement => {
                if let Change::EditMessage { replacement, .. } = change {
                    step.insert(tx, replacement, None).await?;
                }
                turn_settings(change)
            }
            E::AppendToQueue => {
                if let Change::SendMessage {
                    message,
                    reasoning_effort,
                    ..
                } = change
                {
                    step.queued = Some(
                        tx.enqueue(chat_id, message, reasoning_effort.as_deref())
                            .await?,
                    );
                }
                None
            }
            E::PromoteQueueHead => {
                if let Some(head) = tx.queue_head(chat_id).await? {
                    if tx.delete_queued(chat_id, Some(head.id)).await? != 1 {
                        return Err(StoreError::QueuedMessageNotFound(head.id));
                    }
                    let mut message = NewMessage::user(head.created_by, head.content.clone());
                    message.model_config_id = head.model_config_id;
                    step.insert(tx, &message, Some(head.id)).await?;
                    head.model_config_id
                        .map(|model_config_id| ChatWrite::TurnSettings {
                            model_config_id: Some(model_config_id),
                            reasoning_effort: None,
                        })
                } else {
                    None
                }
            }
            E::MoveQueuedToHead => {
                if let Some(id) = queued_target(change) {
                    tx.move_queued_to_head(chat_id, id).await?;
                }
                None
            }
            E::DeleteQueued => {
                if let Some(id) = queued_target(change) {
                    tx.delete_queued(chat_id, Some(id)).await?;
                }
                None
            }
            E::ClearQueue => {
                tx.delete_queued(chat_id, None).await?;
                None
            }
            E::SoftDeleteFromTarget => {
                if let Some(target) = step.edit_target {
                    step.deleted_message_ids = tx.soft_delete_from(chat_id, target).await?;
                }
                None
            }
            E::InsertToolResults => {
                if let Change::CompleteRequiresAction { results } = change {
                    let names: BTreeMap<String, String> = tx
                        .open_calls(chat_id)
                        .await?
                        .into_iter()
                        .map(|c| (c.tool_call_id, c.tool_name))
                        .collect();
                    for result in results {
                        let value: serde_json::Value = serde_json::from_str(&result.output)
                            .map_err(|e| {
                                StoreError::InvalidInput(format!("tool result is not JSON: {e}"))
                            })?;
                        let part = MessagePart::ToolResult {
                            tool_call_id: result.tool_call_id.clone(),
                            tool_name: names.get(&result.tool_call_id).cloned().unwrap_or_default(),
                            result: value,
                            is_error: result.is_error,
                            provider_executed: false,
                        };
                        step.insert(tx, &NewMessage::tool(vec![part]), None).await?;
                    }
                }
                None
            }
            E::InsertPartialOutput | E::InsertStepMessages => {
                let messages = match change {
                    Change::FinishInterruption { partial } => partial.as_slice(),
                    Change::CommitStep { messages, .. } => messages.as_slice(),
                    _ => &[],
                };
                for message in messages {
                    self.check_content(&message.content, false)?;
                    step.insert(tx, message, None).await?;
                }
                None
            }
            E::InsertBoundaryTriplet => {
                for message in boundary_triplet() {
                    step.insert(tx, &message, None).await?;
                }
                None
            }
        };
        if let Some(write) = write {
            tx.write(chat_id, write).await?;
        }
        Ok(())
    }

    /// A metadata write of the workspace binding (no version bump, nothing published): the
    /// chat after it, `None` when the write's condition did not hold (a moved workspace).
    pub(crate) async fn bind(
        &self,
        tx: &mut impl ChatTx,
        chat_id: Uuid,
        write: ChatWrite<'_>,
    ) -> Result<Option<Chat>, StoreError> {
        let updated = tx.write(chat_id, write).await?;
        // Read back either way: a missing chat is an error.
        let chat = tx.fetch_chat(chat_id).await?;
        Ok((updated > 0).then_some(chat))
    }

    /// Publishes the chat update and, for a runnable chat without a live owner, the ownership
    /// hint.
    pub(crate) async fn notify(&self, tx: &mut impl ChatTx, chat: &Chat) -> Result<(), StoreError> {
        tx.publish(Notification::ChatUpdate(ChatUpdate::from_chat(chat)))
            .await?;
        let runnable = matches!(
            chat.status,
            ChatStatus::Running | ChatStatus::Interrupting | ChatStatus::RequiresAction
        ) && !chat.archived;
        if !runnable {
            return Ok(());
        }
        let live_owner = match (chat.worker_id, chat.runner_id) {
            (Some(_), Some(runner)) => {
                tx.lease_is_live(chat.id, runner, self.config.lease_stale_after)
                    .await?
            }
            _ => false,
        };
        if !live_owner {
            tx.publish(Notification::Ownership(OwnershipHint {
                chat_id: chat.id,
                snapshot_version: chat.snapshot_version,
            }))
            .await?;
        }
        Ok(())
    }
}

/// What one transition has written so far.
struct Step<'a> {
    chat_id: Uuid,
    change: &'a Change,
    dynamic_names: &'a HashSet<String>,
    edit_target: Option<i64>,
    inserted: Vec<Message>,
    queued: Option<QueuedMessage>,
    deleted_message_ids: Vec<i64>,
}

impl Step<'_> {
    async fn insert(
        &mut self,
        tx: &mut impl ChatTx,
        message: &NewMessage,
        queued_message_id: Option<i64>,
    ) -> Result<(), StoreError> {
        let inserted = tx
            .insert_message(self.chat_id, message, queued_message_id)
            .await?;
        self.inserted.push(inserted);
        Ok(())
    }
}

/// A message that starts a turn may change the chat's model and reasoning effort.
fn turn_settings(change: &Change) -> Option<ChatWrite<'_>> {
    match change {
        Change::SendMessage {
            message,
            reasoning_effort,
            ..
        } => Some(ChatWrite::TurnSettings {
            model_config_id: message.model_config_id,
            reasoning_effort: reasoning_effort.as_deref(),
        }),
        Change::EditMessage { replacement, .. } => Some(ChatWrite::TurnSettings {
            model_config_id: replacement.model_config_id,
            reasoning_effort: None,
        }),
        _ => None,
    }
}

fn queued_target(change: &Change) -> Option<i64> {
    match change {
        Change::DeleteQueuedMessage { queued_message_id }
        | Change::PromoteQueuedMessage { queued_message_id } => Some(*queued_message_id),
        _ => None,
    }
}

/// The sentinel, call and result rows that mark a cleared context.
fn boundary_triplet() -> [NewMessage; 3] {
    let call_id = format!("chat_cleared_{}", Uuid::new_v4().simple());
    let sentinel = NewMessage {
        role: Role::System,
        visibility: Visibility::Model,
        compressed: true,
        ..NewMessage::assistant(vec![MessagePart::text(CLEARED_CONTEXT_TEXT)])
    };
    let call = NewMessage {
        visibility: Visibility::User,
        ..NewMessage::assistant(vec![MessagePart::ToolCall {
            tool_call_id: call_id.clone(),
            tool_name: "chat_cleared".into(),
            args: "{}".into(),
            provider_executed: false,
            provider_metadata: None,
        }])
    };
    let result = NewMessage {
        visibility: Visibility::User,
        ..NewMessage::tool(vec![MessagePart::ToolResult {
            tool_call_id: call_id,
            tool_name: "chat_cleared".into(),
            result: serde_json::json!({"cleared": true}),
            is_error: false,
            provider_executed: false,
        }])
    };
    [sentinel, call, result]
}

fn check_fence(locked: &Locked, fence: &Fence, refuse_archived: bool) -> Result<(), StoreError> {
    if locked.worker_id != Some(fence.worker_id) {
        return Err(StoreError::FenceMismatch("another worker owns the chat"));
    }
    if locked.runner_id != Some(fence.runner_id) {
        return Err(StoreError::FenceMismatch("the chat was re-acquired"));
    }
    if refuse_archived && locked.archived {
        return Err(StoreError::FenceMismatch("the chat was archived"));
    }
    if fence
        .history_version
        .is_some_and(|h| h != locked.history_version)
    {
        return Err(StoreError::FenceMismatch("the history changed"));
    }
    if fence
        .generation_attempt
        .is_some_and(|a| a != locked.generation_attempt)
    {
        return Err(StoreError::FenceMismatch(
            "a newer generation attempt started",
        ));
    }
    Ok(())
}

fn check_tool_results(
    results: &[ToolResultInput],
    pending: &[&OpenCall],
) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    for result in results {
        if !seen.insert(result.tool_call_id.as_str()) {
            return Err(StoreError::InvalidInput(format!(
                "duplicate result for tool call {}",
                result.tool_call_id
            )));
        }
        if !pending
            .iter()
            .any(|c| c.tool_call_id == result.tool_call_id)
        {
            return Err(StoreError::InvalidInput(format!(
                "unexpected tool call id {}",
                result.tool_call_id
            )));
        }
        if serde_json::from_str::<serde_json::Value>(&result.output).is_err() {
            return Err(StoreError::InvalidInput(format!(
                "the output for tool call {} is not valid JSON",
                result.tool_call_id
            )));
        }
    }
    if let Some(missing) = pending
        .iter()
        .find(|c| !seen.contains(c.tool_call_id.as_str()))
    {
        return Err(StoreError::InvalidInput(format!(
            "missing result for tool call {}",
            missing.tool_call_id
        )));
    }
    Ok(())
}

fn dynamic_tool_names(tools: Option<&serde_json::Value>) -> HashSet<String> {
    tools
        .and_then(serde_json::Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(serde_json::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON of a value the store writes, with every NUL character (in strings and keys)
/// replaced by U+FFFD: PostgreSQL refuses NUL in `jsonb` and `text`, and what models, tools and
/// users send may hold one (`printf 'a\0b'`, `cat` of a binary file). The replacement marks
/// where the NUL was; everything else is kept.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    let value = serde_json::to_value(value).map_err(|source| StoreError::Corrupt {
        what: "value",
        source,
    })?;
    Ok(without_nul(value))
}

/// [`json`]'s replacement of NUL characters.
fn without_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let clean = |s: String| {
        if s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s
        }
    };
    match value {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (clean(k), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}
