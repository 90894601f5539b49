//! The `Store` trait: every read and write the rest of chatd makes, backend-neutral.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chatstate::{BusyBehavior, Transition};
use uuid::Uuid;

use crate::StoreError;
use crate::types::{Chat, Fence, Message, NewChat, NewMessage, QueuedMessage, ToolExecution};

/// A client's result for one pending dynamic tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResultInput {
    /// The call answered.
    pub tool_call_id: String,
    /// The result as JSON text (must parse).
    pub output: String,
    /// The tool failed.
    pub is_error: bool,
}

/// [`Store::running_chats`], the same SQL on both backends.
pub(crate) const RUNNING_CHATS: &str =
    "SELECT count(*) FROM chats WHERE owner_id = $1 AND status IN ('running', 'interrupting')";

/// A state change of a chat: a `chatstate` transition with the data it writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A user message (queued or inserted by state).
    SendMessage {
        /// The message (role user).
        message: NewMessage,
        /// What to do when the chat is busy.
        busy: BusyBehavior,
        /// Reasoning effort for its turn.
        reasoning_effort: Option<String>,
    },
    /// Replace a user message and everything after it.
    EditMessage {
        /// The user message replaced.
        message_id: i64,
        /// The replacement.
        replacement: NewMessage,
    },
    /// Remove a queued message.
    DeleteQueuedMessage {
        /// The queued message.
        queued_message_id: i64,
    },
    /// Move a queued message to the head and make it the next turn.
    PromoteQueuedMessage {
        /// The queued message.
        queued_message_id: i64,
    },
    /// Archive or unarchive.
    SetArchived(bool),
    /// The user pressed Stop.
    Interrupt,
    /// Client results for the pending dynamic calls.
    CompleteRequiresAction {
        /// One per pending call.
        results: Vec<ToolResultInput>,
    },
    /// Ask for a manual compaction.
    RequestCompaction,
    /// Start a fresh context.
    ClearContext,
    /// Repair an invalid chat.
    ReconcileInvalidState,
    /// A worker takes ownership.
    Acquire {
        /// The worker.
        worker_id: Uuid,
        /// A fresh runner id for this acquisition.
        runner_id: Uuid,
    },
    /// The owner lets go.
    Abandon,
    /// A worker starts an action.
    RecordGenerationAttempt,
    /// A worker stores a scheduled retry (`RetryEvent` JSON).
    RecordRetryState {
        /// The payload.
        retry_state: serde_json::Value,
        /// A parked turn's retry window restarts when it resumes (spec/chatretry.md §11.3);
        /// `None` opens the window now if it is not open.
        window_restarts_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A worker commits a step.
    CommitStep {
        /// The step's rows (at least one).
        messages: Vec<NewMessage>,
        /// Clear the manual compaction marker too.
        consume_compaction: bool,
    },
    /// The model called dynamic tools.
    EnterRequiresAction,
    /// The worker finalised an interrupted turn.
    FinishInterruption {
        /// The partial assistant/tool suffix; afterwards no call may be unanswered.
        partial: Vec<NewMessage>,
    },
    /// The turn is complete.
    FinishTurn,
    /// The turn failed (`ChatError` JSON).
    FinishError {
        /// The payload.
        error: serde_json::Value,
    },
    /// The client did not answer in time.
    CancelRequiresAction,
}

