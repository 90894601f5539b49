//! The workspace side of the store: tenancy, templates, workspaces, builds, provisioner jobs,
//! agents and the replica registry (spec/engine.md §8.6–§8.8), and the agent connection-status
//! rule.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StoreError;
use crate::admin::{
    ApiToken, ModelConfigChanges, ModelConfigRecord, NewModelConfig, NewUser, NewestFirstCursor,
    Organization, Seeded, User, UserChanges, UserListQuery,
};

/// Derived provisioner job status (spec/engine.md §8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "provisioner_job_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Finished without error.
    Succeeded,
    /// Cancellation requested, not finished.
    Canceling,
    /// Cancelled and finished.
    Canceled,
    /// Failed.
    Failed,
    /// Unknown.
    Unknown,
}

impl JobStatus {
    /// `succeeded`, `canceled` or `failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled | Self::Failed)
    }
}

/// A workspace transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "workspace_transition", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceTransition {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Delete.
    Delete,
}

/// An agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "workspace_agent_lifecycle", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AgentLifecycle {
    /// Row created, agent not started.
    Created,
    /// Running its startup script.
    Starting,
    /// The startup script took too long.
    StartTimeout,
    /// The startup script failed.
    StartError,
    /// Ready for work.
    Ready,
    /// Shutting down.
    ShuttingDown,
    /// Shutdown took too long.
    ShutdownTimeout,
    /// Shutdown failed.
    ShutdownError,
    /// Off.
    Off,
}

/// A provisioner job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// `template_version_import` or `workspace_build`.
    pub kind: String,
    /// What the backend needs (e.g. the build id).
    pub input: serde_json::Value,
    /// The provisioner worker that took it.
    pub worker_id: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Taken by a worker.
    pub started_at: Option<DateTime<Utc>>,
    /// Cancellation requested.
    pub canceled_at: Option<DateTime<Utc>>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Failure text; empty when none.
    pub error: String,
    /// Machine-readable failure code (e.g. `INSUFFICIENT_QUOTA`); empty when none.
    pub error_code: String,
    /// Derived status.
    pub status: JobStatus,
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Name (unique per owner among undeleted workspaces).
    pub name: String,
    /// Deleted.
    pub deleted: bool,
    /// Time to live, milliseconds.
    pub ttl_ms: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A build of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Id.
    pub id: Uuid,
    /// Workspace.
    pub workspace_id: Uuid,
    /// 1, 2, ... (latest = highest).
    pub build_number: i32,
    /// What it does.
    pub transition: WorkspaceTransition,
    /// The job that runs it.
    pub job_id: Uuid,
    /// The template version built.
    pub template_version_id: Uuid,
    /// Who asked.
    pub initiator_id: Option<Uuid>,
    /// Parameter values `[{name, value}]`.
    pub parameters: serde_json::Value,
    /// Why it was requested: `initiator`, `chat` or `autostop`.
    pub reason: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A workspace as listings show it: with its owner's and template's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceListing {
    /// The workspace.
    pub workspace: Workspace,
    /// The owner's username.
    pub owner_name: String,
    /// The template's name.
    pub template_name: String,
    /// When the workspace or its builds last changed.
    pub updated_at: DateTime<Utc>,
}

/// Which workspaces [`WorkspaceStore::list_workspaces`] returns, newest first. Deleted
/// workspaces are never listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkspaceListQuery {
    /// Only workspaces of these organizations (an empty list matches nothing).
    pub organization_ids: Vec<Uuid>,
    /// Only this owner's workspaces.
    pub owner_id: Option<Uuid>,
    /// Only workspaces built from this template.
    pub template_id: Option<Uuid>,
    /// Case-insensitive substring of the name; empty = all.
    pub name_query: String,
    /// Only workspaces after this position (the previous page's last).
    pub after: Option<crate::admin::NewestFirstCursor>,
    /// Most workspaces to return.
    pub limit: i64,
}

/// One line of a provisioner job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLog {
    /// Id, increasing within the job.
    pub id: i64,
    /// When the line was written.
    pub created_at: DateTime<Utc>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The build step.
    pub stage: String,
    /// The text.
    pub output: String,
}

