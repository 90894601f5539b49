//! What a tool call runs with (spec/chattool.md §1–§3): the chat and its owner, the store and its
//! notifications, the workspace provisioner, the per-chat workspace mutex, the workspace
//! connection resolver, the deployment settings and the binding callback.
//!
//! Every service is optional so a deployment (or a test) can leave one out; a tool that needs a
//! missing one answers with the spec's "not configured" text instead of failing.

use std::sync::Arc;
use std::time::Duration;

use agentselect::ChatSuffix;
use async_trait::async_trait;
use chatstore::prelude::*;
use chatstore::pubsub::Pubsub;
use chatstore::types::Chat;
use uuid::Uuid;

use crate::builds::WorkspaceBuilds;
use crate::conn::WorkspaceConn;
use crate::wait::{AgentDialer, WaitSettings, Waits};

/// The text returned when the chat has no workspace (spec/chattool.md §2.7).
pub const NO_WORKSPACE: &str = "this tool requires a workspace and this chat does not have one.";
/// The text returned when no resolver is configured.
pub const NO_RESOLVER: &str = "workspace connection resolver is not configured";
/// The text returned by the template tools without a database.
pub const NO_DATABASE: &str = "database is not configured";

/// Resolves the chat's workspace connection (the engine's implementation applies the dial
/// timeout and the two-signal recovery gate of spec/recovery.md).
#[async_trait]
pub trait WorkspaceResolver: Send + Sync {
    /// The connection, or the text the tool returns verbatim as a text error
    /// ([`NO_WORKSPACE`] or a recovery sentinel).
    async fn connect(&self, chat_id: Uuid) -> Result<Arc<dyn WorkspaceConn>, String>;
}

/// Whether the dispatching runner can still prove it owns the chat (its lease has not lapsed
/// since the database last confirmed it). A tool asks before every dispatch that can touch a
/// workspace: a replica cut off from the database must not act for a chat another replica may
/// have taken over.
pub trait LeaseCheck: Send + Sync {
    /// `true` while the lease is provably held.
    fn holds(&self) -> bool;
}

/// The tool result of a call not dispatched because the lease could not be proven.
pub const LEASE_LOST: &str = "not run: this chatd replica can no longer prove it owns the chat (its lease could not be renewed in time); another replica takes the chat over";

/// Told when a tool changed the chat's workspace binding (§2.6), and again after readiness; the
/// engine publishes a `status_change` watch event on the owner's channel.
pub trait BindingListener: Send + Sync {
    /// The chat after the change.
    fn binding_changed(&self, chat: &Chat);
}

impl<F: Fn(&Chat) + Send + Sync> BindingListener for F {
    fn binding_changed(&self, chat: &Chat) {
        self(chat);
    }
}

/// Deployment settings of the tools (spec/chattool.md §3, §2.4, §10); defaults are the spec's.
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
    /// `tools.template_allowlist`: empty = every template is allowed.
    pub template_allowlist: Vec<Uuid>,
    /// `tools.workspace_ttl`: passed to new workspaces when set; `None` = the template default.
    pub workspace_ttl: Option<Duration>,
    /// `workspace.agent_inactive_disconnect_timeout` (30 s): when a silent agent counts as
    /// disconnected.
    pub agent_inactive_timeout: Duration,
    /// The chat-agent suffix (`-chat`).
    pub chat_suffix: ChatSuffix,
    /// Build and readiness waits.
    pub waits: WaitSettings,
    /// `tools.files.confine` (true): file tools stay inside the workspace roots.
    pub files_confine: bool,
    /// `tools.files.extra_roots`: roots besides the agent's working directory (e.g. `/tmp`).
    pub files_extra_roots: Vec<String>,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            execute_default_timeout: Duration::from_secs(10),
            execute_max_timeout: Duration::from_secs(4 * 3600),
            process_output_default_wait: Duration::from_secs(10),
            snapshot_timeout: Duration::from_secs(30),
            output_cap: 32 * 1024,
            template_allowlist: Vec::new(),
            workspace_ttl: None,
            agent_inactive_timeout: Duration::from_secs(30),
            chat_suffix: ChatSuffix::default(),
            waits: WaitSettings::default(),
            files_confine: true,
            files_extra_roots: Vec::new(),
        }
    }
}

impl ToolSettings {
    /// Whether the allow-list admits the template id (an empty list admits every one).
    pub fn listed(&self, template_id: Uuid) -> bool {
        self.template_allowlist.is_empty() || self.template_allowlist.contains(&template_id)
    }

    /// Whether chats may use the template (§2.4: the allow-list, then `chat_enabled`).
    pub fn allows(&self, template: &chatstore::templates::Template) -> bool {
        template.chat_enabled && self.listed(template.id)
    }
}

