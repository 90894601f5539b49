//! Domain types: what the rest of chatd reads and writes through the [`Store`](crate::Store).
//!
//! JSON stored in the database (`content`, `last_error`, `retry_state`) uses the keys of
//! spec/engine.md §15 with omit-empty semantics; changing these types is a migration.

use std::collections::BTreeMap;

use chatstate::ChatStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::names::stored_names;

/// One part of a message's content (spec/engine.md §15.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MessagePart {
    /// Plain text.
    #[serde(rename = "text")]
    Text {
        /// The text.
        text: String,
    },
    /// Model reasoning.
    #[serde(rename = "reasoning")]
    Reasoning {
        /// The reasoning text.
        text: String,
        /// When reasoning started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_at: Option<DateTime<Utc>>,
        /// When reasoning finished.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        completed_at: Option<DateTime<Utc>>,
        /// Internal only (e.g. a reasoning signature); stripped before sending to clients.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<serde_json::Value>,
    },
    /// A tool call made by the model.
    #[serde(rename = "tool-call")]
    ToolCall {
        /// The call's id.
        tool_call_id: String,
        /// The tool's name.
        tool_name: String,
        /// The arguments as raw JSON text.
        #[serde(default)]
        args: String,
        /// Executed by the provider itself.
        #[serde(default, skip_serializing_if = "is_false")]
        provider_executed: bool,
        /// Internal only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<serde_json::Value>,
    },
    /// The result of a tool call.
    #[serde(rename = "tool-result")]
    ToolResult {
        /// The call this answers.
        tool_call_id: String,
        /// The tool's name.
        tool_name: String,
        /// The result as JSON (an error result holds its text as a JSON string).
        result: serde_json::Value,
        /// The tool failed.
        #[serde(default, skip_serializing_if = "is_false")]
        is_error: bool,
        /// Executed by the provider itself.
        #[serde(default, skip_serializing_if = "is_false")]
        provider_executed: bool,
    },
    /// A cited source.
    #[serde(rename = "source")]
    Source {
        /// Provider-assigned id.
        source_id: String,
        /// Where it lives.
        url: String,
        /// Its title.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        title: String,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl MessagePart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// A synthetic error result for a tool call (e.g. a cancellation): `result` is the reason
    /// as a JSON string, `is_error` true.
    pub fn error_result(tool_call_id: &str, tool_name: &str, reason: &str) -> Self {
        Self::ToolResult {
            tool_call_id: tool_call_id.to_owned(),
            tool_name: tool_name.to_owned(),
            result: serde_json::Value::String(reason.to_owned()),
            is_error: true,
            provider_executed: false,
        }
    }

    /// Whether the part carries non-blank user text.
    pub fn has_text(&self) -> bool {
        matches!(self, Self::Text { text } if !text.trim().is_empty())
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person chatting.
    User,
    /// The model.
    Assistant,
    /// Tool results.
    Tool,
}

stored_names!(Role { System => "system", User => "user", Assistant => "assistant", Tool => "tool" });

/// Who sees a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// The UI only.
    User,
    /// The prompt only.
    Model,
    /// Both.
    Both,
}

stored_names!(Visibility { User => "user", Model => "model", Both => "both" });

/// Token usage of a model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageUsage {
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Generated tokens.
    pub output_tokens: i64,
    /// Both.
    pub total_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Prompt tokens written to the cache.
    pub cache_creation_tokens: i64,
    /// Prompt tokens read from the cache.
    pub cache_read_tokens: i64,
    /// The model's context window.
    pub context_limit: i64,
}

/// A committed history row.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Row id.
    pub id: i64,
    /// The chat.
    pub chat_id: Uuid,
    /// Author.
    pub role: Role,
    /// Content, in order.
    pub content: Vec<MessagePart>,
    /// Who sees it.
    pub visibility: Visibility,
    /// The user who wrote it.
    pub created_by: Option<Uuid>,
    /// The model configuration involved.
    pub model_config_id: Option<Uuid>,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// A compaction boundary row.
    pub compressed: bool,
    /// Soft-deleted by an edit.
    pub deleted: bool,
    /// The snapshot of the transaction that last wrote it.
    pub revision: i64,
    /// The queued message it was promoted from.
    pub queued_message_id: Option<i64>,
    /// Usage of the model call that produced it.
    pub usage: Option<MessageUsage>,
}

/// A message to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Author.
    pub role: Role,
    /// Content.
    pub content: Vec<MessagePart>,
    /// Who sees it.
    pub visibility: Visibility,
    /// The user who wrote it.
    pub created_by: Option<Uuid>,
    /// The model configuration involved.
    pub model_config_id: Option<Uuid>,
    /// A compaction boundary.
    pub compressed: bool,
    /// Usage of the model call.
    pub usage: Option<MessageUsage>,
}

impl NewMessage {
    /// A user message with this content, visible to both.
    pub fn user(created_by: Uuid, content: Vec<MessagePart>) -> Self {
        Self {
            role: Role::User,
            content,
            visibility: Visibility::Both,
            created_by: Some(created_by),
            model_config_id: None,
            compressed: false,
            usage: None,
        }
    }

    /// An assistant message.
    pub fn assistant(content: Vec<MessagePart>) -> Self {
        Self {
            role: Role::Assistant,
            created_by: None,
            ..Self::user(Uuid::nil(), content)
        }
    }