impl Change {
    /// The `chatstate` transition this change is.
    pub fn transition(&self) -> Transition {
        match self {
            Self::SendMessage { busy, .. } => Transition::SendMessage(*busy),
            Self::EditMessage { .. } => Transition::EditMessage,
            Self::DeleteQueuedMessage { .. } => Transition::DeleteQueuedMessage,
            Self::PromoteQueuedMessage { .. } => Transition::PromoteQueuedMessage,
            Self::SetArchived(archived) => Transition::SetArchived(*archived),
            Self::Interrupt => Transition::Interrupt,
            Self::CompleteRequiresAction { .. } => Transition::CompleteRequiresAction,
            Self::RequestCompaction => Transition::RequestCompaction,
            Self::ClearContext => Transition::ClearContext,
            Self::ReconcileInvalidState => Transition::ReconcileInvalidState,
            Self::Acquire { .. } => Transition::Acquire,
            Self::Abandon => Transition::Abandon,
            Self::RecordGenerationAttempt => Transition::RecordGenerationAttempt,
            Self::RecordRetryState { .. } => Transition::RecordRetryState,
            Self::CommitStep {
                consume_compaction, ..
            } => Transition::CommitStep {
                consume_compaction: *consume_compaction,
            },
            Self::EnterRequiresAction => Transition::EnterRequiresAction,
            Self::FinishInterruption { .. } => Transition::FinishInterruption,
            Self::FinishTurn => Transition::FinishTurn,
            Self::FinishError { .. } => Transition::FinishError,
            Self::CancelRequiresAction => Transition::CancelRequiresAction,
        }
    }
}

/// What an applied change wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The chat after the change.
    pub chat: Chat,
    /// History rows inserted, in order.
    pub inserted: Vec<Message>,
    /// The queued row created, if the message was queued.
    pub queued: Option<QueuedMessage>,
    /// Rows soft-deleted (an edit).
    pub deleted_message_ids: Vec<i64>,
}

/// A consistent view of a chat: the row, its history and its queue read in one read-only
/// `REPEATABLE READ` transaction (spec/engine.md §3 `ReadLock`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSnapshot {
    /// The chat row.
    pub chat: Chat,
    /// History rows: live ones, plus soft-deleted ones whose revision is newer than the
    /// `deleted_since` revision asked for (the stream loop needs them to detect resets).
    pub history: Vec<Message>,
    /// The queue, head first.
    pub queue: Vec<QueuedMessage>,
}

/// Timing knobs of the store (spec/engine.md §18), defaults equal to the spec's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `worker.lease_stale_after`: a heartbeat older than this is stale (30 s).
    pub lease_stale_after: Duration,
    /// `chat.requires_action_timeout`: deadline of dynamic tool calls (5 min).
    pub requires_action_timeout: Duration,
    /// Largest message content, in bytes of JSON (1 MiB).
    pub max_message_bytes: usize,
    /// `chat.max_queue`: most messages waiting in a chat's queue (20).
    pub max_queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            lease_stale_after: Duration::from_secs(30),
            requires_action_timeout: Duration::from_secs(5 * 60),
            max_message_bytes: 1024 * 1024,
            max_queue: chatstate::MAX_QUEUE,
        }
    }
}

/// Why a fenced ledger entry was refused: the runner does not hold the chat's live lease.
pub const LEASE_NOT_HELD: &str = "the runner does not hold the chat's live lease";

