//! `PgStore`: the [`Store`] on PostgreSQL. Every transition is one transaction that starts with
//! the lock-and-bump statement, checks the fence, asks `chatstate` for the plan and applies its
//! effects; notifications are sent with `pg_notify` inside the transaction, so PostgreSQL
//! delivers them on commit and drops them on rollback.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chatstate::{ChatFacts, ChatStatus, Effect, Transition, TransitionError, plan};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use crate::pubsub::{ChatUpdate, OWNERSHIP_CHANNEL, UPDATE_CHANNEL};
use crate::sql::like_escape;
use crate::store::{
    Applied, Change, ChatListQuery, ChatMetadata, ChatSnapshot, MessagePage, Store, StoreConfig,
    ToolResultInput,
};
use crate::types::{
    Chat, Fence, Message, MessagePart, NewChat, NewMessage, QueuedMessage, Role, ToolExecution,
    ToolExecutionState, Usage, Visibility,
};

/// The chat columns every read selects (a macro, so queries stay `&'static str`).
macro_rules! chat_columns {
    () => {
        "id, organization_id, owner_id, workspace_id, build_id, agent_id, title, labels, pin_order,
    dynamic_tools, system_prompt, last_model_config_id, last_reasoning_effort, status::text AS status, archived,
    last_error, requires_action_deadline_at, compaction_requested_at, retry_state, retry_window_started_at,
    worker_id, runner_id, snapshot_version, history_version, queue_version, generation_attempt,
    retry_state_version, created_at, updated_at"
    };
}

/// The message columns every read returns.
macro_rules! message_columns {
    () => {
        "id, chat_id, role, content, visibility, created_by, model_config_id, created_at,
    compressed, deleted, revision, queued_message_id, input_tokens, output_tokens, total_tokens, reasoning_tokens,
    cache_creation_tokens, cache_read_tokens, context_limit"
    };
}

/// Attempts of a transition transaction that hit a serialization failure or deadlock.
const TRANSACTION_ATTEMPTS: usize = 3;

/// The text of the hidden sentinel row that `ClearContext` inserts.
pub const CLEARED_CONTEXT_TEXT: &str = "The conversation context was cleared here. Earlier messages are no longer part of this conversation.";

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    config: StoreConfig,
}

impl PgStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: PgPool, config: StoreConfig) -> Self {
        Self { pool, config }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn stale_secs(&self) -> f64 {
        self.config.lease_stale_after.as_secs_f64()
    }

