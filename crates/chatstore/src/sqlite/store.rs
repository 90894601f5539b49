//! The chat domain on SQLite: transitions follow [`crate::transition`] in one write
//! transaction on the writer connection, and what they publish reaches the hub after the
//! commit. The version rules are the schema's triggers; reads use the reader pool, and a
//! snapshot is one read transaction (WAL gives it a consistent view).

use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::{Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use super::{SqliteStore, ago, later, stored_time};
use crate::StoreError;
use crate::pubsub::{ChatUpdate, Notification};
use crate::rows::{
    ChatRow, MessageRow, QueuedRow, ToolExecutionRow, candidates, chat_columns, message_columns,
    queued_columns, tool_execution_columns,
};
use crate::sql::{is_foreign_key_violation, like_escape};
use crate::store::{
    Applied, Change, ChatListQuery, ChatMetadata, ChatSnapshot, MessagePage, Store,
};
use crate::transition::{ChatTx, ChatWrite, Locked, OpenCall, Rules, json};
use crate::types::{Chat, Fence, Message, NewChat, NewMessage, QueuedMessage, Role, ToolExecution};

/// A write transaction and what it has published, delivered after its commit.
struct Tx {
    tx: Transaction<'static, Sqlite>,
    outbox: Vec<Notification>,
}

impl SqliteStore {
    fn rules(&self) -> Rules<'_> {
        Rules {
            config: &self.config,
        }
    }

    /// A binding write (a metadata write): the chat after it, published at its unchanged
    /// snapshot so the owner's watchers see the new workspace at once (runners ignore it).
    async fn rebind(
        &self,
        chat_id: Uuid,
        write: ChatWrite<'_>,
    ) -> Result<Option<Chat>, StoreError> {
        let mut tx = self.begin().await?;
        let chat = self.rules().bind(&mut tx, chat_id, write).await?;
        self.commit(tx).await?;
        if let Some(chat) = &chat {
            self.db
                .hub()
                .publish(Notification::ChatUpdate(ChatUpdate::from_chat(chat)));
        }
        Ok(chat)
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.db.writer().begin().await?,
            outbox: Vec::new(),
        })
    }

    /// Commits and then publishes.
    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        tx.tx.commit().await?;
        for notification in tx.outbox {
            self.db.hub().publish(notification);
        }
        Ok(())
    }
}

/// The lease condition: the chat `c` has an owner whose runner heartbeat is newer than the
/// time modifier bound at `$2` ([`ago`]).
macro_rules! live_lease {
    () => {
        concat!(
            "c.worker_id IS NOT NULL AND c.runner_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM chat_heartbeats h
                 WHERE h.chat_id = c.id AND h.runner_id = c.runner_id
                   AND h.heartbeat_at > ",
            now_shifted!("$2"),
            ")"
        )
    };
}

/// The revision a row written now carries (trigger T1 checks it).
macro_rules! current_snapshot {
    ($chat:literal) => {
        concat!(
            "(SELECT snapshot_version FROM chats WHERE id = ",
            $chat,
            ")"
        )
    };
}