/// A workspace agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// The resource (of a build's job) it belongs to.
    pub resource_id: Uuid,
    /// Name.
    pub name: String,
    /// Parent agent (sub-agents).
    pub parent_id: Option<Uuid>,
    /// Display order.
    pub display_order: i32,
    /// Connection timestamps and timeout.
    pub times: AgentTimes,
    /// Lifecycle state.
    pub lifecycle: AgentLifecycle,
    /// Working directory, as the template configures it.
    pub directory: String,
    /// Working directory with variables expanded, as the agent reports it in its heartbeats;
    /// empty until it has.
    pub expanded_directory: String,
    /// Where the control plane dials it.
    pub address: String,
}

/// A template version to store (immutable once stored).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTemplateVersion {
    /// Organization.
    pub organization_id: Uuid,
    /// Template name; the template is created when new.
    pub template_name: String,
    /// Display name of a new template.
    pub display_name: String,
    /// Description of a new template.
    pub description: String,
    /// Version name.
    pub version_name: String,
    /// README (Markdown).
    pub readme: String,
    /// The agent is managed outside chatd.
    pub has_external_agent: bool,
    /// Manifest (startup script, agent settings).
    pub manifest: serde_json::Value,
    /// Files `[{path, content, mode}]`.
    pub files: serde_json::Value,
    /// Parameters.
    pub parameters: Vec<TemplateParameter>,
    /// Presets.
    pub presets: Vec<TemplatePreset>,
    /// Make this version active now.
    pub activate: bool,
    /// Who pushed it.
    pub created_by: Option<Uuid>,
}

/// A template parameter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateParameter {
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// `string`, `number`, `bool`, `list(string)`.
    pub kind: String,
    /// Mutable after creation.
    pub mutable: bool,
    /// Default; `None` = required.
    pub default_value: Option<String>,
    /// Options `[{name, value, description, icon}]`.
    pub options: serde_json::Value,
    /// Display order.
    pub display_order: i32,
    /// How a form shows it (e.g. `dropdown`).
    pub form_type: String,
    /// Only for one build.
    pub ephemeral: bool,
    /// Validation regular expression; empty = none.
    pub validation_regex: String,
    /// Smallest number accepted.
    pub validation_min: Option<i32>,
    /// Largest number accepted.
    pub validation_max: Option<i32>,
    /// Message shown when validation fails.
    pub validation_error: String,
}

/// A template (spec/engine.md §8.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Deleted.
    pub deleted: bool,
    /// Non-empty = deprecated (the text says why).
    pub deprecated: String,
    /// The active version.
    pub active_version_id: Option<Uuid>,
    /// Workspaces must build the active version.
    pub require_active_version: bool,
    /// Chats may create workspaces from it.
    pub chat_enabled: bool,
    /// Default workspace TTL, milliseconds; 0 = none.
    pub default_ttl_ms: i64,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Settings or active version last changed.
    pub updated_at: DateTime<Utc>,
}

/// A template in a listing, with the number of distinct owners of its live workspaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateListing {
    /// The template.
    pub template: Template,
    /// Distinct owners of its non-deleted workspaces.
    pub active_developers: i64,
}

/// An immutable template version with its parameters and presets.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    /// Id.
    pub id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Name.
    pub name: String,
    /// Description of the change, given at push time.
    pub message: String,
    /// README.
    pub readme: String,
    /// Import job.
    pub job_id: Uuid,
    /// The agent is managed outside chatd.
    pub has_external_agent: bool,
    /// Manifest.
    pub manifest: serde_json::Value,
    /// Files (`null` when read by [`WorkspaceStore::list_template_versions`]).
    pub files: serde_json::Value,
    /// Who pushed it.
    pub created_by: Option<Uuid>,
    /// Pushed.
    pub created_at: DateTime<Utc>,
    /// Parameters in display order.
    pub parameters: Vec<TemplateParameter>,
    /// Presets with their ids.
    pub presets: Vec<(Uuid, TemplatePreset)>,
}

/// Template settings an administrator changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateSettings {
    /// Require the active version.
    pub require_active_version: Option<bool>,
    /// Allow chats to use it.
    pub chat_enabled: Option<bool>,
    /// Deprecation message (empty = not deprecated).
    pub deprecated: Option<String>,
    /// Make this version active (must belong to the template).
    pub active_version_id: Option<Uuid>,
    /// Display name (empty = use the name).
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Default workspace TTL, milliseconds (0 = none).
    pub default_ttl_ms: Option<i64>,
}

/// A named set of parameter values of a template version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplatePreset {
    /// Name.
    pub name: String,
    /// Preselected.
    pub is_default: bool,
    /// Description.
    pub description: String,
    /// `(parameter, value)` pairs.
    pub parameters: Vec<(String, String)>,
}