/// Every read and write of chat state. Implemented by both backends; the contract tests in
/// `tests/` are written against this trait. `Debug` so that whatever holds a `dyn Store` (or a
/// `dyn Database`) can derive its own.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a chat (N → R0) with its first user message.
    async fn create_chat(&self, new: NewChat) -> Result<Applied, StoreError>;

    /// Reads a chat.
    async fn chat(&self, id: Uuid) -> Result<Chat, StoreError>;

    /// The chat's history in id order; soft-deleted rows only with `include_deleted`.
    async fn history(
        &self,
        chat_id: Uuid,
        include_deleted: bool,
    ) -> Result<Vec<Message>, StoreError>;

    /// The chat's queue, head first.
    async fn queue(&self, chat_id: Uuid) -> Result<Vec<QueuedMessage>, StoreError>;

    /// The chat, its history with `revision > since_revision` (deleted rows included) and its
    /// queue, read consistently in one read-only snapshot. `since_revision` 0 reads the whole
    /// live history.
    async fn snapshot(
        &self,
        chat_id: Uuid,
        since_revision: i64,
    ) -> Result<ChatSnapshot, StoreError>;

    /// Applies a change in one transaction: lock and bump, check the fence (worker-side changes
    /// must pass one), plan with `chatstate`, write, notify on commit.
    async fn apply(
        &self,
        chat_id: Uuid,
        change: Change,
        fence: Option<Fence>,
    ) -> Result<Applied, StoreError>;

    /// Chats a worker may acquire: runnable, unarchived, and unowned or with a stale lease;
    /// interrupting first, then requires_action, then running, oldest first.
    async fn acquisition_candidates(&self, limit: i64) -> Result<Vec<Uuid>, StoreError>;

    /// Acquires a candidate after re-checking it under the row lock; `None` when it is no
    /// longer acquirable.
    async fn acquire(
        &self,
        chat_id: Uuid,
        worker_id: Uuid,
        runner_id: Uuid,
    ) -> Result<Option<Chat>, StoreError>;

    /// Acquires up to `limit` candidates at once, in candidate order, each with a new runner
    /// id (the returned chat's `runner_id`) and a fresh lease, in one transaction that takes
    /// only chats no other acquirer holds at that moment; the same checks as
    /// [`acquire`](Self::acquire) apply to each. An empty result means nothing was acquirable.
    async fn acquire_batch(&self, worker_id: Uuid, limit: i64) -> Result<Vec<Chat>, StoreError>;

    /// Renews the leases of this worker's runners that are still current and fresh; returns the
    /// renewed `(chat_id, runner_id)` pairs. A stale lease is never revived.
    async fn heartbeat(
        &self,
        worker_id: Uuid,
        runners: &[(Uuid, Uuid)],
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError>;

    /// Deletes stale heartbeat rows; returns how many.
    async fn cleanup_heartbeats(&self) -> Result<u64, StoreError>;

    /// How many of a user's chats are running or being interrupted (archived ones too).
    async fn running_chats(&self, owner_id: Uuid) -> Result<i64, StoreError>;

    /// Binds the chat to a workspace and one of its builds and clears the bound agent (the next
    /// workspace tool resolves the new build's agent). A metadata write, not a transition: no
    /// version is bumped; a chat update is published at the unchanged snapshot, for the owner's
    /// watchers (spec/chattool.md §2.6). Returns the updated chat.
    async fn bind_workspace(
        &self,
        chat_id: Uuid,
        workspace_id: Uuid,
        build_id: Uuid,
    ) -> Result<Chat, StoreError>;

    /// Binds the chat to an agent of one of its workspace's builds (the agent its workspace tools
    /// talk to, spec/recovery.md §2–§3), provided the chat is still bound to
    /// `expected_workspace_id`. A metadata write like [`Store::bind_workspace`] (published the
    /// same way). Returns the updated chat, or `None` when the chat's
    /// workspace is no longer the expected one (the binding raced with a workspace change).
    async fn bind_agent(
        &self,
        chat_id: Uuid,
        expected_workspace_id: Uuid,
        build_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Chat>, StoreError>;

    /// Records that a side-effecting tool call is being dispatched (spec/chattool.md §10.2).
    /// `None` = this is the first dispatch (a `dispatched` row was inserted); `Some` = the call
    /// was seen before, and its row is returned unchanged. With a `runner_id`, fenced: unless
    /// that runner owns the chat with a live lease, nothing is written and the answer is
    /// [`StoreError::FenceMismatch`] ([`LEASE_NOT_HELD`]).
    async fn begin_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        tool_name: &str,
        args_sha256: &[u8],
        runner_id: Option<Uuid>,
    ) -> Result<Option<ToolExecution>, StoreError>;

    /// Records a tool call's result (`{"content", "is_error"}`); not fenced by runner.
    async fn complete_tool_execution(
        &self,
        chat_id: Uuid,
        tool_call_id: &str,
        result: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Deletes ledger rows dispatched longer than `older_than` ago; returns how many.
    async fn purge_tool_executions(&self, older_than: Duration) -> Result<u64, StoreError>;

    /// One page of a user's chats (spec/engine.md §16 `ListChats`), pinned first (highest
    /// `pin_order`), then most recently updated, then by id; `query.limit` rows at most.
    async fn list_chats(&self, query: &ChatListQuery) -> Result<Vec<Chat>, StoreError>;

    /// A page of a chat's visible history (not deleted, not model-only), in ascending id order,
    /// and whether more rows lie beyond it in the page's direction.
    async fn messages_page(
        &self,
        chat_id: Uuid,
        page: &MessagePage,
    ) -> Result<(Vec<Message>, bool), StoreError>;

    /// Writes the metadata a user may change directly (title, pin order, labels); a metadata
    /// write like [`Store::bind_workspace`], but it bumps `updated_at` and publishes a chat
    /// update at the unchanged snapshot (for watchers of the owner). Returns the chat.
    async fn update_chat_metadata(
        &self,
        chat_id: Uuid,
        metadata: &ChatMetadata,
    ) -> Result<Chat, StoreError>;

    /// Removes the chat's workspace binding (workspace, build and agent). A metadata write,
    /// published like [`Store::bind_workspace`].
    async fn unbind_workspace(&self, chat_id: Uuid) -> Result<Chat, StoreError>;
}

/// Which chats [`Store::list_chats`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatListQuery {
    /// Whose chats.
    pub owner_id: Uuid,
    /// Only this organization's.
    pub organization_id: Option<Uuid>,
    /// Archived chats (true) or the others (false).
    pub archived: bool,
    /// Only chats carrying all of these labels with these values.
    pub labels: BTreeMap<String, String>,
    /// Case-insensitive substring of the title (empty = any).
    pub title_query: String,
    /// Start after this position (from the previous page's last chat).
    pub after: Option<ChatCursor>,
    /// Most chats to return.
    pub limit: i64,
}

