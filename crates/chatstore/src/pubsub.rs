//! Notifications are hints (spec/engine.md §10): a receiver re-reads the database when one
//! arrives, and tolerates dropped, duplicated and reordered ones by comparing versions. When
//! hints may have been lost (the listening connection dropped, or a subscriber fell behind), it
//! gets [`Notification::Resync`] and must re-read everything it watches.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::Chat;

/// The global channel of chat updates (logical `chat:update:{chat_id}`; the id is in the payload).
pub const UPDATE_CHANNEL: &str = "chatd_chat_update";
/// The global channel of ownership hints (logical `chat:ownership`).
pub const OWNERSHIP_CHANNEL: &str = "chatd_chat_ownership";
/// The global channel of provisioner job changes (logical `provisioner_job:{job_id}`).
pub const JOB_CHANNEL: &str = "chatd_job_update";
/// The global channel of agent changes (logical `workspace_agent:{agent_id}`).
pub const AGENT_CHANNEL: &str = "chatd_agent_update";

/// Every channel the process listens to.
pub const CHANNELS: [&str; 4] = [
    UPDATE_CHANNEL,
    OWNERSHIP_CHANNEL,
    JOB_CHANNEL,
    AGENT_CHANNEL,
];

/// A provisioner job changed (started, finished, cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The job.
    pub job_id: Uuid,
}

/// An agent changed (connected, lifecycle, disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    /// The agent.
    pub agent_id: Uuid,
}

/// The payload of a chat update: the post-transition values (spec/engine.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdate {
    /// The chat.
    pub chat_id: Uuid,
    /// Its snapshot after the transition.
    pub snapshot_version: i64,
    /// Owner.
    pub worker_id: Option<Uuid>,
    /// Runner.
    pub runner_id: Option<Uuid>,
    /// History version.
    pub history_version: i64,
    /// Queue version.
    pub queue_version: i64,
    /// Retry-state version.
    pub retry_state_version: i64,
    /// Generation attempt.
    pub generation_attempt: i64,
    /// Status.
    pub status: String,
    /// Archived.
    pub archived: bool,
}

impl ChatUpdate {
    /// The update describing `chat`.
    pub fn from_chat(chat: &Chat) -> Self {
        Self {
            chat_id: chat.id,
            snapshot_version: chat.snapshot_version,
            worker_id: chat.worker_id,
            runner_id: chat.runner_id,
            history_version: chat.history_version,
            queue_version: chat.queue_version,
            retry_state_version: chat.retry_state_version,
            generation_attempt: chat.generation_attempt,
            status: chat.status.as_str().to_owned(),
            archived: chat.archived,
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> String {
        // Serialising plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An ownership hint: a runnable chat has no live owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipHint {
    /// The chat.
    pub chat_id: Uuid,
    /// Its snapshot.
    pub snapshot_version: i64,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A chat changed.
    ChatUpdate(ChatUpdate),
    /// A runnable chat needs an owner.
    Ownership(OwnershipHint),
    /// A provisioner job changed.
    Job(JobUpdate),
    /// An agent changed.
    Agent(AgentUpdate),
    /// Hints may have been lost: re-read the database.
    Resync,
}

/// What to listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Updates of one chat.
    Chat(Uuid),
    /// Ownership hints of all chats.
    Ownership,
    /// Changes of one provisioner job.
    Job(Uuid),
    /// Changes of one agent.
    Agent(Uuid),
}