/// The chat a tool call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatScope {
    /// The chat; scopes processes and idempotency keys in the agent.
    pub id: Uuid,
    /// Its owner; workspaces are created with the owner's authority.
    pub owner_id: Uuid,
    /// Its organization; templates of other organizations are refused.
    pub organization_id: Uuid,
}

/// One tool call's context. Clone it for each call of a step: clones share the workspace mutex.
#[derive(Clone)]
pub struct ToolContext {
    /// The chat.
    pub chat: ChatScope,
    /// The call's key, unique within the chat: the idempotency key of side-effecting tools in
    /// the ledger and the agent. The engine scopes the model's call id by the message that made
    /// the call, since providers' ids may be missing or reused.
    pub tool_call_id: String,
    /// The runner dispatching the call (recorded in the ledger).
    pub runner_id: Option<Uuid>,
    /// The store; `None` = no database.
    pub store: Option<Arc<dyn Database>>,
    /// Change notifications of the store (build and readiness waits).
    pub pubsub: Option<Arc<dyn Pubsub>>,
    /// Creates, starts and stops workspaces; `None` = not configured.
    pub builds: Option<Arc<dyn WorkspaceBuilds>>,
    /// Dials an agent for readiness phase 1; `None` skips the dial (phase 2 still runs).
    pub dialer: Option<Arc<dyn AgentDialer>>,
    /// The chat's workspace connection; `None` = not configured.
    pub resolver: Option<Arc<dyn WorkspaceResolver>>,
    /// The per-chat workspace mutex (§2.5), shared by every call of the chat.
    pub workspace_lock: Arc<tokio::sync::Mutex<()>>,
    /// Deployment settings.
    pub settings: Arc<ToolSettings>,
    /// Told when the chat's workspace binding changes.
    pub on_binding: Option<Arc<dyn BindingListener>>,
    /// Kicked after each successful round-trip of `execute` and `process_output` to the agent
    /// and at each look of a build or readiness wait, so a long command or build does not trip
    /// the task's idle watchdog (spec/engine.md §11).
    pub on_progress: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The dispatching runner's lease; `None` = not checked (no engine).
    pub lease: Option<Arc<dyn LeaseCheck>>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("chat", &self.chat)
            .field("tool_call_id", &self.tool_call_id)
            .field("runner_id", &self.runner_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// A context with no services and the default settings; set the fields a deployment has.
    pub fn new(chat: ChatScope, tool_call_id: impl Into<String>) -> Self {
        Self {
            chat,
            tool_call_id: tool_call_id.into(),
            runner_id: None,
            store: None,
            pubsub: None,
            builds: None,
            dialer: None,
            resolver: None,
            workspace_lock: Arc::default(),
            settings: Arc::default(),
            on_binding: None,
            on_progress: None,
            lease: None,
        }
    }

    /// The same context for another call of the chat (sharing the workspace mutex).
    pub fn for_call(&self, tool_call_id: impl Into<String>) -> Self {
        Self {
            tool_call_id: tool_call_id.into(),
            ..self.clone()
        }
    }

    /// The chat id as the agent's requests carry it.
    pub(crate) fn chat_key(&self) -> String {
        self.chat.id.to_string()
    }

    /// The chat's workspace connection, or the text error to return.
    pub async fn connection(&self) -> Result<Arc<dyn WorkspaceConn>, crate::ToolResult> {
        self.check_lease()?;
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| crate::ToolResult::error(NO_RESOLVER))?;
        resolver
            .connect(self.chat.id)
            .await
            .map_err(crate::ToolResult::error)
    }

    /// `Err` with [`LEASE_LOST`] when the dispatching runner can no longer prove it owns the
    /// chat: asked before every dispatch (a workspace connection, a ledger entry, a build).
    pub fn check_lease(&self) -> Result<(), crate::ToolResult> {
        match &self.lease {
            Some(lease) if !lease.holds() => Err(crate::ToolResult::error(LEASE_LOST)),
            _ => Ok(()),
        }
    }

    /// Build and readiness waits over the store and its notifications, when both are present.
    pub(crate) fn waits(&self) -> Option<Waits> {
        let store: Arc<dyn Database> = self.store.clone()?;
        Some(
            Waits::new(store, self.pubsub.clone()?, self.settings.waits.clone())
                .on_look(self.on_progress.clone()),
        )
    }

    /// Kicks the idle watchdog.
    pub(crate) fn progressed(&self) {
        if let Some(kick) = &self.on_progress {
            kick();
        }
    }

    /// Tells the listener about the chat's new binding.
    pub(crate) fn binding_changed(&self, chat: &Chat) {
        if let Some(listener) = &self.on_binding {
            listener.binding_changed(chat);
        }
    }
}
