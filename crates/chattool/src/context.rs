//! What a tool call runs with: the chat, its workspace connection resolver and the settings.
//! (The store, pubsub, workspace mutex, allow-list and binding callback join with the
//! workspace-lifecycle tools.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::conn::WorkspaceConn;

/// The text returned when the chat has no workspace (spec/chattool.md §2.7).
pub const NO_WORKSPACE: &str = "this tool requires a workspace and this chat does not have one.";
/// The text returned when no resolver is configured.
pub const NO_RESOLVER: &str = "workspace connection resolver is not configured";

/// Resolves the chat's workspace connection (the engine's implementation applies the dial
/// timeout and the two-signal recovery gate of spec/recovery.md).
#[async_trait]
pub trait WorkspaceResolver: Send + Sync {
    /// The connection, or the text the tool returns verbatim as a text error
    /// ([`NO_WORKSPACE`] or a recovery sentinel).
    async fn connect(&self, chat_id: &str) -> Result<Arc<dyn WorkspaceConn>, String>;
}

/// Timing and limits of the process and file tools (spec/chattool.md §3).
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// `execute`'s timeout when none is given (10 s).
    pub execute_default_timeout: Duration,
    /// `execute`'s largest timeout; longer ones are clamped (4 h).
    pub execute_max_timeout: Duration,
    /// `process_output`'s wait when none is given (10 s).
    pub process_output_default_wait: Duration,
    /// Limit of the snapshot taken after a failed blocking wait (30 s).
    pub snapshot_timeout: Duration,
    /// Most bytes of `output` in a result (32 KiB).
    pub output_cap: usize,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            execute_default_timeout: Duration::from_secs(10),
            execute_max_timeout: Duration::from_secs(4 * 3600),
            process_output_default_wait: Duration::from_secs(10),
            snapshot_timeout: Duration::from_secs(30),
            output_cap: 32 * 1024,
        }
    }
}

/// One tool call's context.
#[derive(Clone)]
pub struct ToolContext {
    /// The chat (UUID text); scopes processes and idempotency keys in the agent.
    pub chat_id: String,
    /// The model's id of this call; the idempotency key of side-effecting tools.
    pub tool_call_id: String,
    /// The chat's workspace connection; `None` = not configured.
    pub resolver: Option<Arc<dyn WorkspaceResolver>>,
    /// Timing and limits.
    pub settings: Arc<ToolSettings>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("chat_id", &self.chat_id)
            .field("tool_call_id", &self.tool_call_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// The chat's workspace connection, or the text error to return.
    pub async fn connection(&self) -> Result<Arc<dyn WorkspaceConn>, crate::ToolResult> {
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| crate::ToolResult::error(NO_RESOLVER))?;
        resolver
            .connect(&self.chat_id)
            .await
            .map_err(crate::ToolResult::error)
    }
}