/// Ids of a pushed template version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedVersion {
    /// The template.
    pub template_id: Uuid,
    /// The version.
    pub version_id: Uuid,
    /// Its import job.
    pub job_id: Uuid,
    /// The push created the template.
    pub template_created: bool,
}

/// The connection facts of an agent row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimes {
    /// Row created.
    pub created_at: DateTime<Utc>,
    /// First connection.
    pub first_connected_at: Option<DateTime<Utc>>,
    /// Latest heartbeat.
    pub last_connected_at: Option<DateTime<Utc>>,
    /// Reported disconnect.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Never-connected timeout, seconds; 0 disables it.
    pub connection_timeout_seconds: i32,
}

/// An agent's connection status (computed, spec/engine.md §8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Never connected, still within its connection timeout.
    Connecting,
    /// Connected and recently heard from.
    Connected,
    /// Disconnected, since the given time.
    Disconnected {
        /// When.
        at: DateTime<Utc>,
    },
    /// Never connected within its connection timeout.
    Timeout,
}

/// Whether `name` is a valid template or workspace name: 1–32 ASCII letters and digits in runs
/// separated by single hyphens (no leading, trailing or doubled hyphen).
///
/// ```
/// use chatstore::workspace::valid_name;
/// assert!(valid_name("fun-dashboard-1a2b"));
/// assert!(!valid_name("-x") && !valid_name("a--b") && !valid_name("") && !valid_name(&"a".repeat(33)));
/// ```
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .split('-')
            .all(|run| !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The smallest inactive-disconnect timeout accepted.
pub const MIN_INACTIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Applies the agent connection-status rule (spec/engine.md §8.6, first match wins).
/// `inactive_timeout` is `workspace.agent_inactive_disconnect_timeout` (default 30 s; at least
/// 2 s).
///
/// ```
/// use chatstore::workspace::{AgentTimes, ConnectionStatus, connection_status};
/// use chrono::{Duration, Utc};
///
/// let now = Utc::now();
/// let times = AgentTimes {
///     created_at: now - Duration::seconds(60),
///     first_connected_at: Some(now - Duration::seconds(50)),
///     last_connected_at: Some(now - Duration::seconds(5)),
///     disconnected_at: None,
///     connection_timeout_seconds: 0,
/// };
/// assert_eq!(connection_status(&times, now, std::time::Duration::from_secs(30)), ConnectionStatus::Connected);
/// ```
pub fn connection_status(
    times: &AgentTimes,
    now: DateTime<Utc>,
    inactive_timeout: Duration,
) -> ConnectionStatus {
    let inactive = chrono::Duration::from_std(inactive_timeout.max(MIN_INACTIVE_TIMEOUT))
        .unwrap_or(chrono::Duration::MAX);
    let Some(_first) = times.first_connected_at else {
        let timeout = chrono::Duration::seconds(i64::from(times.connection_timeout_seconds));
        if times.connection_timeout_seconds > 0 && now - times.created_at > timeout {
            return ConnectionStatus::Timeout;
        }
        return ConnectionStatus::Connecting;
    };
    let last = times.last_connected_at.unwrap_or(times.created_at);
    if let Some(disconnected) = times.disconnected_at
        && disconnected >= last
    {
        return ConnectionStatus::Disconnected { at: disconnected };
    }
    if now - last > inactive {
        return ConnectionStatus::Disconnected { at: last };
    }
    ConnectionStatus::Connected
}

/// A freshly created API token. The plaintext is shown once; only a hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key's id.
    pub id: Uuid,
    /// `chatd_<prefix>_<secret>`: give it to the user, then forget it.
    pub token: String,
}

/// What [`WorkspaceStore::bootstrap_admin`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The organization.
    pub organization_id: Uuid,
    /// The admin.
    pub user_id: Uuid,
    /// The admin's token.
    pub key: NewApiKey,
}

/// Who an API token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: Uuid,
    /// `admin` or `member`.
    pub role: String,
    /// The key used.
    pub key_id: Uuid,
    /// The organizations the user belongs to, oldest membership first.
    pub organizations: Vec<Uuid>,
}

