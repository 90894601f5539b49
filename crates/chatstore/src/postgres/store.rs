//! `PgStore`: the [`Store`] on PostgreSQL. Transitions follow [`crate::transition`] inside one
//! transaction whose first statement locks the chat row; this module supplies the statements.
//! Notifications are sent with `pg_notify` inside the transaction, so PostgreSQL delivers them
//! on commit and drops them on rollback. The version rules are the schema's triggers.

use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::PgConnection;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::StoreError;
use crate::pubsub::{
    AGENT_CHANNEL, ChatUpdate, JOB_CHANNEL, Notification, OWNERSHIP_CHANNEL, UPDATE_CHANNEL,
};
use crate::rows::{
    ChatRow, MessageRow, QueuedRow, ToolExecutionRow, candidates, chat_columns, message_columns,
    queued_columns, tool_execution_columns,
};
use crate::sql::{is_foreign_key_violation, like_escape};
use crate::store::{
    Applied, Change, ChatListQuery, ChatMetadata, ChatSnapshot, MessagePage, Store, StoreConfig,
};
use crate::transition::{ChatTx, ChatWrite, Locked, OpenCall, Rules, json};
use crate::types::{Chat, Fence, Message, NewChat, NewMessage, QueuedMessage, Role, ToolExecution};

/// Attempts of a transition transaction that hit a serialization failure or deadlock.
const TRANSACTION_ATTEMPTS: usize = 3;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections of their own for the leases: renewals of chats and replicas, and batch
    /// acquisitions, so a flood of other queries (many open streams, a burst of new turns)
    /// cannot hold them up until leases go stale or new chats wait to be picked up.
    lease_pool: PgPool,
    config: StoreConfig,
}

/// Connections reserved for leases: one for renewals, one for a worker's acquisitions (which
/// run one batch at a time).
const LEASE_CONNECTIONS: u32 = 2;