/// A position in the chat listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatCursor {
    /// The chat's pin order.
    pub pin_order: i32,
    /// Its `updated_at`, in microseconds since the Unix epoch (the database's precision).
    pub updated_at_micros: i64,
    /// Its id.
    pub id: Uuid,
}

impl ChatCursor {
    /// The position of `chat`.
    pub fn of(chat: &Chat) -> Self {
        Self {
            pin_order: chat.pin_order,
            updated_at_micros: chat.updated_at.timestamp_micros(),
            id: chat.id,
        }
    }

    /// The cursor as an opaque page token.
    pub fn encode(&self) -> String {
        format!(
            "c1.{}.{}.{}",
            self.pin_order,
            self.updated_at_micros,
            self.id.simple()
        )
    }

    /// Reads a page token written by [`ChatCursor::encode`]; `None` when it is not one.
    pub fn decode(token: &str) -> Option<Self> {
        let mut fields = token.strip_prefix("c1.")?.split('.');
        let cursor = Self {
            pin_order: fields.next()?.parse().ok()?,
            updated_at_micros: fields.next()?.parse().ok()?,
            id: Uuid::try_parse(fields.next()?).ok()?,
        };
        fields.next().is_none().then_some(cursor)
    }
}

/// Which history rows [`Store::messages_page`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePage {
    /// Only rows with a lower id.
    pub before_id: Option<i64>,
    /// Only rows with a higher id. With `after_id` the page runs forwards from it; otherwise it
    /// runs backwards from `before_id` (or from the newest row).
    pub after_id: Option<i64>,
    /// Most rows to return.
    pub limit: i64,
}

/// Metadata a user writes directly; `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMetadata {
    /// New title.
    pub title: Option<String>,
    /// New pin order (0 unpins).
    pub pin_order: Option<i32>,
    /// New labels, replacing the old ones.
    pub labels: Option<BTreeMap<String, String>>,
}