/// A model configuration (spec/engine.md §8.7).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Provider row.
    pub provider_id: Uuid,
    /// Provider kind (`anthropic`, `openai`, `openai-compat`, ...).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Provider base URL; empty = the provider's default.
    pub base_url: String,
    /// Where the API key comes from (`env:NAME`, `file:PATH`).
    pub api_key_ref: String,
    /// Context window, tokens.
    pub context_limit: i64,
    /// Auto-compaction threshold, percent (100 disables).
    pub compression_threshold: i32,
    /// Provider options.
    pub options: serde_json::Value,
    /// The organization's default.
    pub is_default: bool,
}

/// What an agent learns about itself (chatd.v1.AgentApiService.GetManifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentManifest {
    /// The agent.
    pub agent_id: Uuid,
    /// Its name.
    pub agent_name: String,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The workspace's name.
    pub workspace_name: String,
    /// The owner's username.
    pub owner_name: String,
    /// Working directory.
    pub directory: String,
    /// Startup script; empty = none.
    pub startup_script: String,
    /// Startup script timeout, seconds; 0 = none.
    pub startup_script_timeout_seconds: i32,
    /// Environment for every process.
    pub env: std::collections::BTreeMap<String, String>,
    /// The secret the control plane sends when it calls the agent.
    pub control_plane_secret: String,
}

/// What an agent reports with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentReport {
    /// Where the control plane dials it (e.g. `http://127.0.0.1:4100`).
    pub address: String,
    /// Its working directory with variables expanded.
    pub expanded_directory: String,
    /// `linux`, `darwin`, ...
    pub operating_system: String,
}

/// The most startup-log bytes kept per agent.
pub const MAX_AGENT_LOG_BYTES: i64 = 1024 * 1024;