#[async_trait]
impl ChatTx for Tx {
    async fn lock_and_bump(&mut self, chat_id: Uuid) -> Result<Option<Locked>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE chats SET snapshot_version = snapshot_version + 1 WHERE id = $1
             RETURNING status, archived, worker_id, runner_id, history_version,
                       generation_attempt, dynamic_tools",
        )
        .bind(chat_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    async fn acquirable(
        &mut self,
        chat_id: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        let acquirable: Option<bool> = sqlx::query_scalar(concat!(
            "SELECT NOT c.archived AND c.status IN ('interrupting', 'requires_action', 'running')
                    AND NOT (",
            live_lease!(),
            ") FROM chats c WHERE c.id = $1"
        ))
        .bind(chat_id)
        .bind(ago(stale_after))
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(acquirable == Some(true))
    }

    async fn lease_is_live(
        &mut self,
        chat_id: Uuid,
        runner_id: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM chat_heartbeats
                             WHERE chat_id = $1 AND runner_id = $2 AND heartbeat_at > ",
            now_shifted!("$3"),
            ")"
        ))
        .bind(chat_id)
        .bind(runner_id)
        .bind(ago(stale_after))
        .fetch_one(&mut *self.tx)
        .await?)
    }

    async fn insert_chat(&mut self, new: &NewChat) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let now = stored_time(chrono::Utc::now());
        sqlx::query(
            "INSERT INTO chats (id, organization_id, owner_id, last_model_config_id, last_reasoning_effort,
                                title, system_prompt, workspace_id, labels, dynamic_tools, status,
                                created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, COALESCE($6, 'New Chat'), $7, $8, $9, $10, 'running', $11, $11)",
        )
        .bind(id)
        .bind(new.organization_id)
        .bind(new.owner_id)
        .bind(new.model_config_id)
        .bind(&new.reasoning_effort)
        .bind(&new.title)
        .bind(&new.system_prompt)
        .bind(new.workspace_id)
        .bind(json(&new.labels)?)
        .bind(&new.dynamic_tools)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(id)
    }

    async fn fetch_chat(&mut self, chat_id: Uuid) -> Result<Chat, StoreError> {
        fetch_chat(&mut self.tx, chat_id).await
    }

    async fn write(&mut self, chat_id: Uuid, write: ChatWrite<'_>) -> Result<u64, StoreError> {
        let conn: &mut SqliteConnection = &mut self.tx;
        let query = match write {
            ChatWrite::Status(status) => sqlx::query("UPDATE chats SET status = $2 WHERE id = $1")
                .bind(chat_id)
                .bind(status.as_str()),
            ChatWrite::Archived(archived) => {
                sqlx::query("UPDATE chats SET archived = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(archived)
            }
            ChatWrite::UnpinIt => {
                sqlx::query("UPDATE chats SET pin_order = 0 WHERE id = $1").bind(chat_id)
            }
            ChatWrite::LastError(error) => {
                sqlx::query("UPDATE chats SET last_error = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(error)
            }
            ChatWrite::Deadline(after) => sqlx::query(concat!(
                "UPDATE chats SET requires_action_deadline_at = ",
                now_shifted!("$2"),
                " WHERE id = $1"
            ))
            .bind(chat_id)
            .bind(after.map(later)),
            ChatWrite::CompactionRequested(requested) => sqlx::query(concat!(
                "UPDATE chats SET compaction_requested_at = CASE WHEN $2 THEN ",
                now!(),
                " END WHERE id = $1"
            ))
            .bind(chat_id)
            .bind(requested),
            ChatWrite::ClearOwnership => {
                sqlx::query("UPDATE chats SET worker_id = NULL, runner_id = NULL WHERE id = $1")
                    .bind(chat_id)
            }
            ChatWrite::Ownership {
                worker_id,
                runner_id,
            } => {
                sqlx::query("UPDATE chats SET worker_id = $2, runner_id = $3 WHERE id = $1")
                    .bind(chat_id)
                    .bind(worker_id)
                    .bind(runner_id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(concat!(
                    "INSERT INTO chat_heartbeats (chat_id, runner_id, heartbeat_at) VALUES ($1, $2, ",
                    now!(),
                    ") ON CONFLICT (chat_id, runner_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
                ))
                .bind(chat_id)
                .bind(runner_id)
            }
            ChatWrite::GrantHistoryEpoch => sqlx::query(
                "UPDATE chats SET history_version = snapshot_version, generation_attempt = 0
                  WHERE id = $1",
            )
            .bind(chat_id),
            ChatWrite::IncrementGenerationAttempt => sqlx::query(
                "UPDATE chats SET generation_attempt = generation_attempt + 1 WHERE id = $1",
            )
            .bind(chat_id),
            ChatWrite::RetryState(state) => sqlx::query(concat!(
                "UPDATE chats SET retry_state = $2,
                        retry_window_started_at = CASE WHEN $2 IS NULL THEN retry_window_started_at
                                                       ELSE COALESCE(retry_window_started_at, ",
                now!(),
                ") END
                  WHERE id = $1"
            ))
            .bind(chat_id)
            .bind(state),
            ChatWrite::RetryWindow(start) => {
                sqlx::query("UPDATE chats SET retry_window_started_at = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(stored_time(start))
            }
            ChatWrite::TurnSettings {
                model_config_id,
                reasoning_effort,
            } => sqlx::query(
                "UPDATE chats SET last_model_config_id = COALESCE($2, last_model_config_id),
                                  last_reasoning_effort = COALESCE($3, last_reasoning_effort)
                  WHERE id = $1",
            )
            .bind(chat_id)
            .bind(model_config_id)
            .bind(reasoning_effort),
            ChatWrite::Touch => sqlx::query("UPDATE chats SET updated_at = $2 WHERE id = $1")
                .bind(chat_id)
                .bind(stored_time(chrono::Utc::now())),
            ChatWrite::Workspace {
                workspace_id,
                build_id,
            } => sqlx::query(
                "UPDATE chats SET workspace_id = $2, build_id = $3, agent_id = NULL WHERE id = $1",
            )
            .bind(chat_id)
            .bind(workspace_id)
            .bind(build_id),
            ChatWrite::Agent {
                expected_workspace_id,
                build_id,
                agent_id,
            } => sqlx::query(
                "UPDATE chats SET build_id = $3, agent_id = $4 WHERE id = $1 AND workspace_id = $2",
            )
            .bind(chat_id)
            .bind(expected_workspace_id)
            .bind(build_id)
            .bind(agent_id),
            ChatWrite::Unbind => sqlx::query(
                "UPDATE chats SET workspace_id = NULL, build_id = NULL, agent_id = NULL WHERE id = $1",
            )
            .bind(chat_id),
        };
        Ok(query.execute(&mut *conn).await?.rows_affected())
    }

    async fn message_role(
        &mut self,
        chat_id: Uuid,
        message_id: i64,
    ) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted",
        )
        .bind(message_id)
        .bind(chat_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        role.map(|r| r.parse().map_err(crate::rows::invalid_name))
            .transpose()
    }

    async fn insert_message(
        &mut self,
        chat_id: Uuid,
        message: &NewMessage,
        queued_message_id: Option<i64>,
    ) -> Result<Message, StoreError> {
        let usage = message.usage.unwrap_or_default();
        let has_usage = message.usage.is_some();
        let row: MessageRow = sqlx::query_as(concat!(
            "INSERT INTO chat_messages (chat_id, role, content, visibility, created_by, model_config_id,
                                        compressed, queued_message_id, created_at, revision,
                                        input_tokens, output_tokens, total_tokens, reasoning_tokens,
                                        cache_creation_tokens, cache_read_tokens, context_limit)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ",
            current_snapshot!("$1"),
            ",
                     CASE WHEN $10 THEN $11 END, CASE WHEN $10 THEN $12 END, CASE WHEN $10 THEN $13 END,
                     CASE WHEN $10 THEN $14 END, CASE WHEN $10 THEN $15 END, CASE WHEN $10 THEN $16 END,
                     CASE WHEN $10 THEN $17 END)
             RETURNING ",
            message_columns!()
        ))
        .bind(chat_id)
        .bind(message.role.as_str())
        .bind(json(&message.content)?)
        .bind(message.visibility.as_str())
        .bind(message.created_by)
        .bind(message.model_config_id)
        .bind(message.compressed)
        .bind(queued_message_id)
        .bind(stored_time(chrono::Utc::now()))
        .bind(has_usage)
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .bind(usage.total_tokens)
        .bind(usage.reasoning_tokens)
        .bind(usage.cache_creation_tokens)
        .bind(usage.cache_read_tokens)
        .bind(usage.context_limit)
        .fetch_one(&mut *self.tx)
        .await?;
        row.decode()
    }

    async fn soft_delete_from(
        &mut self,
        chat_id: Uuid,
        first_id: i64,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE chat_messages SET deleted = 1
              WHERE chat_id = $1 AND id >= $2 AND NOT deleted RETURNING id",
        )
        .bind(chat_id)
        .bind(first_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn open_calls(&mut self, chat_id: Uuid) -> Result<Vec<OpenCall>, StoreError> {
        Ok(sqlx::query_as(
            "WITH parts AS (
                SELECT m.id, p.key AS ord, p.value AS part
                  FROM chat_messages m,
                       json_each(CASE WHEN json_type(m.content) = 'array' THEN m.content ELSE '[]' END) AS p
                 WHERE m.chat_id = $1 AND NOT m.deleted
                   -- Most rows have no tool part: a text search spares parsing them.
                   AND instr(m.content, '\"tool-') > 0
                   AND p.value ->> 'type' IN ('tool-call', 'tool-result')
             )
             SELECT c.part ->> 'tool_call_id' AS tool_call_id,
                    COALESCE(c.part ->> 'tool_name', '') AS tool_name
               FROM parts c
              WHERE c.part ->> 'type' = 'tool-call'
                AND COALESCE(c.part ->> 'provider_executed', 0) = 0
                AND NOT EXISTS (SELECT 1 FROM parts r
                                 WHERE r.part ->> 'type' = 'tool-result'
                                   AND r.part ->> 'tool_call_id' = c.part ->> 'tool_call_id')
              ORDER BY c.id, c.ord",
        )
        .bind(chat_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn queue_len(&mut self, chat_id: Uuid) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM chat_queued_messages WHERE chat_id = $1")
                .bind(chat_id)
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    async fn queued_exists(&mut self, chat_id: Uuid, id: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chat_queued_messages WHERE id = $1 AND chat_id = $2)",
        )
        .bind(id)
        .bind(chat_id)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    async fn queue_head(&mut self, chat_id: Uuid) -> Result<Option<QueuedMessage>, StoreError> {
        let head: Option<QueuedRow> = sqlx::query_as(concat!(
            "SELECT ",
            queued_columns!(),
            " FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id LIMIT 1"
        ))
        .bind(chat_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        head.map(QueuedRow::decode).transpose()
    }

    async fn enqueue(
        &mut self,
        chat_id: Uuid,
        message: &NewMessage,
        reasoning_effort: Option<&str>,
    ) -> Result<QueuedMessage, StoreError> {
        let row: QueuedRow = sqlx::query_as(concat!(
            "INSERT INTO chat_queued_messages (chat_id, content, model_config_id, reasoning_effort,
                                               created_by, created_at, position)
             VALUES ($1, $2, $3, $4, $5, $6,
                     (SELECT COALESCE(max(position), 0) + 1 FROM chat_queued_messages WHERE chat_id = $1))
             RETURNING ",
            queued_columns!()
        ))
        .bind(chat_id)
        .bind(json(&message.content)?)
        .bind(message.model_config_id)
        .bind(reasoning_effort)
        .bind(message.created_by.unwrap_or_default())
        .bind(stored_time(chrono::Utc::now()))
        .fetch_one(&mut *self.tx)
        .await?;
        row.decode()
    }

    async fn delete_queued(&mut self, chat_id: Uuid, id: Option<i64>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM chat_queued_messages WHERE chat_id = $1 AND ($2 IS NULL OR id = $2)",
        )
        .bind(chat_id)
        .bind(id)
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    async fn move_queued_to_head(&mut self, chat_id: Uuid, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE chat_queued_messages
                SET position = (SELECT min(position) - 1 FROM chat_queued_messages WHERE chat_id = $1)
              WHERE id = $2 AND chat_id = $1",
        )
        .bind(chat_id)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn publish(&mut self, notification: Notification) -> Result<(), StoreError> {
        self.outbox.push(notification);
        Ok(())
    }
}

async fn fetch_chat(conn: &mut SqliteConnection, id: Uuid) -> Result<Chat, StoreError> {
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

async fn queue(
    conn: &mut SqliteConnection,
    chat_id: Uuid,
) -> Result<Vec<QueuedMessage>, StoreError> {
    let rows: Vec<QueuedRow> = sqlx::query_as(concat!(
        "SELECT ",
        queued_columns!(),
        " FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id"
    ))
    .bind(chat_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(QueuedRow::decode).collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_chat(&self, new: NewChat) -> Result<Applied, StoreError> {
        let mut tx = self.begin().await?;
        let applied = self.rules().create_chat(&mut tx, &new).await?;
        self.commit(tx).await?;
        Ok(applied)
    }

    async fn chat(&self, id: Uuid) -> Result<Chat, StoreError> {
        let mut conn = self.db.reader().acquire().await?;
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
        .fetch_all(self.db.reader())
        .await?;
        rows.into_iter().map(MessageRow::decode).collect()
    }

    async fn queue(&self, chat_id: Uuid) -> Result<Vec<QueuedMessage>, StoreError> {
        let mut conn = self.db.reader().acquire().await?;
        queue(&mut conn, chat_id).await
    }

    async fn snapshot(
        &self,
        chat_id: Uuid,
        since_revision: i64,
    ) -> Result<ChatSnapshot, StoreError> {
        // One read transaction: WAL keeps its view fixed from the first read.
        let mut tx = self.db.reader().begin().await?;
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
        let queue = queue(&mut tx, chat_id).await?;
        tx.commit().await?;
        Ok(ChatSnapshot {
            chat,
            history: rows
                .into_iter()
                .map(MessageRow::decode)
                .collect::<Result<_, _>>()?,
            queue,
        })
    }

    async fn apply(
        &self,
        chat_id: Uuid,
        change: Change,
        fence: Option<Fence>,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.begin().await?;
        let applied = self.rules().apply(&mut tx, chat_id, &change, fence).await?;
        self.commit(tx).await?;
        Ok(applied)
    }

    async fn acquisition_candidates(&self, limit: i64) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(candidates!())
            .bind(limit)
            .bind(ago(self.config.lease_stale_after))
            .fetch_all(self.db.reader())
            .await?)
    }

    async fn acquire(
        &self,
        chat_id: Uuid,
        worker_id: Uuid,
        runner_id: Uuid,
    ) -> Result<Option<Chat>, StoreError> {
        let mut tx = self.begin().await?;
        let acquired = self
            .rules()
            .acquire(&mut tx, chat_id, worker_id, runner_id)
            .await?;
        // Not acquirable: dropping the transaction rolls the bump back.
        if acquired.is_some() {
            self.commit(tx).await?;
        }
        Ok(acquired)
    }

    async fn acquire_batch(&self, worker_id: Uuid, limit: i64) -> Result<Vec<Chat>, StoreError> {
        // Writes run one at a time, so the candidates read inside this write transaction stay
        // acquirable until it commits: every one is acquired through the same checks as one
        // acquisition, in one commit.
        let mut tx = self.begin().await?;
        let candidates: Vec<Uuid> = sqlx::query_scalar(candidates!())
            .bind(limit)
            .bind(ago(self.config.lease_stale_after))
            .fetch_all(&mut *tx.tx)
            .await?;
        let mut chats = Vec::with_capacity(candidates.len());
        for chat_id in candidates {
            if let Some(chat) = self
                .rules()
                .acquire(&mut tx, chat_id, worker_id, Uuid::new_v4())
                .await?
            {
                chats.push(chat);
            }
        }
        self.commit(tx).await?;
        Ok(chats)
    }

    async fn heartbeat(
        &self,
        worker_id: Uuid,
        runners: &[(Uuid, Uuid)],
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let mut renewed = Vec::with_capacity(runners.len());
        for (chat_id, runner_id) in runners {
            let updated = sqlx::query(concat!(
                "UPDATE chat_heartbeats SET heartbeat_at = ",
                now!(),
                " WHERE chat_id = $1 AND runner_id = $2 AND heartbeat_at > ",
                now_shifted!("$4"),
                " AND EXISTS (SELECT 1 FROM chats c
                               WHERE c.id = $1 AND c.runner_id = $2 AND c.worker_id = $3)"
            ))
            .bind(chat_id)
            .bind(runner_id)
            .bind(worker_id)
            .bind(ago(self.config.lease_stale_after))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 1 {
                renewed.push((*chat_id, *runner_id));
            }
        }
        tx.commit().await?;
        Ok(renewed)
    }

    async fn running_chats(&self, owner_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(crate::store::RUNNING_CHATS)
            .bind(owner_id)
            .fetch_one(self.db.reader())
            .await?)
    }

    async fn cleanup_heartbeats(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(concat!(
            "DELETE FROM chat_heartbeats WHERE heartbeat_at < ",
            now_shifted!("$1")
        ))
        .bind(ago(self.config.lease_stale_after))
        .execute(self.db.writer())
        .await?
        .rows_affected())
    }

    async fn bind_workspace(
        &self,
        chat_id: Uuid,
        workspace_id: Uuid,
        build_id: Uuid,
    ) -> Result<Chat, StoreError> {
        self.rebind(
            chat_id,
            ChatWrite::Workspace {
                workspace_id,
                build_id,
            },
        )
        .await?
        .ok_or(StoreError::ChatNotFound(chat_id))
    }

    async fn bind_agent(
        &self,
        chat_id: Uuid,
        expected_workspace_id: Uuid,
        build_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Chat>, StoreError> {
        self.rebind(
            chat_id,
            ChatWrite::Agent {
                expected_workspace_id,
                build_id,
                agent_id,
            },
        )
        .await
    }

    async fn begin_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        tool_name: &str,
        args_sha256: &[u8],
        runner_id: Option<Uuid>,
    ) -> Result<Option<ToolExecution>, StoreError> {
        let mut conn = self.db.writer().acquire().await?;
        // Fenced: a runner records (and so dispatches) a call only while it holds the chat's
        // live lease. Writes are serialised on this connection, so nothing lands between the
        // check and the insert.
        if let Some(runner_id) = runner_id {
            let owned: bool = sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM chats c JOIN chat_heartbeats h
                                    ON h.chat_id = c.id AND h.runner_id = c.runner_id
                                 WHERE c.id = $1 AND c.runner_id = $2 AND h.heartbeat_at > ",
                now_shifted!("$3"),
                ")"
            ))
            .bind(chat_id)
            .bind(runner_id)
            .bind(ago(self.config.lease_stale_after))
            .fetch_one(&mut *conn)
            .await?;
            if !owned {
                return Err(StoreError::FenceMismatch(crate::store::LEASE_NOT_HELD));
            }
        }
        let inserted = sqlx::query(concat!(
            "INSERT INTO chat_tool_executions (chat_id, tool_call_id, tool_name, args_sha256, state,
                                               runner_id, dispatched_at)
             VALUES ($1, $2, $3, $4, 'dispatched', $5, ",
            now!(),
            ") ON CONFLICT (chat_id, tool_call_id) DO NOTHING"
        ))
        .bind(chat_id)
        .bind(tool_call_id)
        .bind(tool_name)
        .bind(args_sha256)
        .bind(runner_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::ChatNotFound(chat_id)
            } else {
                StoreError::Query(e)
            }
        })?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let row: ToolExecutionRow = sqlx::query_as(concat!(
            "SELECT ",
            tool_execution_columns!(),
            " FROM chat_tool_executions WHERE chat_id = $1 AND tool_call_id = $2"
        ))
        .bind(chat_id)
        .bind(tool_call_id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Some(row.into_execution()?))
    }

    async fn complete_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(concat!(
            "UPDATE chat_tool_executions SET state = 'completed', result = $3, completed_at = ",
            now!(),
            " WHERE chat_id = $1 AND tool_call_id = $2"
        ))
        .bind(chat_id)
        .bind(tool_call_id)
        .bind(json(result)?)
        .execute(self.db.writer())
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
        Ok(sqlx::query(concat!(
            "DELETE FROM chat_tool_executions WHERE dispatched_at < ",
            now_shifted!("$1")
        ))
        .bind(ago(older_than))
        .execute(self.db.writer())
        .await?
        .rows_affected())
    }

    async fn list_chats(&self, query: &ChatListQuery) -> Result<Vec<Chat>, StoreError> {
        let labels = json(&query.labels)?;
        let after = query.after;
        let after_updated = after
            .map(|c| {
                DateTime::from_timestamp_micros(c.updated_at_micros)
                    .map(stored_time)
                    .ok_or_else(|| {
                        StoreError::InvalidInput("the page token is out of range".into())
                    })
            })
            .transpose()?;
        let rows: Vec<ChatRow> = sqlx::query_as(concat!(
            "SELECT ",
            chat_columns!(),
            " FROM chats
              WHERE owner_id = $1
                AND ($2 IS NULL OR organization_id = $2)
                AND archived = $3
                AND NOT EXISTS (SELECT 1 FROM json_each($4) q
                                 WHERE (SELECT l.value FROM json_each(chats.labels) l WHERE l.key = q.key)
                                       IS NOT q.value)
                AND ($5 = '' OR title LIKE '%' || $5 || '%' ESCAPE '\\')
                AND ($6 IS NULL OR (pin_order, updated_at, id) < ($6, $7, $8))
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
        .fetch_all(self.db.reader())
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
                    AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR id > $3)
                  ORDER BY id LIMIT $4"
            )
        } else {
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM chat_messages
                  WHERE chat_id = $1 AND NOT deleted AND visibility <> 'model'
                    AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR id > $3)
                  ORDER BY id DESC LIMIT $4"
            )
        };
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(chat_id)
            .bind(page.before_id)
            .bind(page.after_id)
            .bind(page.limit.saturating_add(1))
            .fetch_all(self.db.reader())
            .await?;
        crate::rows::message_page(rows, page.limit, forwards)
    }

    async fn update_chat_metadata(
        &self,
        chat_id: Uuid,
        metadata: &ChatMetadata,
    ) -> Result<Chat, StoreError> {
        let labels = metadata.labels.as_ref().map(json).transpose()?;
        let mut conn = self.db.writer().acquire().await?;
        let updated = sqlx::query(
            "UPDATE chats SET title = COALESCE($2, title), pin_order = COALESCE($3, pin_order),
                              labels = COALESCE($4, labels), updated_at = $5
              WHERE id = $1",
        )
        .bind(chat_id)
        .bind(metadata.title.as_deref())
        .bind(metadata.pin_order)
        .bind(labels)
        .bind(stored_time(chrono::Utc::now()))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::ChatNotFound(chat_id));
        }
        let chat = fetch_chat(&mut conn, chat_id).await?;
        // Watchers learn of title changes from this; every other receiver sees a snapshot it
        // has already and ignores it.
        self.db
            .hub()
            .publish(Notification::ChatUpdate(ChatUpdate::from_chat(&chat)));
        Ok(chat)
    }

    async fn unbind_workspace(&self, chat_id: Uuid) -> Result<Chat, StoreError> {
        self.rebind(chat_id, ChatWrite::Unbind)
            .await?
            .ok_or(StoreError::ChatNotFound(chat_id))
    }
}