    fn check_content(&self, content: &[MessagePart], need_text: bool) -> Result<(), StoreError> {
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

    async fn apply_once(
        &self,
        chat_id: Uuid,
        change: &Change,
        fence: Option<Fence>,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let transition = change.transition();

        // Lock the row and bump the snapshot before anything else is written.
        let locked: Option<Locked> = sqlx::query_as(
            "UPDATE chats SET snapshot_version = snapshot_version + 1 WHERE id = $1
             RETURNING status::text AS status, archived, worker_id, runner_id, history_version,
                       generation_attempt, dynamic_tools",
        )
        .bind(chat_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(locked) = locked else {
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
        let mut replacement_target = None;
        match change {
            Change::EditMessage {
                message_id,
                replacement,
            } => {
                self.check_content(&replacement.content, true)?;
                let role: Option<Role> = sqlx::query_scalar(
                    "SELECT role FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted",
                )
                .bind(message_id)
                .bind(chat_id)
                .fetch_optional(&mut *conn)
                .await?;
                match role {
                    None => return Err(StoreError::MessageNotFound(*message_id)),
                    Some(Role::User) => replacement_target = Some(*message_id),
                    Some(_) => return Err(StoreError::MessageNotUser(*message_id)),
                }
            }
            Change::DeleteQueuedMessage { queued_message_id }
            | Change::PromoteQueuedMessage { queued_message_id } => {
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM chat_queued_messages WHERE id = $1 AND chat_id = $2)",
                )
                .bind(queued_message_id)
                .bind(chat_id)
                .fetch_one(&mut *conn)
                .await?;
                if !exists {
                    return Err(StoreError::QueuedMessageNotFound(*queued_message_id));
                }
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
        let queue_len: i64 =
            sqlx::query_scalar("SELECT count(*) FROM chat_queued_messages WHERE chat_id = $1")
                .bind(chat_id)
                .fetch_one(&mut *conn)
                .await?;
        let open = open_calls(conn, chat_id).await?;
        let facts = ChatFacts {
            status: Some(ChatStatus::parse(&locked.status)),
            archived: locked.archived,
            queue_len: usize::try_from(queue_len).unwrap_or(usize::MAX),
            owned: locked.worker_id.is_some(),
            pending_dynamic_calls: open
                .iter()
                .filter(|c| dynamic_names.contains(&c.tool_name))
                .count(),
        };
        let planned = plan(&facts, transition).map_err(|err| match err {
            // A worker whose chat moved on exits quietly.
            TransitionError::TransitionNotAllowed { .. } if fence.is_some() => {
                StoreError::FenceMismatch("the chat's status changed")
            }
            other => StoreError::Transition(other),
        })?;

        if let Change::CompleteRequiresAction { results } = change {
            let pending: Vec<&OpenCall> = open
                .iter()
                .filter(|c| dynamic_names.contains(&c.tool_name))
                .collect();
            check_tool_results(results, &pending)?;
        }

        let mut applied = Applied {
            chat: fetch_chat(conn, chat_id).await?,
            inserted: Vec::new(),
            queued: None,
            deleted_message_ids: Vec::new(),
        };
        let queued_id = match change {
            Change::DeleteQueuedMessage { queued_message_id }
            | Change::PromoteQueuedMessage { queued_message_id } => Some(*queued_message_id),
            _ => None,
        };

        for effect in &planned.effects {
            self.effect(
                conn,
                chat_id,
                change,
                effect,
                &dynamic_names,
                replacement_target,
                queued_id,
                &mut applied,
            )
            .await?;
        }

        if matches!(change, Change::FinishInterruption { .. })
            && !open_calls(conn, chat_id).await?.is_empty()
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
            sqlx::query("UPDATE chats SET updated_at = now() WHERE id = $1")
                .bind(chat_id)
                .execute(&mut *conn)
                .await?;
        }
        applied.chat = fetch_chat(conn, chat_id).await?;
        self.notify(conn, &applied.chat).await?;
        tx.commit().await?;
        Ok(applied)
    }

    #[allow(clippy::too_many_arguments)]
    async fn effect(
        &self,
        conn: &mut PgConnection,
        chat_id: Uuid,
        change: &Change,
        effect: &Effect,
        dynamic_names: &HashSet<String>,
        edit_target: Option<i64>,
        queued_id: Option<i64>,
        applied: &mut Applied,
    ) -> Result<(), StoreError> {
        use Effect as E;
        match effect {
            // Creation has its own path (`create_chat`).
            E::InsertChat => {}
            E::SetStatus(status) => {
                sqlx::query("UPDATE chats SET status = $2::chat_status WHERE id = $1")
                    .bind(chat_id)
                    .bind(status.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            E::SetArchived(archived) => {
                sqlx::query("UPDATE chats SET archived = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(archived)
                    .execute(&mut *conn)
                    .await?;
            }
            E::ResetPinOrder => {
                sqlx::query("UPDATE chats SET pin_order = 0 WHERE id = $1")
                    .bind(chat_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::CancelOpenToolCalls(reason) | E::CancelPendingDynamicCalls(reason) => {
                let only_dynamic = matches!(effect, E::CancelPendingDynamicCalls(_));
                let parts: Vec<MessagePart> = open_calls(conn, chat_id)
                    .await?
                    .into_iter()
                    .filter(|c| !only_dynamic || dynamic_names.contains(&c.tool_name))
                    .map(|c| {
                        MessagePart::error_result(&c.tool_call_id, &c.tool_name, reason.text())
                    })
                    .collect();
                if !parts.is_empty() {
                    let message =
                        insert_message(conn, chat_id, &NewMessage::tool(parts), None).await?;
                    applied.inserted.push(message);
                }
            }
            E::InsertUserMessage => {
                if let Change::SendMessage { message, .. } = change {
                    let message = insert_message(conn, chat_id, message, None).await?;
                    applied.inserted.push(message);
                }
                self.set_turn_settings(conn, chat_id, change).await?;
            }
            E::AppendToQueue => {
                if let Change::SendMessage {
                    message,
                    reasoning_effort,
                    ..
                } = change
                {
                    let row: QueuedRow = sqlx::query_as(
                        "INSERT INTO chat_queued_messages (chat_id, content, model_config_id, reasoning_effort, created_by)
                         VALUES ($1, $2, $3, $4, $5)
                         RETURNING id, chat_id, content, model_config_id, reasoning_effort, created_at, position, created_by",
                    )
                    .bind(chat_id)
                    .bind(json(&message.content)?)
                    .bind(message.model_config_id)
                    .bind(reasoning_effort)
                    .bind(message.created_by.unwrap_or_default())
                    .fetch_one(&mut *conn)
                    .await?;
                    applied.queued = Some(row.decode()?);
                }
            }
            E::PromoteQueueHead => {
                let head: Option<QueuedRow> = sqlx::query_as(
                    "SELECT id, chat_id, content, model_config_id, reasoning_effort, created_at, position, created_by
                       FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id LIMIT 1",
                )
                .bind(chat_id)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(head) = head {
                    let head = head.decode()?;
                    let deleted = sqlx::query("DELETE FROM chat_queued_messages WHERE id = $1")
                        .bind(head.id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if deleted != 1 {
                        return Err(StoreError::QueuedMessageNotFound(head.id));
                    }
                    let mut message = NewMessage::user(head.created_by, head.content.clone());
                    message.model_config_id = head.model_config_id;
                    let inserted = insert_message(conn, chat_id, &message, Some(head.id)).await?;
                    applied.inserted.push(inserted);
                    if let Some(model) = head.model_config_id {
                        sqlx::query("UPDATE chats SET last_model_config_id = $2 WHERE id = $1")
                            .bind(chat_id)
                            .bind(model)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            E::MoveQueuedToHead => {
                sqlx::query(
                    "UPDATE chat_queued_messages
                        SET position = (SELECT min(position) - 1 FROM chat_queued_messages WHERE chat_id = $1)
                      WHERE id = $2 AND chat_id = $1",
                )
                .bind(chat_id)
                .bind(queued_id)
                .execute(&mut *conn)
                .await?;
            }
            E::DeleteQueued => {
                sqlx::query("DELETE FROM chat_queued_messages WHERE id = $2 AND chat_id = $1")
                    .bind(chat_id)
                    .bind(queued_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::ClearQueue => {
                sqlx::query("DELETE FROM chat_queued_messages WHERE chat_id = $1")
                    .bind(chat_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::SoftDeleteFromTarget => {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE chat_messages SET deleted = true
                      WHERE chat_id = $1 AND id >= $2 AND NOT deleted RETURNING id",
                )
                .bind(chat_id)
                .bind(edit_target)
                .fetch_all(&mut *conn)
                .await?;
                applied.deleted_message_ids = ids;
            }
            E::InsertReplacement => {
                if let Change::EditMessage { replacement, .. } = change {
                    let message = insert_message(conn, chat_id, replacement, None).await?;
                    applied.inserted.push(message);
                }
                self.set_turn_settings(conn, chat_id, change).await?;
            }
            E::InsertToolResults => {
                if let Change::CompleteRequiresAction { results } = change {
                    let names: BTreeMap<String, String> = open_calls(conn, chat_id)
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
                        let message =
                            insert_message(conn, chat_id, &NewMessage::tool(vec![part]), None)
                                .await?;
                        applied.inserted.push(message);
                    }
                }
            }
            E::InsertPartialOutput | E::InsertStepMessages => {
                let messages = match change {
                    Change::FinishInterruption { partial } => partial.as_slice(),
                    Change::CommitStep { messages, .. } => messages.as_slice(),
                    _ => &[],
                };
                for message in messages {
                    self.check_content(&message.content, false)?;
                    let inserted = insert_message(conn, chat_id, message, None).await?;
                    applied.inserted.push(inserted);
                }
            }
            E::InsertBoundaryTriplet => {
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
                for message in [sentinel, call, result] {
                    let inserted = insert_message(conn, chat_id, &message, None).await?;
                    applied.inserted.push(inserted);
                }
            }
            E::ClearLastError => set_null(conn, chat_id, "last_error").await?,
            E::StoreLastError => {
                if let Change::FinishError { error } = change {
                    sqlx::query("UPDATE chats SET last_error = $2 WHERE id = $1")
                        .bind(chat_id)
                        .bind(error)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            E::StoreInvalidStateError => {
                sqlx::query("UPDATE chats SET last_error = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(serde_json::json!({ "message": chatstate::INVALID_STATE_MESSAGE }))
                    .execute(&mut *conn)
                    .await?;
            }
            E::ClearDeadline => set_null(conn, chat_id, "requires_action_deadline_at").await?,
            E::SetDeadline => {
                sqlx::query(
                    "UPDATE chats SET requires_action_deadline_at = now() + make_interval(secs => $2) WHERE id = $1",
                )
                .bind(chat_id)
                .bind(self.config.requires_action_timeout.as_secs_f64())
                .execute(&mut *conn)
                .await?;
            }
            E::SetCompactionRequested => {
                sqlx::query("UPDATE chats SET compaction_requested_at = now() WHERE id = $1")
                    .bind(chat_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::ClearCompactionRequested => {
                set_null(conn, chat_id, "compaction_requested_at").await?
            }
            E::ClearOwnership => {
                sqlx::query("UPDATE chats SET worker_id = NULL, runner_id = NULL WHERE id = $1")
                    .bind(chat_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::SetOwnership => {
                if let Change::Acquire {
                    worker_id,
                    runner_id,
                } = change
                {
                    take_ownership(conn, chat_id, *worker_id, *runner_id).await?;
                }
            }
            E::GrantHistoryEpoch => {
                sqlx::query("UPDATE chats SET history_version = snapshot_version, generation_attempt = 0 WHERE id = $1")
                    .bind(chat_id)
                    .execute(&mut *conn)
                    .await?;
            }
            E::IncrementGenerationAttempt => {
                sqlx::query(
                    "UPDATE chats SET generation_attempt = generation_attempt + 1 WHERE id = $1",
                )
                .bind(chat_id)
                .execute(&mut *conn)
                .await?;
            }
            E::StoreRetryState => {
                if let Change::RecordRetryState { retry_state } = change {
                    sqlx::query(
                        "UPDATE chats SET retry_state = $2,
                                retry_window_started_at = COALESCE(retry_window_started_at, now())
                          WHERE id = $1",
                    )
                    .bind(chat_id)
                    .bind(retry_state)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            E::ClearRetryState => set_null(conn, chat_id, "retry_state").await?,
        }
        Ok(())
    }

    /// A message that starts a turn may change the chat's model and reasoning effort.
    async fn set_turn_settings(
        &self,
        conn: &mut PgConnection,
        chat_id: Uuid,
        change: &Change,
    ) -> Result<(), StoreError> {
        let (model, effort) = match change {
            Change::SendMessage {
                message,
                reasoning_effort,
                ..
            } => (message.model_config_id, reasoning_effort.clone()),
            Change::EditMessage { replacement, .. } => (replacement.model_config_id, None),
            _ => return Ok(()),
        };
        sqlx::query(
            "UPDATE chats SET last_model_config_id = COALESCE($2, last_model_config_id),
                              last_reasoning_effort = COALESCE($3, last_reasoning_effort)
              WHERE id = $1",
        )
        .bind(chat_id)
        .bind(model)
        .bind(effort)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Sends the `chat:update` notification and, for a runnable chat without a live owner, the
    /// ownership hint. Inside the transaction: delivered on commit only.
    async fn notify(&self, conn: &mut PgConnection, chat: &Chat) -> Result<(), StoreError> {
        let update = ChatUpdate::from_chat(chat);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(UPDATE_CHANNEL)
            .bind(update.to_payload())
            .execute(&mut *conn)
            .await?;
        let runnable = matches!(
            chat.status,
            ChatStatus::Running | ChatStatus::Interrupting | ChatStatus::RequiresAction
        ) && !chat.archived;
        if runnable {
            let live_owner: bool = match (chat.worker_id, chat.runner_id) {
                (Some(_), Some(runner)) => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM chat_heartbeats
                                     WHERE chat_id = $1 AND runner_id = $2
                                       AND heartbeat_at > now() - make_interval(secs => $3))",
                    )
                    .bind(chat.id)
                    .bind(runner)
                    .bind(self.stale_secs())
                    .fetch_one(&mut *conn)
                    .await?
                }
                _ => false,
            };
            if !live_owner {
                let hint = serde_json::json!({"chat_id": chat.id, "snapshot_version": chat.snapshot_version});
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(OWNERSHIP_CHANNEL)
                    .bind(hint.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_chat(&self, new: NewChat) -> Result<Applied, StoreError> {
        self.check_content(&new.content, true)?;
        let mut tx = self.pool.begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let chat_id: Uuid = sqlx::query_scalar(
            "INSERT INTO chats (organization_id, owner_id, last_model_config_id, last_reasoning_effort, title,
                                system_prompt, workspace_id, labels, dynamic_tools, status)
             VALUES ($1, $2, $3, $4, COALESCE($5, 'New Chat'), $6, $7, $8, $9, 'running')
             RETURNING id",
        )
        .bind(new.organization_id)
        .bind(new.owner_id)
        .bind(new.model_config_id)
        .bind(&new.reasoning_effort)
        .bind(&new.title)
        .bind(&new.system_prompt)
        .bind(new.workspace_id)
        .bind(json(&new.labels)?)
        .bind(&new.dynamic_tools)
        .fetch_one(&mut *conn)
        .await?;
        let mut first = NewMessage::user(new.owner_id, new.content.clone());
        first.model_config_id = Some(new.model_config_id);
        let message = insert_message(conn, chat_id, &first, None).await?;
        let chat = fetch_chat(conn, chat_id).await?;
        self.notify(conn, &chat).await?;
        tx.commit().await?;
        Ok(Applied {
            chat,
            inserted: vec![message],
            queued: None,
            deleted_message_ids: Vec::new(),
        })
    }

    async fn chat(&self, id: Uuid) -> Result<Chat, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_chat(&mut conn, id).await
    }

    async fn history(
        &self,
        chat_id: Uuid,
        include_deleted: bool,
    ) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE chat_id = $1 AND ($2 OR NOT deleted) ORDER BY id"
        ))
        .bind(chat_id)
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MessageRow::decode).collect()
    }

    async fn queue(&self, chat_id: Uuid) -> Result<Vec<QueuedMessage>, StoreError> {
        let rows: Vec<QueuedRow> = sqlx::query_as(
            "SELECT id, chat_id, content, model_config_id, reasoning_effort, created_at, position, created_by
               FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id",
        )
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(QueuedRow::decode).collect()
    }

    async fn snapshot(
        &self,
        chat_id: Uuid,
        since_revision: i64,
    ) -> Result<ChatSnapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let chat = fetch_chat(&mut tx, chat_id).await?;
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE chat_id = $1 AND (($2 = 0 AND NOT deleted) OR ($2 > 0 AND revision > $2))
              ORDER BY id"
        ))
        .bind(chat_id)
        .bind(since_revision)
        .fetch_all(&mut *tx)
        .await?;
        let queue: Vec<QueuedRow> = sqlx::query_as(
            "SELECT id, chat_id, content, model_config_id, reasoning_effort, created_at, position, created_by
               FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id",
        )
        .bind(chat_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChatSnapshot {
            chat,
            history: rows
                .into_iter()
                .map(MessageRow::decode)
                .collect::<Result<_, _>>()?,
            queue: queue
                .into_iter()
                .map(QueuedRow::decode)
                .collect::<Result<_, _>>()?,
        })
    }

    async fn apply(
        &self,
        chat_id: Uuid,
        change: Change,
        fence: Option<Fence>,
    ) -> Result<Applied, StoreError> {
        let mut attempt = 1;
        loop {
            match self.apply_once(chat_id, &change, fence).await {
                Err(err) if err.is_retryable_conflict() && attempt < TRANSACTION_ATTEMPTS => {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn acquisition_candidates(&self, limit: i64) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT c.id FROM chats c
              WHERE NOT c.archived
                AND c.status IN ('interrupting', 'requires_action', 'running')
                AND (c.worker_id IS NULL OR c.runner_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM chat_heartbeats h
                         WHERE h.chat_id = c.id AND h.runner_id = c.runner_id
                           AND h.heartbeat_at > now() - make_interval(secs => $2)))
              ORDER BY CASE c.status WHEN 'interrupting' THEN 0 WHEN 'requires_action' THEN 1 ELSE 2 END,
                       c.updated_at, c.id
              LIMIT $1",
        )
        .bind(limit)
        .bind(self.stale_secs())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn acquire(
        &self,
        chat_id: Uuid,
        worker_id: Uuid,
        runner_id: Uuid,
    ) -> Result<Option<Chat>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let conn: &mut PgConnection = &mut tx;
        // Lock and bump first; re-check in a separate statement, whose fresh snapshot sees a
        // lease committed by a competing acquirer while this one waited for the row lock.
        let locked =
            sqlx::query("UPDATE chats SET snapshot_version = snapshot_version + 1 WHERE id = $1")
                .bind(chat_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        if locked == 0 {
            return Ok(None);
        }
        let acquirable: Option<bool> = sqlx::query_scalar(
            "SELECT NOT c.archived
               AND c.status IN ('interrupting', 'requires_action', 'running')
               AND (c.worker_id IS NULL OR c.runner_id IS NULL OR NOT EXISTS (
                      SELECT 1 FROM chat_heartbeats h
                       WHERE h.chat_id = c.id AND h.runner_id = c.runner_id
                         AND h.heartbeat_at > now() - make_interval(secs => $2)))
               FROM chats c WHERE c.id = $1",
        )
        .bind(chat_id)
        .bind(self.stale_secs())
        .fetch_optional(&mut *conn)
        .await?;
        if acquirable != Some(true) {
            return Ok(None); // dropping the transaction rolls the bump back
        }
        take_ownership(conn, chat_id, worker_id, runner_id).await?;
        let chat = fetch_chat(conn, chat_id).await?;
        self.notify(conn, &chat).await?;
        tx.commit().await?;
        Ok(Some(chat))
    }

    async fn heartbeat(
        &self,
        worker_id: Uuid,
        runners: &[(Uuid, Uuid)],
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let (chats, runner_ids): (Vec<Uuid>, Vec<Uuid>) = runners.iter().copied().unzip();
        Ok(sqlx::query_as(
            "UPDATE chat_heartbeats h SET heartbeat_at = statement_timestamp()
               FROM chats c, unnest($2::uuid[], $3::uuid[]) AS r(chat_id, runner_id)
              WHERE h.chat_id = r.chat_id AND h.runner_id = r.runner_id
                AND c.id = h.chat_id AND c.runner_id = h.runner_id AND c.worker_id = $1
                AND h.heartbeat_at > statement_timestamp() - make_interval(secs => $4)
             RETURNING h.chat_id, h.runner_id",
        )
        .bind(worker_id)
        .bind(&chats)
        .bind(&runner_ids)
        .bind(self.stale_secs())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn cleanup_heartbeats(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM chat_heartbeats WHERE heartbeat_at < now() - make_interval(secs => $1)",
        )
        .bind(self.stale_secs())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn bind_workspace(
        &self,
        chat_id: Uuid,
        workspace_id: Uuid,
        build_id: Uuid,
    ) -> Result<Chat, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let updated = sqlx::query(
            "UPDATE chats SET workspace_id = $2, build_id = $3, agent_id = NULL WHERE id = $1",
        )
        .bind(chat_id)
        .bind(workspace_id)
        .bind(build_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::ChatNotFound(chat_id));
        }
        fetch_chat(&mut conn, chat_id).await
    }

    async fn bind_agent(
        &self,
        chat_id: Uuid,
        expected_workspace_id: Uuid,
        build_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Chat>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let updated = sqlx::query(
            "UPDATE chats SET build_id = $3, agent_id = $4 WHERE id = $1 AND workspace_id = $2",
        )
        .bind(chat_id)
        .bind(expected_workspace_id)
        .bind(build_id)
        .bind(agent_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        // Read back either way: a missing chat is an error, a moved one is `None`.
        let chat = fetch_chat(&mut conn, chat_id).await?;
        Ok((updated > 0).then_some(chat))
    }

    async fn begin_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        tool_name: &str,
        args_sha256: &[u8],
        runner_id: Option<Uuid>,
    ) -> Result<Option<ToolExecution>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO chat_tool_executions (chat_id, tool_call_id, tool_name, args_sha256, state, runner_id)
             VALUES ($1, $2, $3, $4, 'dispatched', $5)
             ON CONFLICT (chat_id, tool_call_id) DO NOTHING",
        )
        .bind(chat_id)
        .bind(tool_call_id)
        .bind(tool_name)
        .bind(args_sha256)
        .bind(runner_id)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                StoreError::ChatNotFound(chat_id)
            }
            _ => StoreError::Query(e),
        })?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let row: ToolExecutionRow = sqlx::query_as(
            "SELECT chat_id, tool_call_id, tool_name, args_sha256, state, result, runner_id,
                    dispatched_at, completed_at
               FROM chat_tool_executions WHERE chat_id = $1 AND tool_call_id = $2",
        )
        .bind(chat_id)
        .bind(tool_call_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(row.into_execution()?))
    }

    async fn complete_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE chat_tool_executions SET state = 'completed', result = $3, completed_at = now()
              WHERE chat_id = $1 AND tool_call_id = $2",
        )
        .bind(chat_id)
        .bind(tool_call_id)
        .bind(result)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::InvalidInput(format!(
                "tool call {tool_call_id:?} of chat {chat_id} was never dispatched"
            )));
        }
        Ok(())
    }

    async fn purge_tool_executions(&self, older_than: Duration) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM chat_tool_executions WHERE dispatched_at < now() - make_interval(secs => $1)",
        )
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn list_chats(&self, query: &ChatListQuery) -> Result<Vec<Chat>, StoreError> {
        let labels = serde_json::to_value(&query.labels).map_err(|source| StoreError::Corrupt {
            what: "labels",
            source,
        })?;
        let after = query.after;
        let after_updated = after
            .map(|c| {
                DateTime::from_timestamp_micros(c.updated_at_micros).ok_or_else(|| {
                    StoreError::InvalidInput("the page token is out of range".into())
                })
            })
            .transpose()?;
        let rows: Vec<ChatRow> = sqlx::query_as(concat!(
            "SELECT ",
            chat_columns!(),
            " FROM chats
              WHERE owner_id = $1
                AND ($2::uuid IS NULL OR organization_id = $2)
                AND archived = $3
                AND labels @> $4
                AND ($5 = '' OR title ILIKE '%' || $5 || '%' ESCAPE '\\')
                AND ($6::integer IS NULL OR (pin_order, updated_at, id) < ($6, $7, $8))
              ORDER BY pin_order DESC, updated_at DESC, id DESC
              LIMIT $9"
        ))
        .bind(query.owner_id)
        .bind(query.organization_id)
        .bind(query.archived)
        .bind(labels)
        .bind(like_escape(&query.title_query))
        .bind(after.map(|c| c.pin_order))
        .bind(after_updated)
        .bind(after.map(|c| c.id))
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ChatRow::decode).collect()
    }

    async fn messages_page(
        &self,
        chat_id: Uuid,
        page: &MessagePage,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let forwards = page.after_id.is_some();
        let sql = if forwards {
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM chat_messages
                  WHERE chat_id = $1 AND NOT deleted AND visibility <> 'model'
                    AND ($2::bigint IS NULL OR id < $2) AND ($3::bigint IS NULL OR id > $3)
                  ORDER BY id LIMIT $4"
            )
        } else {
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM chat_messages
                  WHERE chat_id = $1 AND NOT deleted AND visibility <> 'model'
                    AND ($2::bigint IS NULL OR id < $2) AND ($3::bigint IS NULL OR id > $3)
                  ORDER BY id DESC LIMIT $4"
            )
        };
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(chat_id)
            .bind(page.before_id)
            .bind(page.after_id)
            .bind(page.limit.saturating_add(1))
            .fetch_all(&self.pool)
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > page.limit;
        let mut messages = rows
            .into_iter()
            .take(usize::try_from(page.limit).unwrap_or(0))
            .map(MessageRow::decode)
            .collect::<Result<Vec<_>, _>>()?;
        if !forwards {
            messages.reverse();
        }
        Ok((messages, more))
    }

    async fn update_chat_metadata(
        &self,
        chat_id: Uuid,
        metadata: &ChatMetadata,
    ) -> Result<Chat, StoreError> {
        let labels = metadata
            .labels
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                what: "labels",
                source,
            })?;
        let mut conn = self.pool.acquire().await?;
        let updated = sqlx::query(
            "UPDATE chats SET title = COALESCE($2, title), pin_order = COALESCE($3, pin_order),
                              labels = COALESCE($4, labels), updated_at = now()
              WHERE id = $1",
        )
        .bind(chat_id)
        .bind(metadata.title.as_deref())
        .bind(metadata.pin_order)
        .bind(labels)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::ChatNotFound(chat_id));
        }
        let chat = fetch_chat(&mut conn, chat_id).await?;
        // Watchers learn of title changes from this; every other receiver sees a snapshot it
        // has already and ignores it.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(UPDATE_CHANNEL)
            .bind(ChatUpdate::from_chat(&chat).to_payload())
            .execute(&mut *conn)
            .await?;
        Ok(chat)
    }