/// The hash stored for a token or secret (SHA-256).
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// The workspace side of storage. Implemented by the PostgreSQL backend.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates an API token for a user; `lifetime` `None` = never expires.
    async fn create_api_key(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<NewApiKey, StoreError>;
    /// First start: on a database without any user, creates the organization, an admin user in
    /// it and an API token for them, atomically and once across concurrent callers. `None` when
    /// a user already exists.
    async fn bootstrap_admin(
        &self,
        organization: &str,
        username: &str,
    ) -> Result<Option<Bootstrapped>, StoreError>;
    /// The caller a token belongs to; `None` for an unknown, revoked or expired token or a
    /// suspended user.
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError>;
    /// Revokes a token.
    async fn revoke_api_key(&self, key_id: Uuid) -> Result<(), StoreError>;
    /// Registers a provider (`anthropic`, `openai`, `openai-compat`, ...).
    async fn create_provider(
        &self,
        kind: &str,
        api_key_ref: &str,
        base_url: &str,
    ) -> Result<Uuid, StoreError>;
    /// Creates a model configuration; `is_default` replaces the organization's default.
    async fn create_model_config(
        &self,
        organization_id: Uuid,
        provider_id: Uuid,
        model: &str,
        context_limit: i64,
        is_default: bool,
    ) -> Result<Uuid, StoreError>;
    /// The configuration a turn uses (spec/engine.md §12.2): `preferred` if it belongs to the
    /// organization and is enabled and not deleted, else the organization's default, else
    /// [`StoreError::NoDefaultModelConfig`].
    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError>;
    /// Creates an organization.
    async fn create_organization(&self, name: &str) -> Result<Uuid, StoreError>;
    /// Creates a user (`admin` or `member`) in an organization.
    async fn create_user(
        &self,
        username: &str,
        role: &str,
        organization_id: Uuid,
    ) -> Result<Uuid, StoreError>;
    /// Stores a template version (creating the template when new) with its import job.
    async fn push_template_version(
        &self,
        version: NewTemplateVersion,
    ) -> Result<PushedVersion, StoreError>;
    /// Reads a template.
    async fn template(&self, id: Uuid) -> Result<Template, StoreError>;
    /// The organization's live templates (not deleted, not deprecated) whose name contains
    /// `name_query` (case-insensitive; empty = all), each with its active developers, ordered by
    /// active developers descending, then name, then id. When counting fails the counts are 0.
    async fn list_templates(
        &self,
        organization_id: Uuid,
        name_query: &str,
    ) -> Result<Vec<TemplateListing>, StoreError>;
    /// A user's username.
    async fn username(&self, user_id: Uuid) -> Result<String, StoreError>;
    /// Reads a template version with its parameters and presets.
    async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, StoreError>;
    /// Changes template settings.
    async fn update_template(
        &self,
        id: Uuid,
        settings: TemplateSettings,
    ) -> Result<Template, StoreError>;
    /// Creates a workspace, its first (start) build and the build's job in one transaction.
    async fn create_workspace(
        &self,
        organization_id: Uuid,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
        parameters: serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<(Workspace, Build), StoreError>;
    /// Starts a new build (start/stop/delete) of a workspace with its job; refused while the
    /// latest build's job is not finished. The build uses the latest build's template version,
    /// except a start of a template that requires the active version, which moves to it.
    async fn new_build(
        &self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Option<Uuid>,
        parameters: serde_json::Value,
    ) -> Result<Build, StoreError>;
    /// The workspace's latest build.
    async fn latest_build(&self, workspace_id: Uuid) -> Result<Option<Build>, StoreError>;
    /// Reads a build.
    async fn build(&self, build_id: Uuid) -> Result<Build, StoreError>;
    /// Reads a workspace (deleted ones too).
    async fn workspace(&self, workspace_id: Uuid) -> Result<Workspace, StoreError>;
    /// Jobs a worker took and has not finished (after a crash: the ones it abandoned).
    async fn jobs_in_progress(&self, worker_id: Uuid) -> Result<Vec<Job>, StoreError>;
    /// Takes the oldest pending job (`FOR UPDATE SKIP LOCKED`), marking it started.
    async fn acquire_job(&self, worker_id: Uuid) -> Result<Option<Job>, StoreError>;
    /// Reads a job.
    async fn job(&self, id: Uuid) -> Result<Job, StoreError>;
    /// Appends build log lines `(level, stage, output)`.
    async fn append_job_logs(
        &self,
        job_id: Uuid,
        lines: &[(String, String, String)],
    ) -> Result<(), StoreError>;
    /// Finishes a job: `error` empty = success; `error_code` e.g. `INSUFFICIENT_QUOTA`. A
    /// successful delete build marks its workspace deleted.
    async fn complete_job(
        &self,
        job_id: Uuid,
        error: &str,
        error_code: &str,
    ) -> Result<Job, StoreError>;
    /// Requests cancellation of a job.
    async fn cancel_job(&self, job_id: Uuid) -> Result<Job, StoreError>;
    /// Adds an agent to a job's resource (creating the resource).
    async fn insert_agent(
        &self,
        job_id: Uuid,
        name: &str,
        directory: &str,
        connection_timeout_seconds: i32,
        auth_token_hash: &[u8],
    ) -> Result<Uuid, StoreError>;
    /// The non-deleted agents of a build.
    async fn build_agents(&self, build_id: Uuid) -> Result<Vec<Agent>, StoreError>;
    /// Reads an agent.
    async fn agent(&self, agent_id: Uuid) -> Result<Agent, StoreError>;
    /// The secret the control plane presents to this agent (`authorization: Bearer`): its
    /// workspace's control-plane secret.
    async fn agent_secret(&self, agent_id: Uuid) -> Result<String, StoreError>;
    /// Whether the agent is managed outside chatd: the template version of the build it belongs
    /// to has `has_external_agent`. An agent that belongs to no build (a template import's) is
    /// not external.
    async fn agent_is_external(&self, agent_id: Uuid) -> Result<bool, StoreError>;
    /// The database's clock (`now()`), the time connection statuses and leases are computed
    /// against, so replicas with skewed clocks agree.
    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError>;
    /// Records an agent heartbeat (`first_connected_at` on the first one) and what it reports.
    async fn agent_heartbeat(&self, agent_id: Uuid, report: &AgentReport)
    -> Result<(), StoreError>;
    /// The manifest of the agent holding this token; `None` for an unknown token, a deleted
    /// workspace, or an agent whose start build has been superseded by a newer start build.
    /// A stop or delete build does not invalidate the token, so a stopping agent can still
    /// report `shutting_down` → `off`.
    async fn agent_manifest_by_token(
        &self,
        token: &str,
    ) -> Result<Option<AgentManifest>, StoreError>;
    /// Sets what an agent runs at start.
    async fn set_agent_startup(
        &self,
        agent_id: Uuid,
        startup_script: &str,
        timeout_seconds: i32,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError>;
    /// Appends startup-log lines `(level, output)`; returns true when the 1 MiB cap was hit
    /// (lines beyond it are dropped).
    async fn append_agent_logs(
        &self,
        agent_id: Uuid,
        source: &str,
        lines: &[(String, String)],
    ) -> Result<bool, StoreError>;
    /// Records an agent's graceful disconnect.
    async fn agent_disconnected(&self, agent_id: Uuid) -> Result<(), StoreError>;
    /// Records a lifecycle change; an update older than the stored one is ignored.
    async fn update_agent_lifecycle(
        &self,
        agent_id: Uuid,
        state: AgentLifecycle,
        changed_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Registers (or refreshes) a replica's relay address.
    async fn register_worker(&self, worker_id: Uuid, relay_address: &str)
    -> Result<(), StoreError>;
    /// The relay address of a live replica (heartbeat fresher than `stale_after`).
    async fn worker_address(
        &self,
        worker_id: Uuid,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError>;
    /// The deployment-wide secret called `name`, created from the OS's random source by the
    /// first caller; every replica on the database reads the same one.
    async fn cluster_secret(&self, name: &str) -> Result<String, StoreError>;

    // Administration (chatd.v1.AdminService).

    /// Creates an organization; a name in use is [`StoreError::Conflict`].
    async fn add_organization(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError>;
    /// Reads an organization; `None` when it does not exist.
    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError>;
    /// Organizations by name, then id: all of them, or only those in `only`; after the name
    /// `after_name` (the previous page's last).
    async fn list_organizations(
        &self,
        only: Option<&[Uuid]>,
        after_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Organization>, StoreError>;
    /// Creates a user with memberships in one transaction. A username or email in use is
    /// [`StoreError::Conflict`]; an unknown organization is [`StoreError::NotFound`].
    async fn add_user(&self, user: &NewUser) -> Result<User, StoreError>;
    /// Reads a user with their memberships; `None` when they do not exist.
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// Users by username.
    async fn list_users(&self, query: &UserListQuery) -> Result<Vec<User>, StoreError>;
    /// Changes a user (memberships are replaced when given) in one transaction. An unknown user
    /// or organization is [`StoreError::NotFound`]; an email in use is [`StoreError::Conflict`].
    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> Result<User, StoreError>;
    /// Creates a named API token for a user and returns its plaintext (once) with its metadata.
    /// A name used by another of the user's valid tokens is [`StoreError::Conflict`]; an
    /// unknown user is [`StoreError::NotFound`].
    async fn issue_api_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<(NewApiKey, ApiToken), StoreError>;
    /// A token's metadata (revoked ones too); `None` when it does not exist.
    async fn api_token(&self, id: Uuid) -> Result<Option<ApiToken>, StoreError>;
    /// A user's non-revoked tokens, newest first, after `after`.
    async fn list_api_tokens(
        &self,
        user_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError>;
    /// Creates a model configuration with its own provider row. It becomes the organization's
    /// default when asked, or when it is enabled and the organization has none; the previous
    /// default stops being it in the same transaction. An unknown organization is
    /// [`StoreError::NotFound`]; a disabled default or an unknown provider kind
    /// [`StoreError::InvalidInput`].
    async fn add_model_config(
        &self,
        config: &NewModelConfig,
    ) -> Result<ModelConfigRecord, StoreError>;
    /// Makes sure the organization has a configuration with `config`'s provider, model and base
    /// URL (how operators seed models from the daemon's configuration). A missing one is added
    /// as by [`add_model_config`](Self::add_model_config); an existing one only takes the API
    /// key reference (its other settings are the administrators'). Seeders of one organization
    /// run one at a time, so replicas starting together add one configuration, not two. An
    /// unknown organization is [`StoreError::NotFound`].
    async fn seed_model_config(&self, config: &NewModelConfig) -> Result<Seeded, StoreError>;
    /// Reads a non-deleted model configuration; `None` when there is none.
    async fn model_config(&self, id: Uuid) -> Result<Option<ModelConfigRecord>, StoreError>;
    /// An organization's non-deleted model configurations (only enabled ones with
    /// `enabled_only`): the default first, then by display name (the model when it has none),
    /// then id; skipping `offset`.
    async fn list_model_configs(
        &self,
        organization_id: Uuid,
        enabled_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ModelConfigRecord>, StoreError>;
    /// Changes a model configuration. Provider settings are copied to a new provider row (rows
    /// may be shared). Disabling the default clears `is_default`; making a disabled
    /// configuration the default is [`StoreError::Precondition`]; a missing or deleted one
    /// [`StoreError::NotFound`].
    async fn update_model_config(
        &self,
        id: Uuid,
        changes: &ModelConfigChanges,
    ) -> Result<ModelConfigRecord, StoreError>;
    /// Soft-deletes a model configuration (a deleted default leaves the organization without
    /// one); a missing or already deleted one is [`StoreError::NotFound`].
    async fn delete_model_config(&self, id: Uuid) -> Result<(), StoreError>;

    // Templates and workspaces (chatd.v1.TemplateService, WorkspaceService).

    /// The non-deleted templates of `organization_ids` (deprecated ones included) whose name
    /// contains `name_query` (case-insensitive), by name then id, after `after` (the previous
    /// page's last name and id), each with its active developers.
    async fn list_organization_templates(
        &self,
        organization_ids: &[Uuid],
        name_query: &str,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TemplateListing>, StoreError>;
    /// Distinct owners of the template's non-deleted workspaces.
    async fn active_developers(&self, template_id: Uuid) -> Result<i64, StoreError>;
    /// A template's versions, newest first, after `after`, each with its parameters and presets
    /// but without its files (`files` is `null`).
    async fn list_template_versions(
        &self,
        template_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>, StoreError>;
    /// Soft-deletes a template, freeing its name. [`StoreError::Precondition`] while
    /// non-deleted workspaces use it; [`StoreError::NotFound`] when it does not exist.
    async fn delete_template(&self, id: Uuid) -> Result<Template, StoreError>;
    /// Workspaces with their owner's and template's names, newest first.
    async fn list_workspaces(
        &self,
        query: &WorkspaceListQuery,
    ) -> Result<Vec<WorkspaceListing>, StoreError>;
    /// One workspace (deleted ones too) with its owner's and template's names; `None` when it
    /// does not exist.
    async fn workspace_listing(&self, id: Uuid) -> Result<Option<WorkspaceListing>, StoreError>;
    /// A job's log lines with an id above `after_id`, in id order, at most `limit`.
    async fn job_logs(
        &self,
        job_id: Uuid,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<JobLog>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as D;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + D::seconds(secs)
    }

    fn times(
        first: Option<i64>,
        last: Option<i64>,
        disconnected: Option<i64>,
        timeout: i32,
    ) -> AgentTimes {
        AgentTimes {
            created_at: at(0),
            first_connected_at: first.map(at),
            last_connected_at: last.map(at),
            disconnected_at: disconnected.map(at),
            connection_timeout_seconds: timeout,
        }
    }

    macro_rules! status_rows {
        ($($name:ident: $times:expr, now $now:literal => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(connection_status(&$times, at($now), Duration::from_secs(30)), $expected);
            }
        )*};
    }

    // spec/engine.md §8.6 "Agent connection status", rule by rule.
    status_rows! {
        rule1_never_connected_past_its_timeout: times(None, None, None, 60), now 61 => ConnectionStatus::Timeout;
        rule2_never_connected_within_its_timeout: times(None, None, None, 60), now 60 => ConnectionStatus::Connecting;
        rule2_never_connected_without_a_timeout: times(None, None, None, 0), now 100_000 => ConnectionStatus::Connecting;
        rule3_reported_disconnect: times(Some(1), Some(10), Some(20), 0), now 21 => ConnectionStatus::Disconnected { at: at(20) };
        rule3_disconnect_at_the_same_instant: times(Some(1), Some(10), Some(10), 0), now 11 => ConnectionStatus::Disconnected { at: at(10) };
        rule4_silent_for_longer_than_the_inactive_timeout: times(Some(1), Some(10), None, 0), now 41 => ConnectionStatus::Disconnected { at: at(10) };
        rule4_reconnected_after_a_disconnect: times(Some(1), Some(30), Some(20), 0), now 70 => ConnectionStatus::Disconnected { at: at(30) };
        rule5_connected: times(Some(1), Some(30), Some(20), 0), now 40 => ConnectionStatus::Connected;
        rule5_heard_from_exactly_at_the_limit: times(Some(1), Some(10), None, 0), now 40 => ConnectionStatus::Connected;
    }

    #[test]
    fn the_inactive_timeout_is_at_least_two_seconds() {
        let t = times(Some(0), Some(10), None, 0);
        assert_eq!(
            connection_status(&t, at(11), Duration::ZERO),
            ConnectionStatus::Connected
        );
        assert_eq!(
            connection_status(&t, at(13), Duration::ZERO),
            ConnectionStatus::Disconnected { at: at(10) }
        );
    }
}