impl PgStore {
    /// A store on `pool` (migrated), with two connections of its own for leases, to the same
    /// database (opened on first use).
    pub fn new(pool: PgPool, config: StoreConfig) -> Self {
        let lease_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(LEASE_CONNECTIONS)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with((*pool.connect_options()).clone());
        Self {
            pool,
            lease_pool,
            config,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool of leases.
    pub(super) fn lease_pool(&self) -> &PgPool {
        &self.lease_pool
    }

    fn stale_secs(&self) -> f64 {
        self.config.lease_stale_after.as_secs_f64()
    }

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
        let mut tx = self.pool.begin().await?;
        let chat = self.rules().bind(&mut *tx, chat_id, write).await?;
        if let Some(chat) = &chat {
            notify(
                &mut tx,
                &Notification::ChatUpdate(ChatUpdate::from_chat(chat)),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(chat)
    }
}

/// The channel and payload of a notification (`pg_notify` arguments).
pub(super) fn channel_payload(notification: &Notification) -> Option<(&'static str, String)> {
    let encoded = match notification {
        Notification::ChatUpdate(update) => (UPDATE_CHANNEL, serde_json::to_string(update)),
        Notification::Ownership(hint) => (OWNERSHIP_CHANNEL, serde_json::to_string(hint)),
        Notification::Job(update) => (JOB_CHANNEL, serde_json::to_string(update)),
        Notification::Agent(update) => (AGENT_CHANNEL, serde_json::to_string(update)),
        Notification::Resync => return None,
    };
    Some((encoded.0, encoded.1.unwrap_or_default()))
}

/// Sends a notification with `pg_notify`: inside a transaction, delivered on commit only.
pub(super) async fn notify(
    conn: &mut PgConnection,
    notification: &Notification,
) -> Result<(), StoreError> {
    if let Some((channel, payload)) = channel_payload(notification) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The lease condition: the chat has an owner whose runner heartbeat is fresher than `$2`
/// seconds (`c` is the chat).
macro_rules! live_lease {
    () => {
        "c.worker_id IS NOT NULL AND c.runner_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM chat_heartbeats h
             WHERE h.chat_id = c.id AND h.runner_id = c.runner_id
               AND h.heartbeat_at > now() - make_interval(secs => $2))"
    };
}

#[async_trait]
impl ChatTx for PgConnection {
    async fn lock_and_bump(&mut self, chat_id: Uuid) -> Result<Option<Locked>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE chats SET snapshot_version = snapshot_version + 1 WHERE id = $1
             RETURNING status::text AS status, archived, worker_id, runner_id, history_version,
                       generation_attempt, dynamic_tools",
        )
        .bind(chat_id)
        .fetch_optional(&mut *self)
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
        .bind(stale_after.as_secs_f64())
        .fetch_optional(&mut *self)
        .await?;
        Ok(acquirable == Some(true))
    }

    async fn lease_is_live(
        &mut self,
        chat_id: Uuid,
        runner_id: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chat_heartbeats
                             WHERE chat_id = $1 AND runner_id = $2
                               AND heartbeat_at > now() - make_interval(secs => $3))",
        )
        .bind(chat_id)
        .bind(runner_id)
        .bind(stale_after.as_secs_f64())
        .fetch_one(&mut *self)
        .await?)
    }

    async fn insert_chat(&mut self, new: &NewChat) -> Result<Uuid, StoreError> {
        Ok(sqlx::query_scalar(
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
        .fetch_one(&mut *self)
        .await?)
    }

    async fn fetch_chat(&mut self, chat_id: Uuid) -> Result<Chat, StoreError> {
        fetch_chat(self, chat_id).await
    }

    async fn write(&mut self, chat_id: Uuid, write: ChatWrite<'_>) -> Result<u64, StoreError> {
        let conn = &mut *self;
        let query = match write {
            ChatWrite::Status(status) => {
                sqlx::query("UPDATE chats SET status = $2::chat_status WHERE id = $1")
                    .bind(chat_id)
                    .bind(status.as_str())
            }
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
            ChatWrite::Deadline(after) => sqlx::query(
                "UPDATE chats SET requires_action_deadline_at = now() + make_interval(secs => $2)
                  WHERE id = $1",
            )
            .bind(chat_id)
            .bind(after.map(|d| d.as_secs_f64())),
            ChatWrite::CompactionRequested(requested) => sqlx::query(
                "UPDATE chats SET compaction_requested_at = CASE WHEN $2 THEN now() END WHERE id = $1",
            )
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
                sqlx::query(
                    "INSERT INTO chat_heartbeats (chat_id, runner_id, heartbeat_at) VALUES ($1, $2, now())
                     ON CONFLICT (chat_id, runner_id) DO UPDATE SET heartbeat_at = now()",
                )
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
            ChatWrite::RetryState(state) => sqlx::query(
                "UPDATE chats SET retry_state = $2,
                        retry_window_started_at = CASE WHEN $2 IS NULL THEN retry_window_started_at
                                                       ELSE COALESCE(retry_window_started_at, now()) END
                  WHERE id = $1",
            )
            .bind(chat_id)
            .bind(state),
            ChatWrite::RetryWindow(start) => {
                sqlx::query("UPDATE chats SET retry_window_started_at = $2 WHERE id = $1")
                    .bind(chat_id)
                    .bind(start)
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
            ChatWrite::Touch => {
                sqlx::query("UPDATE chats SET updated_at = now() WHERE id = $1").bind(chat_id)
            }
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
        Ok(sqlx::query_scalar(
            "SELECT role FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted",
        )
        .bind(message_id)
        .bind(chat_id)
        .fetch_optional(&mut *self)
        .await?)
    }

    async fn insert_message(
        &mut self,
        chat_id: Uuid,
        message: &NewMessage,
        queued_message_id: Option<i64>,
    ) -> Result<Message, StoreError> {
        insert_message(self, chat_id, message, queued_message_id).await
    }

    async fn soft_delete_from(
        &mut self,
        chat_id: Uuid,
        first_id: i64,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE chat_messages SET deleted = true
              WHERE chat_id = $1 AND id >= $2 AND NOT deleted RETURNING id",
        )
        .bind(chat_id)
        .bind(first_id)
        .fetch_all(&mut *self)
        .await?)
    }

    async fn open_calls(&mut self, chat_id: Uuid) -> Result<Vec<OpenCall>, StoreError> {
        open_calls(self, chat_id).await
    }

    async fn queue_len(&mut self, chat_id: Uuid) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM chat_queued_messages WHERE chat_id = $1")
                .bind(chat_id)
                .fetch_one(&mut *self)
                .await?,
        )
    }

    async fn queued_exists(&mut self, chat_id: Uuid, id: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chat_queued_messages WHERE id = $1 AND chat_id = $2)",
        )
        .bind(id)
        .bind(chat_id)
        .fetch_one(&mut *self)
        .await?)
    }

    async fn queue_head(&mut self, chat_id: Uuid) -> Result<Option<QueuedMessage>, StoreError> {
        let head: Option<QueuedRow> = sqlx::query_as(concat!(
            "SELECT ",
            queued_columns!(),
            " FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id LIMIT 1"
        ))
        .bind(chat_id)
        .fetch_optional(&mut *self)
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
            "INSERT INTO chat_queued_messages (chat_id, content, model_config_id, reasoning_effort, created_by)
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            queued_columns!()
        ))
        .bind(chat_id)
        .bind(json(&message.content)?)
        .bind(message.model_config_id)
        .bind(reasoning_effort)
        .bind(message.created_by.unwrap_or_default())
        .fetch_one(&mut *self)
        .await?;
        row.decode()
    }

    async fn delete_queued(&mut self, chat_id: Uuid, id: Option<i64>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM chat_queued_messages WHERE chat_id = $1 AND ($2::bigint IS NULL OR id = $2)",
        )
        .bind(chat_id)
        .bind(id)
        .execute(&mut *self)
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
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn publish(&mut self, notification: Notification) -> Result<(), StoreError> {
        notify(self, &notification).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_chat(&self, new: NewChat) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let applied = self.rules().create_chat(&mut *tx, &new).await?;
        tx.commit().await?;
        Ok(applied)
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
        let rows: Vec<QueuedRow> = sqlx::query_as(concat!(
            "SELECT ",
            queued_columns!(),
            " FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id"
        ))
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
        let queue: Vec<QueuedRow> = sqlx::query_as(concat!(
            "SELECT ",
            queued_columns!(),
            " FROM chat_queued_messages WHERE chat_id = $1 ORDER BY position, id"
        ))
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
            let result: Result<Applied, StoreError> = async {
                let mut tx = self.pool.begin().await?;
                let applied = self
                    .rules()
                    .apply(&mut *tx, chat_id, &change, fence)
                    .await?;
                tx.commit().await?;
                Ok(applied)
            }
            .await;
            match result {
                Err(err) if err.is_retryable_conflict() && attempt < TRANSACTION_ATTEMPTS => {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn acquisition_candidates(&self, limit: i64) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(candidates!())
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
        let acquired = self
            .rules()
            .acquire(&mut *tx, chat_id, worker_id, runner_id)
            .await?;
        // Not acquirable: dropping the transaction rolls the bump back.
        if acquired.is_some() {
            tx.commit().await?;
        }
        Ok(acquired)
    }

    async fn acquire_batch(&self, worker_id: Uuid, limit: i64) -> Result<Vec<Chat>, StoreError> {
        let stale = self.stale_secs();
        let mut tx = self.lease_pool.begin().await?;
        // Lock the candidates that no other acquirer holds; a chat another replica is acquiring
        // is skipped, not waited for.
        let locked: Vec<Uuid> =
            sqlx::query_scalar(concat!(candidates!(), " FOR UPDATE OF c SKIP LOCKED"))
                .bind(limit)
                .bind(stale)
                .fetch_all(&mut *tx)
                .await?;
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        // A separate statement after the lock, so a lease committed by a competing acquirer
        // before the lock was taken is seen (the locking statement's snapshot may predate it).
        let acquirable: Vec<Uuid> = sqlx::query_scalar(concat!(
            "SELECT c.id FROM chats c, unnest($1::uuid[]) WITH ORDINALITY AS l(id, ord)
              WHERE c.id = l.id AND NOT c.archived
                AND c.status IN ('interrupting', 'requires_action', 'running')
                AND NOT (",
            live_lease!(),
            ")
              ORDER BY l.ord"
        ))
        .bind(&locked)
        .bind(stale)
        .fetch_all(&mut *tx)
        .await?;
        let runners: Vec<Uuid> = acquirable.iter().map(|_| Uuid::new_v4()).collect();
        let rows: Vec<ChatRow> = sqlx::query_as(concat!(
            "UPDATE chats SET snapshot_version = snapshot_version + 1, worker_id = $3,
                              runner_id = r.new_runner
               FROM unnest($1::uuid[], $2::uuid[]) AS r(chat_id, new_runner)
              WHERE chats.id = r.chat_id
             RETURNING ",
            chat_columns!()
        ))
        .bind(&acquirable)
        .bind(&runners)
        .bind(worker_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO chat_heartbeats (chat_id, runner_id, heartbeat_at)
             SELECT chat_id, runner_id, now() FROM unnest($1::uuid[], $2::uuid[]) AS r(chat_id, runner_id)
             ON CONFLICT (chat_id, runner_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&acquirable)
        .bind(&runners)
        .execute(&mut *tx)
        .await?;
        let mut chats: Vec<Chat> = rows
            .into_iter()
            .map(ChatRow::decode)
            .collect::<Result<_, _>>()?;
        // Candidate order (RETURNING has none).
        chats.sort_by_key(|c| acquirable.iter().position(|id| *id == c.id));
        // Each chat's update; none needs an ownership hint, every one has a live lease now.
        let (channels, payloads): (Vec<&str>, Vec<String>) = chats
            .iter()
            .filter_map(|c| channel_payload(&Notification::ChatUpdate(ChatUpdate::from_chat(c))))
            .unzip();
        sqlx::query("SELECT pg_notify(n.channel, n.payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)")
            .bind(&channels)
            .bind(&payloads)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(chats)
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
        .fetch_all(&self.lease_pool)
        .await?)
    }

    async fn running_chats(&self, owner_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(crate::store::RUNNING_CHATS)
            .bind(owner_id)
            .fetch_one(&self.pool)
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
        // Fenced: a runner records (and so dispatches) a call only while it holds the chat's
        // live lease; a call without a runner is not fenced.
        let inserted = sqlx::query(
            "INSERT INTO chat_tool_executions (chat_id, tool_call_id, tool_name, args_sha256, state, runner_id)
             SELECT $1, $2, $3, $4, 'dispatched', $5
              WHERE $5::uuid IS NULL OR EXISTS (
                    SELECT 1 FROM chats c JOIN chat_heartbeats h
                        ON h.chat_id = c.id AND h.runner_id = c.runner_id
                     WHERE c.id = $1 AND c.runner_id = $5
                       AND h.heartbeat_at > now() - make_interval(secs => $6))
             ON CONFLICT (chat_id, tool_call_id) DO NOTHING",
        )
        .bind(chat_id)
        .bind(tool_call_id)
        .bind(tool_name)
        .bind(args_sha256)
        .bind(runner_id)
        .bind(self.stale_secs())
        .execute(&self.pool)
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
        if let Some(runner_id) = runner_id {
            let owned: bool = sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM chats c WHERE c.id = $1 AND c.runner_id = $3 AND ",
                live_lease!(),
                ")"
            ))
            .bind(chat_id)
            .bind(self.stale_secs())
            .bind(runner_id)
            .fetch_one(&self.pool)
            .await?;
            if !owned {
                return Err(StoreError::FenceMismatch(crate::store::LEASE_NOT_HELD));
            }
        }
        let row: ToolExecutionRow = sqlx::query_as(concat!(
            "SELECT ",
            tool_execution_columns!(),
            " FROM chat_tool_executions WHERE chat_id = $1 AND tool_call_id = $2"
        ))
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
        .bind(json(result)?)
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
        crate::rows::message_page(rows, page.limit, forwards)
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
        notify(
            &mut conn,
            &Notification::ChatUpdate(ChatUpdate::from_chat(&chat)),
        )
        .await?;
        Ok(chat)
    }

    async fn unbind_workspace(&self, chat_id: Uuid) -> Result<Chat, StoreError> {
        self.rebind(chat_id, ChatWrite::Unbind)
            .await?
            .ok_or(StoreError::ChatNotFound(chat_id))
    }
}

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
