//! Row shapes that both SQL backends read the same way (sqlx's `FromRow` is generic over the
//! database), with the column lists that produce them.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use chatstate::ChatStatus;

use crate::StoreError;
use crate::agents::{Agent, AgentLifecycle, AgentManifest, AgentTimes};
use crate::identity::{ApiToken, Organization};
use crate::models::{ModelConfig, ModelConfigRecord};
use crate::templates::{
    Template, TemplateListing, TemplateParameter, TemplatePreset, TemplateVersion,
};
use crate::types::{
    Chat, Message, MessagePart, MessageUsage, QueuedMessage, ToolExecution, ToolExecutionState,
};
use crate::workspaces::{
    Build, Job, JobLog, JobStatus, Workspace, WorkspaceListing, WorkspaceTransition,
};

macro_rules! organization_columns {
    () => {
        "id, name, display_name, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct OrganizationRow {
    pub(crate) id: Uuid,
    name: String,
    display_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<OrganizationRow> for Organization {
    fn from(r: OrganizationRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            display_name: r.display_name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! token_columns {
    () => {
        "id, user_id, name, 'chatd_' || prefix AS prefix, created_at, expires_at, last_used_at, revoked_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct TokenRow {
    pub(crate) id: Uuid,
    user_id: Uuid,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A model configuration with its provider's settings: `m` is the configuration, `p` its
/// provider row.
macro_rules! model_config_select {
    () => {
        "SELECT m.id, m.organization_id, p.provider, m.model, m.display_name, p.base_url,
                p.api_key_ref, m.context_limit, m.compression_threshold, m.max_output_tokens,
                m.temperature, m.enabled, m.is_default, m.options, m.created_at, m.updated_at
           FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct ModelConfigRow {
    id: Uuid,
    organization_id: Uuid,
    provider: String,
    model: String,
    display_name: String,
    base_url: String,
    api_key_ref: String,
    context_limit: i64,
    compression_threshold: i32,
    max_output_tokens: Option<i32>,
    temperature: Option<f64>,
    enabled: bool,
    is_default: bool,
    options: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ModelConfigRow> for ModelConfigRecord {
    fn from(r: ModelConfigRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            provider: r.provider,
            model: r.model,
            display_name: r.display_name,
            base_url: r.base_url,
            api_key_ref: r.api_key_ref,
            context_limit: r.context_limit,
            compression_threshold: r.compression_threshold,
            max_output_tokens: r.max_output_tokens,
            temperature: r.temperature,
            enabled: r.enabled,
            is_default: r.is_default,
            options: r.options,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The configuration a turn uses (`$1` the organization, `$2` the preferred configuration or
/// NULL): the preferred one if it is usable, else the default. The same statement in both
/// dialects.
pub(crate) const RESOLVE_MODEL_CONFIG: &str = "
    SELECT m.id, m.organization_id, m.provider_id, p.provider, m.model, p.base_url, p.api_key_ref,
           m.context_limit, m.compression_threshold, m.max_output_tokens, m.temperature, m.options,
           m.is_default
      FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
     WHERE m.organization_id = $1 AND m.enabled AND NOT m.deleted AND p.enabled
       AND (m.id = $2 OR m.is_default)
     ORDER BY (m.id = $2) DESC NULLS LAST
     LIMIT 1";

/// The configuration a seed stands for (`$1` the organization, `$2` the provider kind, `$3` the
/// model, `$4` the base URL): the oldest non-deleted one with them. The same statement in both
/// dialects.
pub(crate) const SEED_MATCH: &str = "
    SELECT m.id FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
     WHERE m.organization_id = $1 AND NOT m.deleted
       AND p.provider = $2 AND m.model = $3 AND p.base_url = $4
     ORDER BY m.created_at, m.id
     LIMIT 1";

#[derive(Debug, FromRow)]
pub(crate) struct ResolvedModelRow {
    id: Uuid,
    organization_id: Uuid,
    provider_id: Uuid,
    provider: String,
    model: String,
    base_url: String,
    api_key_ref: String,
    context_limit: i64,
    compression_threshold: i32,
    max_output_tokens: Option<i32>,
    temperature: Option<f64>,
    options: serde_json::Value,
    is_default: bool,
}

impl From<ResolvedModelRow> for ModelConfig {
    fn from(r: ResolvedModelRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            provider_id: r.provider_id,
            provider: r.provider,
            model: r.model,
            base_url: r.base_url,
            api_key_ref: r.api_key_ref,
            context_limit: r.context_limit,
            compression_threshold: r.compression_threshold,
            max_output_tokens: r.max_output_tokens,
            temperature: r.temperature,
            options: r.options,
            is_default: r.is_default,
        }
    }
}

pub(crate) use {model_config_select, organization_columns, token_columns};

/// The chat columns every read selects (a macro, so queries stay `&'static str`).
macro_rules! chat_columns {
    () => {
        "id, organization_id, owner_id, workspace_id, build_id, agent_id, title, labels, pin_order,
    dynamic_tools, system_prompt, last_model_config_id, last_reasoning_effort,
    CAST(status AS TEXT) AS status, archived, last_error, requires_action_deadline_at,
    compaction_requested_at, retry_state, retry_window_started_at, worker_id, runner_id,
    snapshot_version, history_version, queue_version, generation_attempt, retry_state_version,
    created_at, updated_at"
    };
}

/// The message columns every read returns.
macro_rules! message_columns {
    () => {
        "id, chat_id, CAST(role AS TEXT) AS role, content, CAST(visibility AS TEXT) AS visibility,
    created_by, model_config_id, created_at, compressed, deleted, revision, queued_message_id,
    input_tokens, output_tokens, total_tokens, reasoning_tokens, cache_creation_tokens,
    cache_read_tokens, context_limit"
    };
}

/// The queued-message columns every read returns.
macro_rules! queued_columns {
    () => {
        "id, chat_id, content, model_config_id, reasoning_effort, created_at, position, created_by"
    };
}

/// The tool-ledger columns every read returns.
macro_rules! tool_execution_columns {
    () => {
        "chat_id, tool_call_id, tool_name, args_sha256, CAST(state AS TEXT) AS state, result,
    runner_id, dispatched_at, completed_at"
    };
}

/// Chats a worker may acquire, most urgent first, at most `$1`; `live_lease!` is the
/// backend's lease condition (the lease age bound at `$2`).
macro_rules! candidates {
    () => {
        concat!(
            "SELECT c.id FROM chats c
              WHERE NOT c.archived
                AND c.status IN ('interrupting', 'requires_action', 'running')
                AND NOT (",
            live_lease!(),
            ")
              ORDER BY CASE c.status WHEN 'interrupting' THEN 0 WHEN 'requires_action' THEN 1 ELSE 2 END,
                       c.updated_at, c.id
              LIMIT $1"
        )
    };
}

pub(crate) use {
    candidates, chat_columns, message_columns, queued_columns, tool_execution_columns,
};

pub(crate) fn invalid_name(e: crate::UnknownName) -> StoreError {
    StoreError::InvalidInput(e.to_string())
}

#[derive(Debug, FromRow)]
pub(crate) struct ToolExecutionRow {
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
    pub(crate) fn into_execution(self) -> Result<ToolExecution, StoreError> {
        let state: ToolExecutionState = self.state.parse().map_err(invalid_name)?;
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

#[derive(Debug, FromRow)]
pub(crate) struct ChatRow {
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

impl ChatRow {
    pub(crate) fn decode(self) -> Result<Chat, StoreError> {
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
pub(crate) struct MessageRow {
    id: i64,
    chat_id: Uuid,
    role: String,
    content: serde_json::Value,
    visibility: String,
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
    pub(crate) fn decode(self) -> Result<Message, StoreError> {
        let content = decode_content(self.content)?;
        let usage = self.input_tokens.map(|input_tokens| MessageUsage {
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
            role: self.role.parse().map_err(invalid_name)?,
            content,
            visibility: self.visibility.parse().map_err(invalid_name)?,
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

#[derive(Debug, FromRow)]
pub(crate) struct QueuedRow {
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
    pub(crate) fn decode(self) -> Result<QueuedMessage, StoreError> {
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

/// A page of history read with one row more than `limit` (which tells whether more lie
/// beyond), in ascending id order; a backwards page was read newest first.
pub(crate) fn message_page(
    rows: Vec<MessageRow>,
    limit: i64,
    forwards: bool,
) -> Result<(Vec<Message>, bool), StoreError> {
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let mut messages = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(0))
        .map(MessageRow::decode)
        .collect::<Result<Vec<_>, _>>()?;
    if !forwards {
        messages.reverse();
    }
    Ok((messages, more))
}

macro_rules! template_columns {
    () => {
        "id, organization_id, name, display_name, description, deleted, deprecated, active_version_id,
         require_active_version, chat_enabled, default_ttl_ms, created_by, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct TemplateRow {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    display_name: String,
    description: String,
    deleted: bool,
    deprecated: String,
    active_version_id: Option<Uuid>,
    require_active_version: bool,
    chat_enabled: bool,
    default_ttl_ms: i64,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(r: TemplateRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            name: r.name,
            display_name: r.display_name,
            description: r.description,
            deleted: r.deleted,
            deprecated: r.deprecated,
            active_version_id: r.active_version_id,
            require_active_version: r.require_active_version,
            chat_enabled: r.chat_enabled,
            default_ttl_ms: r.default_ttl_ms,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A template with its active developers (`template_columns!()` and `active_developers`).
#[derive(Debug, FromRow)]
pub(crate) struct TemplateCountRow {
    #[sqlx(flatten)]
    template: TemplateRow,
    active_developers: i64,
}

impl From<TemplateCountRow> for TemplateListing {
    fn from(r: TemplateCountRow) -> Self {
        Self {
            template: r.template.into(),
            active_developers: r.active_developers,
        }
    }
}

/// The columns of a template version but its files, which each backend selects itself (or
/// not) as `files`.
macro_rules! version_columns {
    () => {
        "id, template_id, name, message, readme, job_id, has_external_agent, manifest, created_by, created_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct VersionRow {
    id: Uuid,
    template_id: Uuid,
    name: String,
    message: String,
    readme: String,
    job_id: Uuid,
    has_external_agent: bool,
    manifest: serde_json::Value,
    files: serde_json::Value,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl VersionRow {
    /// The version with its parameters and presets.
    pub(crate) fn into_version(
        self,
        parameters: Vec<ParameterRow>,
        presets: Vec<(Uuid, TemplatePreset)>,
    ) -> TemplateVersion {
        TemplateVersion {
            id: self.id,
            template_id: self.template_id,
            name: self.name,
            message: self.message,
            readme: self.readme,
            job_id: self.job_id,
            has_external_agent: self.has_external_agent,
            manifest: self.manifest,
            files: self.files,
            created_by: self.created_by,
            created_at: self.created_at,
            parameters: parameters
                .into_iter()
                .map(TemplateParameter::from)
                .collect(),
            presets,
        }
    }
}

macro_rules! parameter_columns {
    () => {
        "name, display_name, description, type AS kind, mutable, default_value, options, display_order,
         form_type, ephemeral, validation_regex, validation_min, validation_max, validation_error"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct ParameterRow {
    name: String,
    display_name: String,
    description: String,
    kind: String,
    mutable: bool,
    default_value: Option<String>,
    options: serde_json::Value,
    display_order: i32,
    form_type: String,
    ephemeral: bool,
    validation_regex: String,
    validation_min: Option<i32>,
    validation_max: Option<i32>,
    validation_error: String,
}

impl From<ParameterRow> for TemplateParameter {
    fn from(p: ParameterRow) -> Self {
        Self {
            name: p.name,
            display_name: p.display_name,
            description: p.description,
            kind: p.kind,
            mutable: p.mutable,
            default_value: p.default_value,
            options: p.options,
            display_order: p.display_order,
            form_type: p.form_type,
            ephemeral: p.ephemeral,
            validation_regex: p.validation_regex,
            validation_min: p.validation_min,
            validation_max: p.validation_max,
            validation_error: p.validation_error,
        }
    }
}

/// A preset of a template version without its values.
#[derive(Debug, FromRow)]
pub(crate) struct PresetRow {
    pub(crate) id: Uuid,
    name: String,
    is_default: bool,
    description: String,
}

impl PresetRow {
    /// The preset with its `(parameter, value)` pairs.
    pub(crate) fn into_preset(self, parameters: Vec<(String, String)>) -> (Uuid, TemplatePreset) {
        (
            self.id,
            TemplatePreset {
                name: self.name,
                is_default: self.is_default,
                description: self.description,
                parameters,
            },
        )
    }
}

macro_rules! job_columns {
    () => {
        "id, organization_id, type AS kind, input, worker_id, created_at, started_at, canceled_at, completed_at,
         error, error_code, job_status AS status"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct JobRow {
    pub(crate) id: Uuid,
    organization_id: Uuid,
    kind: String,
    input: serde_json::Value,
    worker_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    error: String,
    error_code: String,
    pub(crate) status: JobStatus,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            kind: r.kind,
            input: r.input,
            worker_id: r.worker_id,
            created_at: r.created_at,
            started_at: r.started_at,
            canceled_at: r.canceled_at,
            completed_at: r.completed_at,
            error: r.error,
            error_code: r.error_code,
            status: r.status,
        }
    }
}

macro_rules! build_columns {
    () => {
        "id, workspace_id, build_number, transition, job_id, template_version_id, initiator_id, parameters, reason,
         created_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct BuildRow {
    id: Uuid,
    workspace_id: Uuid,
    build_number: i32,
    transition: WorkspaceTransition,
    job_id: Uuid,
    template_version_id: Uuid,
    initiator_id: Option<Uuid>,
    parameters: serde_json::Value,
    reason: String,
    created_at: DateTime<Utc>,
}

impl From<BuildRow> for Build {
    fn from(r: BuildRow) -> Self {
        Self {
            id: r.id,
            workspace_id: r.workspace_id,
            build_number: r.build_number,
            transition: r.transition,
            job_id: r.job_id,
            template_version_id: r.template_version_id,
            initiator_id: r.initiator_id,
            parameters: r.parameters,
            reason: r.reason,
            created_at: r.created_at,
        }
    }
}

macro_rules! workspace_columns {
    () => {
        "id, owner_id, organization_id, template_id, name, deleted, ttl_ms, created_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct WorkspaceRow {
    pub(crate) id: Uuid,
    pub(crate) owner_id: Uuid,
    pub(crate) organization_id: Uuid,
    pub(crate) template_id: Uuid,
    name: String,
    deleted: bool,
    ttl_ms: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Self {
            id: r.id,
            owner_id: r.owner_id,
            organization_id: r.organization_id,
            template_id: r.template_id,
            name: r.name,
            deleted: r.deleted,
            ttl_ms: r.ttl_ms,
            created_at: r.created_at,
        }
    }
}

/// A workspace with the names a listing shows; each backend computes `updated_at` (the later
/// of the workspace's own and its latest build's) in its dialect.
#[derive(Debug, FromRow)]
pub(crate) struct WorkspaceListingRow {
    #[sqlx(flatten)]
    workspace: WorkspaceRow,
    updated_at: DateTime<Utc>,
    owner_name: String,
    template_name: String,
}

impl From<WorkspaceListingRow> for WorkspaceListing {
    fn from(r: WorkspaceListingRow) -> Self {
        Self {
            workspace: r.workspace.into(),
            owner_name: r.owner_name,
            template_name: r.template_name,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! job_log_columns {
    () => {
        "id, created_at, level, stage, output"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct JobLogRow {
    id: i64,
    created_at: DateTime<Utc>,
    level: String,
    stage: String,
    output: String,
}

impl From<JobLogRow> for JobLog {
    fn from(r: JobLogRow) -> Self {
        Self {
            id: r.id,
            created_at: r.created_at,
            level: r.level,
            stage: r.stage,
            output: r.output,
        }
    }
}

macro_rules! agent_columns {
    () => {
        "a.id, a.resource_id, a.name, a.parent_id, a.display_order, a.created_at, a.first_connected_at,
         a.last_connected_at, a.disconnected_at, a.connection_timeout_seconds, a.lifecycle_state,
         a.directory, a.expanded_directory, a.address"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct AgentRow {
    id: Uuid,
    resource_id: Uuid,
    name: String,
    parent_id: Option<Uuid>,
    display_order: i32,
    created_at: DateTime<Utc>,
    first_connected_at: Option<DateTime<Utc>>,
    last_connected_at: Option<DateTime<Utc>>,
    disconnected_at: Option<DateTime<Utc>>,
    connection_timeout_seconds: i32,
    lifecycle_state: AgentLifecycle,
    directory: String,
    expanded_directory: String,
    address: String,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Self {
            id: r.id,
            resource_id: r.resource_id,
            name: r.name,
            parent_id: r.parent_id,
            display_order: r.display_order,
            times: AgentTimes {
                created_at: r.created_at,
                first_connected_at: r.first_connected_at,
                last_connected_at: r.last_connected_at,
                disconnected_at: r.disconnected_at,
                connection_timeout_seconds: r.connection_timeout_seconds,
            },
            lifecycle: r.lifecycle_state,
            directory: r.directory,
            expanded_directory: r.expanded_directory,
            address: r.address,
        }
    }
}

/// The manifest of the agent whose token hash is `$1` (the same SQL in both dialects): a live
/// agent of a live workspace's latest start build.
macro_rules! agent_manifest_query {
    () => {
        "SELECT a.id AS agent_id, a.name AS agent_name, w.id AS workspace_id, w.name AS workspace_name,
                u.username AS owner_name, a.directory, a.startup_script, a.startup_script_timeout_seconds,
                a.env, w.control_plane_secret
           FROM workspace_agents a
           JOIN workspace_resources r ON r.id = a.resource_id
           JOIN workspace_builds b ON b.job_id = r.job_id
           JOIN workspaces w ON w.id = b.workspace_id
           JOIN users u ON u.id = w.owner_id
          WHERE a.auth_token_hash = $1 AND NOT a.deleted AND NOT w.deleted
            AND b.transition = 'start'
            AND b.build_number = (SELECT max(build_number) FROM workspace_builds
                                   WHERE workspace_id = w.id AND transition = 'start')"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct ManifestRow {
    agent_id: Uuid,
    agent_name: String,
    workspace_id: Uuid,
    workspace_name: String,
    owner_name: String,
    directory: String,
    startup_script: String,
    startup_script_timeout_seconds: i32,
    env: serde_json::Value,
    control_plane_secret: String,
}

impl TryFrom<ManifestRow> for AgentManifest {
    type Error = StoreError;

    fn try_from(r: ManifestRow) -> Result<Self, StoreError> {
        Ok(Self {
            agent_id: r.agent_id,
            agent_name: r.agent_name,
            workspace_id: r.workspace_id,
            workspace_name: r.workspace_name,
            owner_name: r.owner_name,
            directory: r.directory,
            startup_script: r.startup_script,
            startup_script_timeout_seconds: r.startup_script_timeout_seconds,
            env: serde_json::from_value(r.env).map_err(|source| StoreError::Corrupt {
                what: "agent env",
                source,
            })?,
            control_plane_secret: r.control_plane_secret,
        })
    }
}

pub(crate) use {
    agent_columns, agent_manifest_query, build_columns, job_columns, job_log_columns,
    parameter_columns, template_columns, version_columns, workspace_columns,
};