    async fn unbind_workspace(&self, chat_id: Uuid) -> Result<Chat, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let updated = sqlx::query(
            "UPDATE chats SET workspace_id = NULL, build_id = NULL, agent_id = NULL WHERE id = $1",
        )
        .bind(chat_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::ChatNotFound(chat_id));
        }
        fetch_chat(&mut conn, chat_id).await
    }
}

#[derive(Debug, FromRow)]
struct ToolExecutionRow {
    chat_id: Uuid,
    tool_call_id: String,
    tool_name: String,
    args_sha256: Vec<u8>,
    state: String,
    result: Option<serde_json::Value>,
    runner_id: Option<Uuid>,
    dispatched_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl ToolExecutionRow {
    fn into_execution(self) -> Result<ToolExecution, StoreError> {
        let state: ToolExecutionState = self
            .state
            .parse()
            .map_err(|e: crate::UnknownName| StoreError::InvalidInput(e.to_string()))?;
        Ok(ToolExecution {
            chat_id: self.chat_id,
            tool_call_id: self.tool_call_id,
            tool_name: self.tool_name,
            args_sha256: self.args_sha256,
            state,
            result: self.result,
            runner_id: self.runner_id,
            dispatched_at: self.dispatched_at,
            completed_at: self.completed_at,
        })
    }
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

async fn take_ownership(
    conn: &mut PgConnection,
    chat_id: Uuid,
    worker_id: Uuid,
    runner_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE chats SET worker_id = $2, runner_id = $3 WHERE id = $1")
        .bind(chat_id)
        .bind(worker_id)
        .bind(runner_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO chat_heartbeats (chat_id, runner_id, heartbeat_at) VALUES ($1, $2, now())
         ON CONFLICT (chat_id, runner_id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(chat_id)
    .bind(runner_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_null(
    conn: &mut PgConnection,
    chat_id: Uuid,
    column: &'static str,
) -> Result<(), StoreError> {
    // `column` is one of this module's literals, never input.
    let sql = match column {
        "last_error" => "UPDATE chats SET last_error = NULL WHERE id = $1",
        "requires_action_deadline_at" => {
            "UPDATE chats SET requires_action_deadline_at = NULL WHERE id = $1"
        }
        "compaction_requested_at" => {
            "UPDATE chats SET compaction_requested_at = NULL WHERE id = $1"
        }
        _ => "UPDATE chats SET retry_state = NULL WHERE id = $1",
    };
    sqlx::query(sql).bind(chat_id).execute(&mut *conn).await?;
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|source| StoreError::Corrupt {
        what: "value",
        source,
    })
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

/// The row the lock-and-bump statement returns.
#[derive(Debug, FromRow)]
struct Locked {
    status: String,
    archived: bool,
    worker_id: Option<Uuid>,
    runner_id: Option<Uuid>,
    history_version: i64,
    generation_attempt: i64,
    dynamic_tools: Option<serde_json::Value>,
}

/// A tool call in live history without a result.
#[derive(Debug, Clone, FromRow)]
struct OpenCall {
    tool_call_id: String,
    tool_name: String,
}

/// Tool calls of live history (not provider-executed) that no live row answers, oldest first.
async fn open_calls(conn: &mut PgConnection, chat_id: Uuid) -> Result<Vec<OpenCall>, StoreError> {
    Ok(sqlx::query_as(
        "WITH parts AS (
            SELECT m.id, p.ord, p.part
              FROM chat_messages m
             CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(m.content) = 'array' THEN m.content ELSE '[]'::jsonb END
                 ) WITH ORDINALITY AS p(part, ord)
             WHERE m.chat_id = $1 AND NOT m.deleted
               AND p.part->>'type' IN ('tool-call', 'tool-result')
         )
         SELECT c.part->>'tool_call_id' AS tool_call_id, COALESCE(c.part->>'tool_name', '') AS tool_name
           FROM parts c
          WHERE c.part->>'type' = 'tool-call'
            AND COALESCE((c.part->>'provider_executed')::boolean, false) = false
            AND NOT EXISTS (SELECT 1 FROM parts r
                             WHERE r.part->>'type' = 'tool-result'
                               AND r.part->>'tool_call_id' = c.part->>'tool_call_id')
          ORDER BY c.id, c.ord",
    )
    .bind(chat_id)
    .fetch_all(&mut *conn)
    .await?)
}

#[derive(Debug, FromRow)]
struct ChatRow {
    id: Uuid,
    organization_id: Uuid,
    owner_id: Uuid,
    workspace_id: Option<Uuid>,
    build_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    title: String,
    labels: serde_json::Value,
    pin_order: i32,
    dynamic_tools: Option<serde_json::Value>,
    system_prompt: Option<String>,
    last_model_config_id: Uuid,
    last_reasoning_effort: Option<String>,
    status: String,
    archived: bool,
    last_error: Option<serde_json::Value>,
    requires_action_deadline_at: Option<DateTime<Utc>>,
    compaction_requested_at: Option<DateTime<Utc>>,
    retry_state: Option<serde_json::Value>,
    retry_window_started_at: Option<DateTime<Utc>>,
    worker_id: Option<Uuid>,
    runner_id: Option<Uuid>,
    snapshot_version: i64,
    history_version: i64,
    queue_version: i64,
    generation_attempt: i64,
    retry_state_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

async fn fetch_chat(conn: &mut PgConnection, id: Uuid) -> Result<Chat, StoreError> {
    let row: Option<ChatRow> = sqlx::query_as(concat!(
        "SELECT ",
        chat_columns!(),
        " FROM chats WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(StoreError::ChatNotFound(id))?.decode()
}

impl ChatRow {
    fn decode(self) -> Result<Chat, StoreError> {
        let row = self;
        Ok(Chat {
            id: row.id,
            organization_id: row.organization_id,
            owner_id: row.owner_id,
            workspace_id: row.workspace_id,
            build_id: row.build_id,
            agent_id: row.agent_id,
            title: row.title,
            labels: serde_json::from_value(row.labels).map_err(|source| StoreError::Corrupt {
                what: "labels",
                source,
            })?,
            pin_order: row.pin_order,
            dynamic_tools: row.dynamic_tools,
            system_prompt: row.system_prompt,
            last_model_config_id: row.last_model_config_id,
            last_reasoning_effort: row.last_reasoning_effort,
            status: ChatStatus::parse(&row.status),
            archived: row.archived,
            last_error: row.last_error,
            requires_action_deadline_at: row.requires_action_deadline_at,
            compaction_requested_at: row.compaction_requested_at,
            retry_state: row.retry_state,
            retry_window_started_at: row.retry_window_started_at,
            worker_id: row.worker_id,
            runner_id: row.runner_id,
            snapshot_version: row.snapshot_version,
            history_version: row.history_version,
            queue_version: row.queue_version,
            generation_attempt: row.generation_attempt,
            retry_state_version: row.retry_state_version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, FromRow)]
struct MessageRow {
    id: i64,
    chat_id: Uuid,
    role: Role,
    content: serde_json::Value,
    visibility: Visibility,
    created_by: Option<Uuid>,
    model_config_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    compressed: bool,
    deleted: bool,
    revision: i64,
    queued_message_id: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    total_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    cache_creation_tokens: Option<i64>,
    cache_read_tokens: Option<i64>,
    context_limit: Option<i64>,
}

impl MessageRow {
    fn decode(self) -> Result<Message, StoreError> {
        let content = decode_content(self.content)?;
        let usage = self.input_tokens.map(|input_tokens| Usage {
            input_tokens,
            output_tokens: self.output_tokens.unwrap_or(0),
            total_tokens: self.total_tokens.unwrap_or(0),
            reasoning_tokens: self.reasoning_tokens.unwrap_or(0),
            cache_creation_tokens: self.cache_creation_tokens.unwrap_or(0),
            cache_read_tokens: self.cache_read_tokens.unwrap_or(0),
            context_limit: self.context_limit.unwrap_or(0),
        });
        Ok(Message {
            id: self.id,
            chat_id: self.chat_id,
            role: self.role,
            content,
            visibility: self.visibility,
            created_by: self.created_by,
            model_config_id: self.model_config_id,
            created_at: self.created_at,
            compressed: self.compressed,
            deleted: self.deleted,
            revision: self.revision,
            queued_message_id: self.queued_message_id,
            usage,
        })
    }
}

/// Content is an array of parts; a legacy scalar string reads as one text part.
fn decode_content(value: serde_json::Value) -> Result<Vec<MessagePart>, StoreError> {
    match value {
        serde_json::Value::String(text) => Ok(vec![MessagePart::Text { text }]),
        other => serde_json::from_value(other).map_err(|source| StoreError::Corrupt {
            what: "message content",
            source,
        }),
    }
}

async fn insert_message(
    conn: &mut PgConnection,
    chat_id: Uuid,
    message: &NewMessage,
    queued_message_id: Option<i64>,
) -> Result<Message, StoreError> {
    let usage = message.usage.unwrap_or_default();
    let has_usage = message.usage.is_some();
    let row: MessageRow = sqlx::query_as(concat!(
        "INSERT INTO chat_messages (chat_id, role, content, visibility, created_by, model_config_id, compressed,
                                    queued_message_id, input_tokens, output_tokens, total_tokens, reasoning_tokens,
                                    cache_creation_tokens, cache_read_tokens, context_limit)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 CASE WHEN $9 THEN $10 END, CASE WHEN $9 THEN $11 END, CASE WHEN $9 THEN $12 END,
                 CASE WHEN $9 THEN $13 END, CASE WHEN $9 THEN $14 END, CASE WHEN $9 THEN $15 END,
                 CASE WHEN $9 THEN $16 END)
         RETURNING ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(message.role)
    .bind(json(&message.content)?)
    .bind(message.visibility)
    .bind(message.created_by)
    .bind(message.model_config_id)
    .bind(message.compressed)
    .bind(queued_message_id)
    .bind(has_usage)
    .bind(usage.input_tokens)
    .bind(usage.output_tokens)
    .bind(usage.total_tokens)
    .bind(usage.reasoning_tokens)
    .bind(usage.cache_creation_tokens)
    .bind(usage.cache_read_tokens)
    .bind(usage.context_limit)
    .fetch_one(&mut *conn)
    .await?;
    row.decode()
}

#[derive(Debug, FromRow)]
struct QueuedRow {
    id: i64,
    chat_id: Uuid,
    content: serde_json::Value,
    model_config_id: Option<Uuid>,
    reasoning_effort: Option<String>,
    created_at: DateTime<Utc>,
    position: i64,
    created_by: Uuid,
}

impl QueuedRow {
    fn decode(self) -> Result<QueuedMessage, StoreError> {
        Ok(QueuedMessage {
            id: self.id,
            chat_id: self.chat_id,
            content: decode_content(self.content)?,
            model_config_id: self.model_config_id,
            reasoning_effort: self.reasoning_effort,
            created_at: self.created_at,
            position: self.position,
            created_by: self.created_by,
        })
    }
}