    /// A tool message.
    pub fn tool(content: Vec<MessagePart>) -> Self {
        Self {
            role: Role::Tool,
            created_by: None,
            ..Self::user(Uuid::nil(), content)
        }
    }
}

/// A user message waiting in a chat's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    /// Row id.
    pub id: i64,
    /// The chat.
    pub chat_id: Uuid,
    /// Content.
    pub content: Vec<MessagePart>,
    /// Model configuration for its turn.
    pub model_config_id: Option<Uuid>,
    /// Reasoning effort for its turn.
    pub reasoning_effort: Option<String>,
    /// Queue time.
    pub created_at: DateTime<Utc>,
    /// Order within the chat.
    pub position: i64,
    /// The user who sent it.
    pub created_by: Uuid,
}

/// A chat row.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Bound workspace.
    pub workspace_id: Option<Uuid>,
    /// Bound build.
    pub build_id: Option<Uuid>,
    /// Bound agent.
    pub agent_id: Option<Uuid>,
    /// Title.
    pub title: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Pin order (0 = not pinned).
    pub pin_order: i32,
    /// Client-declared tools (JSON array of `{name, description, input_schema}`).
    pub dynamic_tools: Option<serde_json::Value>,
    /// Extra system prompt.
    pub system_prompt: Option<String>,
    /// Model configuration of the latest turn.
    pub last_model_config_id: Uuid,
    /// Reasoning effort of the latest turn.
    pub last_reasoning_effort: Option<String>,
    /// Status.
    pub status: ChatStatus,
    /// Archived.
    pub archived: bool,
    /// `ChatError` JSON when in error.
    pub last_error: Option<serde_json::Value>,
    /// Deadline of pending dynamic calls.
    pub requires_action_deadline_at: Option<DateTime<Utc>>,
    /// A manual compaction was requested.
    pub compaction_requested_at: Option<DateTime<Utc>>,
    /// The scheduled retry (`RetryEvent` JSON).
    pub retry_state: Option<serde_json::Value>,
    /// Start of the current retry window.
    pub retry_window_started_at: Option<DateTime<Utc>>,
    /// Owning worker.
    pub worker_id: Option<Uuid>,
    /// Owning runner.
    pub runner_id: Option<Uuid>,
    /// +1 per transition.
    pub snapshot_version: i64,
    /// Snapshot of the latest history change.
    pub history_version: i64,
    /// Snapshot of the latest queue change.
    pub queue_version: i64,
    /// Attempts under the current history.
    pub generation_attempt: i64,
    /// Snapshot of the latest retry-state change.
    pub retry_state_version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a new chat starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChat {
    /// Organization.
    pub organization_id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Model configuration.
    pub model_config_id: Uuid,
    /// The first user message's content (must contain text).
    pub content: Vec<MessagePart>,
    /// Title; `None` = `New Chat`.
    pub title: Option<String>,
    /// Extra system prompt.
    pub system_prompt: Option<String>,
    /// Workspace to bind.
    pub workspace_id: Option<Uuid>,
    /// Reasoning effort.
    pub reasoning_effort: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Client-executed tools.
    pub dynamic_tools: Option<serde_json::Value>,
}

impl NewChat {
    /// A chat of `owner_id` in `organization_id` on `model_config_id` whose first message is
    /// `content`; no title, system prompt, workspace, labels or client tools (set the fields
    /// for those).
    pub fn new(
        organization_id: Uuid,
        owner_id: Uuid,
        model_config_id: Uuid,
        content: Vec<MessagePart>,
    ) -> Self {
        Self {
            organization_id,
            owner_id,
            model_config_id,
            content,
            title: None,
            system_prompt: None,
            workspace_id: None,
            reasoning_effort: None,
            labels: BTreeMap::new(),
            dynamic_tools: None,
        }
    }
}

/// The checks every worker-side write makes under the row lock (spec/engine.md §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The worker that owns the chat.
    pub worker_id: Uuid,
    /// The runner of this acquisition.
    pub runner_id: Uuid,
    /// The history the task works on; `None` skips the check (e.g. abandoning).
    pub history_version: Option<i64>,
    /// For commits of a model call: the attempt (the generation fence).
    pub generation_attempt: Option<i64>,
}

/// Where a side-effecting tool call stands in the idempotency ledger (spec/chattool.md §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolExecutionState {
    /// Sent to the workspace; the outcome is not recorded (yet).
    Dispatched,
    /// Finished; the result is recorded.
    Completed,
}

stored_names!(ToolExecutionState { Dispatched => "dispatched", Completed => "completed" });

/// A row of the idempotency ledger: one side-effecting tool call of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolExecution {
    /// The chat.
    pub chat_id: Uuid,
    /// The model's id of the call.
    pub tool_call_id: String,
    /// The tool.
    pub tool_name: String,
    /// SHA-256 of the canonical JSON arguments.
    pub args_sha256: Vec<u8>,
    /// Dispatched or completed.
    pub state: ToolExecutionState,
    /// The recorded tool result (`{"content", "is_error"}`) once completed.
    pub result: Option<serde_json::Value>,
    /// The runner that dispatched it.
    pub runner_id: Option<Uuid>,
    /// When it was dispatched (database clock).
    pub dispatched_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A position in a newest-first listing: `(created_at, id)` of the previous page's last row.
pub type NewestFirstCursor = (DateTime<Utc>, Uuid);
