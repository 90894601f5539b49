//! Store rows as `chatd.v1` messages (spec/engine.md §15), and client input as store values.
//! Internal-only fields (`provider_metadata`, versions, ownership) never leave through here.

use chatproto::chatd::v1 as pb;
use chatproto::prost_types::{self, Timestamp};
use chatstate::ChatStatus;
use chatstore::agents::Agent;
use chatstore::identity::{ApiToken, Organization, User};
use chatstore::models::ModelConfigRecord;
use chatstore::templates::{Template, TemplateVersion};
use chatstore::types::{Chat, Message, MessagePart, MessageUsage, QueuedMessage, Role};
use chatstore::workspaces::{Build, Job, JobLog, JobStatus, WorkspaceListing, WorkspaceTransition};
use chrono::{DateTime, Utc};
use provisioner::template::Manifest;
use serde_json::Value;
use tonic::Status;
use uuid::Uuid;

use chatengine::parts::EpisodeKey;
use chatengine::step::LivePart;

/// A timestamp on the wire.
pub(crate) fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A chat status on the wire.
pub(crate) fn status(s: &ChatStatus) -> pb::ChatStatus {
    match s {
        ChatStatus::Waiting => pb::ChatStatus::Waiting,
        ChatStatus::Running => pb::ChatStatus::Running,
        ChatStatus::Interrupting => pb::ChatStatus::Interrupting,
        ChatStatus::RequiresAction => pb::ChatStatus::RequiresAction,
        ChatStatus::Error => pb::ChatStatus::Error,
        ChatStatus::Legacy(_) => pb::ChatStatus::Unspecified,
    }
}

/// A message role on the wire.
pub(crate) fn role(r: Role) -> pb::ChatMessageRole {
    match r {
        Role::System => pb::ChatMessageRole::System,
        Role::User => pb::ChatMessageRole::User,
        Role::Assistant => pb::ChatMessageRole::Assistant,
        Role::Tool => pb::ChatMessageRole::Tool,
    }
}

/// A chat as its owner sees it.
pub(crate) fn chat(c: &Chat) -> pb::Chat {
    pb::Chat {
        id: c.id.to_string(),
        organization_id: c.organization_id.to_string(),
        owner_id: c.owner_id.to_string(),
        workspace_id: c.workspace_id.map(|id| id.to_string()),
        build_id: c.build_id.map(|id| id.to_string()),
        agent_id: c.agent_id.map(|id| id.to_string()),
        last_model_config_id: c.last_model_config_id.to_string(),
        last_reasoning_effort: c.last_reasoning_effort.clone(),
        title: c.title.clone(),
        status: status(&c.status).into(),
        last_error: c.last_error.as_ref().map(chat_error),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        archived: c.archived,
        pin_order: c.pin_order,
        labels: c.labels.clone().into_iter().collect(),
        dynamic_tools: dynamic_tools(c.dynamic_tools.as_ref()),
        requires_action_deadline_at: c.requires_action_deadline_at.map(timestamp),
    }
}

fn dynamic_tools(tools: Option<&Value>) -> Vec<pb::DynamicTool> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .map(|t| pb::DynamicTool {
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            input_schema: t.get("input_schema").and_then(json_struct),
        })
        .collect()
}

/// A committed message.
pub(crate) fn message(m: &Message) -> pb::ChatMessage {
    pb::ChatMessage {
        id: m.id,
        chat_id: m.chat_id.to_string(),
        created_by: m.created_by.map(|id| id.to_string()),
        model_config_id: m.model_config_id.map(|id| id.to_string()),
        created_at: Some(timestamp(m.created_at)),
        role: role(m.role).into(),
        content: m.content.iter().map(part).collect(),
        usage: m.usage.as_ref().map(usage),
        queued_message_id: m.queued_message_id,
    }
}

/// A queued message.
pub(crate) fn queued(q: &QueuedMessage) -> pb::ChatQueuedMessage {
    pb::ChatQueuedMessage {
        id: q.id,
        chat_id: q.chat_id.to_string(),
        model_config_id: q.model_config_id.map(|id| id.to_string()),
        content: q.content.iter().map(part).collect(),
        created_at: Some(timestamp(q.created_at)),
    }
}

fn usage(u: &MessageUsage) -> pb::ChatMessageUsage {
    pb::ChatMessageUsage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        total_tokens: u.total_tokens,
        reasoning_tokens: u.reasoning_tokens,
        cache_creation_tokens: u.cache_creation_tokens,
        cache_read_tokens: u.cache_read_tokens,
        context_limit: u.context_limit,
    }
}

/// A message part; `provider_metadata` stays inside.
pub(crate) fn part(p: &MessagePart) -> pb::ChatMessagePart {
    use pb::chat_message_part::Part;
    let part = match p {
        MessagePart::Text { text } => Part::Text(pb::TextPart { text: text.clone() }),
        MessagePart::Reasoning {
            text,
            created_at,
            completed_at,
            ..
        } => Part::Reasoning(pb::ReasoningPart {
            text: text.clone(),
            created_at: created_at.map(timestamp),
            completed_at: completed_at.map(timestamp),
        }),
        MessagePart::ToolCall {
            tool_call_id,
            tool_name,
            args,
            provider_executed,
            ..
        } => Part::ToolCall(pb::ToolCallPart {
            tool_call_id: tool_call_id.clone(),
            tool_name: tool_name.clone(),
            args: args.clone(),
            args_delta: String::new(),
            provider_executed: *provider_executed,
        }),
        MessagePart::ToolResult {
            tool_call_id,
            tool_name,
            result,
            is_error,
            provider_executed,
        } => Part::ToolResult(pb::ToolResultPart {
            tool_call_id: tool_call_id.clone(),
            tool_name: tool_name.clone(),
            result: result.to_string(),
            result_delta: String::new(),
            result_reset: false,
            is_error: *is_error,
            provider_executed: *provider_executed,
        }),
        MessagePart::Source {
            source_id,
            url,
            title,
        } => Part::Source(pb::SourcePart {
            source_id: source_id.clone(),
            url: url.clone(),
            title: title.clone(),
        }),
    };
    pb::ChatMessagePart { part: Some(part) }
}

/// A live part of an episode as a stream event (spec/engine.md §15.1 `message_part`).
pub(crate) fn live_part(live: &LivePart, key: &EpisodeKey, seq: u64) -> pb::ChatMessagePartEvent {
    let mut wire = part(&live.part);
    if let (Some(delta), Some(pb::chat_message_part::Part::ToolCall(call))) =
        (&live.args_delta, wire.part.as_mut())
    {
        call.args_delta.clone_from(delta);
    }
    pb::ChatMessagePartEvent {
        role: role(live.role).into(),
        part: Some(wire),
        history_version: key.history_version,
        generation_attempt: key.generation_attempt,
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
    }
}

/// A stored `ChatError` JSON (spec/chaterror.md §13) on the wire.
pub(crate) fn chat_error(v: &Value) -> pb::ChatError {
    pb::ChatError {
        message: text(v, "message"),
        detail: text(v, "detail"),
        kind: kind(v),
        provider: provider(v),
        retryable: v.get("retryable").and_then(Value::as_bool).unwrap_or(false),
        status_code: uint(v, "status_code"),
        source: wire_enum(
            v,
            "source",
            "CLASSIFICATION_SOURCE_",
            pb::ClassificationSource::from_str_name,
        ),
        sub_reason: wire_enum(
            v,
            "sub_reason",
            "ERROR_SUB_REASON_",
            pb::ErrorSubReason::from_str_name,
        ),
        provider_code: text(v, "provider_code"),
        retry_status: retry_status(v),
        attempts: uint(v, "attempts"),
        // The stored error keeps no Retry-After hint (it lives in the retry state).
        retry_after: None,
        provider_request_id: text(v, "provider_request_id"),
    }
}

/// A stored `retry_state` JSON (spec/chatretry.md §8) on the wire.
pub(crate) fn retry_event(v: &Value) -> pb::RetryEvent {
    pb::RetryEvent {
        attempt: uint(v, "attempt"),
        delay_ms: v.get("delay_ms").and_then(Value::as_u64).unwrap_or(0),
        error: text(v, "error"),
        kind: kind(v),
        provider: provider(v),
        status_code: uint(v, "status_code"),
        retrying_at: v
            .get("retrying_at")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| timestamp(t.with_timezone(&Utc))),
        retry_status: retry_status(v),
        delay_source: wire_enum(
            v,
            "delay_source",
            "RETRY_DELAY_SOURCE_",
            pb::RetryDelaySource::from_str_name,
        ),
        max_attempts: uint(v, "max_attempts"),
        parked: v.get("parked").and_then(Value::as_bool).unwrap_or(false),
        provider_request_id: text(v, "provider_request_id"),
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn uint(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn kind(v: &Value) -> i32 {
    wire_enum(v, "kind", "ERROR_KIND_", pb::ErrorKind::from_str_name)
}

fn provider(v: &Value) -> i32 {
    wire_enum(
        v,
        "provider",
        "PROVIDER_KIND_",
        pb::ProviderKind::from_str_name,
    )
}

fn retry_status(v: &Value) -> i32 {
    wire_enum(
        v,
        "retry_status",
        "RETRY_STATUS_",
        pb::RetryStatus::from_str_name,
    )
}

/// A lower-case JSON enum value (`overloaded`, `openai-compat`) as the proto enum
/// `PREFIX_OVERLOADED`; unknown or absent values are 0 (unspecified).
fn wire_enum<E: Into<i32>>(
    v: &Value,
    key: &str,
    prefix: &str,
    from_name: fn(&str) -> Option<E>,
) -> i32 {
    v.get(key)
        .and_then(Value::as_str)
        .map(|name| format!("{prefix}{}", name.to_ascii_uppercase().replace('-', "_")))
        .and_then(|name| from_name(&name))
        .map_or(0, Into::into)
}

/// A JSON object as a protobuf `Struct` (`None` for anything else).
pub(crate) fn json_struct(v: &Value) -> Option<prost_types::Struct> {
    match json_value(v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

fn json_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf `Struct` as JSON.
pub(crate) fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

/// User input as message parts: only text is accepted, and at least one part must hold
/// non-blank text.
pub(crate) fn input(parts: &[pb::ChatInputPart], what: &str) -> Result<Vec<MessagePart>, Status> {
    let content: Vec<MessagePart> = parts
        .iter()
        .map(|p| match &p.part {
            Some(pb::chat_input_part::Part::Text(t)) => Ok(MessagePart::text(t.text.clone())),
            None => Err(Status::invalid_argument(format!(
                "{what}: every content part needs a `text`"
            ))),
        })
        .collect::<Result<_, _>>()?;
    if !content.iter().any(MessagePart::has_text) {
        return Err(Status::invalid_argument(format!(
            "{what} is empty: send at least one text part with non-blank text"
        )));
    }
    Ok(content)
}

/// A provider kind's wire string (`openai-compat`) as the proto enum.
pub(crate) fn provider_kind(wire: &str) -> pb::ProviderKind {
    pb::ProviderKind::from_str_name(&format!(
        "PROVIDER_KIND_{}",
        wire.to_ascii_uppercase().replace('-', "_")
    ))
    .unwrap_or(pb::ProviderKind::Unspecified)
}

/// A proto provider kind as its wire string; `None` for unspecified.
pub(crate) fn provider_wire(kind: pb::ProviderKind) -> Option<String> {
    let name = kind.as_str_name().strip_prefix("PROVIDER_KIND_")?;
    (kind != pb::ProviderKind::Unspecified).then(|| name.to_ascii_lowercase().replace('_', "-"))
}

/// A user role's wire string as the proto enum.
pub(crate) fn user_role(role: &str) -> pb::UserRole {
    match role {
        "admin" => pb::UserRole::Admin,
        "member" => pb::UserRole::Member,
        _ => pb::UserRole::Unspecified,
    }
}

/// An organization.
pub(crate) fn organization(o: &Organization) -> pb::Organization {
    pb::Organization {
        id: o.id.to_string(),
        name: o.name.clone(),
        display_name: o.display_name.clone(),
        created_at: Some(timestamp(o.created_at)),
        updated_at: Some(timestamp(o.updated_at)),
    }
}

/// A user.
pub(crate) fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        username: u.username.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: user_role(&u.role).into(),
        organization_ids: u.organization_ids.iter().map(Uuid::to_string).collect(),
        suspended: u.suspended,
        created_at: Some(timestamp(u.created_at)),
        updated_at: Some(timestamp(u.updated_at)),
        last_seen_at: u.last_seen_at.map(timestamp),
        custom_prompt: u.custom_prompt.clone(),
    }
}

/// An API token's metadata.
pub(crate) fn api_token(t: &ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.to_string(),
        user_id: t.user_id.to_string(),
        name: t.name.clone(),
        prefix: t.prefix.clone(),
        created_at: Some(timestamp(t.created_at)),
        expires_at: t.expires_at.map(timestamp),
        last_used_at: t.last_used_at.map(timestamp),
        revoked_at: t.revoked_at.map(timestamp),
    }
}

/// A model configuration; `api_key_ref` only for admins.
pub(crate) fn model_config(c: &ModelConfigRecord, show_key_ref: bool) -> pb::ModelConfig {
    pb::ModelConfig {
        id: c.id.to_string(),
        organization_id: c.organization_id.to_string(),
        provider: provider_kind(&c.provider).into(),
        model: c.model.clone(),
        display_name: c.display_name.clone(),
        base_url: c.base_url.clone(),
        api_key_ref: if show_key_ref {
            c.api_key_ref.clone()
        } else {
            String::new()
        },
        context_limit: c.context_limit,
        compression_threshold: c.compression_threshold,
        max_output_tokens: c.max_output_tokens,
        temperature: c.temperature,
        enabled: c.enabled,
        is_default: c.is_default,
        options: json_struct(&c.options),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
    }
}

/// Milliseconds as a proto duration; `None` for 0 or less.
pub(crate) fn duration_ms(ms: i64) -> Option<prost_types::Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .and_then(|ms| std::time::Duration::from_millis(ms).try_into().ok())
}

/// A template with its active developers.
pub(crate) fn template(t: &Template, active_developers: i64) -> pb::Template {
    pb::Template {
        id: t.id.to_string(),
        organization_id: t.organization_id.to_string(),
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        active_version_id: t
            .active_version_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        deprecation_message: t.deprecated.clone(),
        require_active_version: t.require_active_version,
        chat_enabled: t.chat_enabled,
        deleted: t.deleted,
        default_ttl: duration_ms(t.default_ttl_ms),
        active_developers: i32::try_from(active_developers).unwrap_or(i32::MAX),
        created_by_id: t.created_by.map(|id| id.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
    }
}

/// A provisioner job status.
pub(crate) fn job_status(s: JobStatus) -> pb::ProvisionerJobStatus {
    match s {
        JobStatus::Pending => pb::ProvisionerJobStatus::Pending,
        JobStatus::Running => pb::ProvisionerJobStatus::Running,
        JobStatus::Succeeded => pb::ProvisionerJobStatus::Succeeded,
        JobStatus::Canceling => pb::ProvisionerJobStatus::Canceling,
        JobStatus::Canceled => pb::ProvisionerJobStatus::Canceled,
        JobStatus::Failed => pb::ProvisionerJobStatus::Failed,
        JobStatus::Unknown => pb::ProvisionerJobStatus::Unknown,
    }
}

/// A provisioner job.
pub(crate) fn job(j: &Job) -> pb::ProvisionerJob {
    pb::ProvisionerJob {
        id: j.id.to_string(),
        r#type: match j.kind.as_str() {
            "workspace_build" => pb::ProvisionerJobType::WorkspaceBuild,
            "template_version_import" => pb::ProvisionerJobType::TemplateVersionImport,
            _ => pb::ProvisionerJobType::Unspecified,
        }
        .into(),
        status: job_status(j.status).into(),
        created_at: Some(timestamp(j.created_at)),
        started_at: j.started_at.map(timestamp),
        canceled_at: j.canceled_at.map(timestamp),
        completed_at: j.completed_at.map(timestamp),
        error: j.error.clone(),
        error_code: j.error_code.clone(),
    }
}

/// A template version with its parameters and presets as its manifest declares them and its
/// import job.
pub(crate) fn template_version(
    v: &TemplateVersion,
    manifest: &Manifest,
    job: &Job,
    active: bool,
) -> pb::TemplateVersion {
    let wire = manifest.to_proto();
    pb::TemplateVersion {
        id: v.id.to_string(),
        template_id: v.template_id.to_string(),
        name: v.name.clone(),
        message: v.message.clone(),
        readme: v.readme.clone(),
        has_external_agent: v.has_external_agent,
        agent: wire.agent,
        parameters: wire.parameters,
        presets: v
            .presets
            .iter()
            .zip(wire.presets)
            .map(|((id, _), preset)| pb::TemplatePreset {
                id: id.to_string(),
                ..preset
            })
            .collect(),
        job: Some(self::job(job)),
        active,
        created_by_id: v.created_by.map(|id| id.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(v.created_at)),
    }
}

/// A workspace agent with its connection status at `now`.
pub(crate) fn agent(
    a: &Agent,
    now: DateTime<Utc>,
    inactive_timeout: std::time::Duration,
    externally_managed: bool,
) -> pb::WorkspaceAgent {
    use chatstore::agents::{AgentLifecycle as L, ConnectionStatus as C, connection_status};
    let (status, disconnected_at) = match connection_status(&a.times, now, inactive_timeout) {
        C::Connecting => (pb::AgentConnectionStatus::Connecting, None),
        C::Connected => (pb::AgentConnectionStatus::Connected, None),
        C::Disconnected { at } => (pb::AgentConnectionStatus::Disconnected, Some(timestamp(at))),
        C::Timeout => (pb::AgentConnectionStatus::Timeout, None),
    };
    let lifecycle = match a.lifecycle {
        L::Created => pb::WorkspaceAgentLifecycle::Created,
        L::Starting => pb::WorkspaceAgentLifecycle::Starting,
        L::StartTimeout => pb::WorkspaceAgentLifecycle::StartTimeout,
        L::StartError => pb::WorkspaceAgentLifecycle::StartError,
        L::Ready => pb::WorkspaceAgentLifecycle::Ready,
        L::ShuttingDown => pb::WorkspaceAgentLifecycle::ShuttingDown,
        L::ShutdownTimeout => pb::WorkspaceAgentLifecycle::ShutdownTimeout,
        L::ShutdownError => pb::WorkspaceAgentLifecycle::ShutdownError,
        L::Off => pb::WorkspaceAgentLifecycle::Off,
    };
    pb::WorkspaceAgent {
        id: a.id.to_string(),
        name: a.name.clone(),
        parent_id: a.parent_id.map(|id| id.to_string()),
        display_order: a.display_order,
        lifecycle_state: lifecycle.into(),
        connection_status: status.into(),
        created_at: Some(timestamp(a.times.created_at)),
        first_connected_at: a.times.first_connected_at.map(timestamp),
        last_connected_at: a.times.last_connected_at.map(timestamp),
        disconnected_at,
        connection_timeout: u64::try_from(a.times.connection_timeout_seconds)
            .ok()
            .filter(|s| *s > 0)
            .and_then(|s| std::time::Duration::from_secs(s).try_into().ok()),
        directory: a.directory.clone(),
        expanded_directory: a.expanded_directory.clone(),
        externally_managed,
        ..Default::default()
    }
}

/// A build with its job and agents.
pub(crate) fn build(b: &Build, job: &Job, agents: Vec<pb::WorkspaceAgent>) -> pb::WorkspaceBuild {
    let parameters = b
        .parameters
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| pb::ParameterValue {
                    name: text(v, "name"),
                    value: text(v, "value"),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::WorkspaceBuild {
        id: b.id.to_string(),
        workspace_id: b.workspace_id.to_string(),
        build_number: b.build_number,
        transition: match b.transition {
            WorkspaceTransition::Start => pb::WorkspaceTransition::Start,
            WorkspaceTransition::Stop => pb::WorkspaceTransition::Stop,
            WorkspaceTransition::Delete => pb::WorkspaceTransition::Delete,
        }
        .into(),
        template_version_id: b.template_version_id.to_string(),
        initiator_id: b.initiator_id.map(|id| id.to_string()).unwrap_or_default(),
        reason: match b.reason.as_str() {
            "initiator" => pb::WorkspaceBuildReason::Initiator,
            "chat" => pb::WorkspaceBuildReason::Chat,
            "autostop" => pb::WorkspaceBuildReason::Autostop,
            _ => pb::WorkspaceBuildReason::Unspecified,
        }
        .into(),
        parameters,
        job: Some(self::job(job)),
        agents,
        created_at: Some(timestamp(b.created_at)),
    }
}

/// A workspace with its latest build.
pub(crate) fn workspace(
    w: &WorkspaceListing,
    latest_build: Option<pb::WorkspaceBuild>,
) -> pb::Workspace {
    pb::Workspace {
        id: w.workspace.id.to_string(),
        organization_id: w.workspace.organization_id.to_string(),
        owner_id: w.workspace.owner_id.to_string(),
        owner_name: w.owner_name.clone(),
        template_id: w.workspace.template_id.to_string(),
        template_name: w.template_name.clone(),
        name: w.workspace.name.clone(),
        deleted: w.workspace.deleted,
        ttl: w.workspace.ttl_ms.and_then(duration_ms),
        latest_build,
        created_at: Some(timestamp(w.workspace.created_at)),
        updated_at: Some(timestamp(w.updated_at)),
    }
}

/// A build log line.
pub(crate) fn build_log(l: &JobLog) -> pb::BuildLog {
    let level = match l.level.as_str() {
        "trace" => pb::LogLevel::Trace,
        "debug" => pb::LogLevel::Debug,
        "info" => pb::LogLevel::Info,
        "warn" => pb::LogLevel::Warn,
        "error" => pb::LogLevel::Error,
        _ => pb::LogLevel::Unspecified,
    };
    pb::BuildLog {
        id: l.id,
        created_at: Some(timestamp(l.created_at)),
        level: level.into(),
        stage: l.stage.clone(),
        output: l.output.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_errors_keep_their_kinds_on_the_wire() {
        let e = chat_error(&json!({
            "message": "Anthropic is overloaded.",
            "kind": "overloaded",
            "provider": "openai-compat",
            "retryable": true,
            "status_code": 529,
            "source": "structured",
            "sub_reason": "context_window_exceeded",
            "retry_status": "exhausted",
            "attempts": 25,
            "provider_request_id": "req_1",
        }));
        assert_eq!(e.kind(), pb::ErrorKind::Overloaded);
        assert_eq!(e.provider(), pb::ProviderKind::OpenaiCompat);
        assert_eq!(e.source(), pb::ClassificationSource::Structured);
        assert_eq!(e.sub_reason(), pb::ErrorSubReason::ContextWindowExceeded);
        assert_eq!(e.retry_status(), pb::RetryStatus::Exhausted);
        assert_eq!((e.status_code, e.attempts), (529, 25));
        assert_eq!(e.provider_request_id, "req_1");
        assert_eq!(chat_error(&json!({"kind": "nonsense"})).kind, 0);
    }

    #[test]
    fn stored_retry_states_keep_their_schedule() {
        let r = retry_event(&json!({
            "attempt": 3, "delay_ms": 4000, "error": "busy", "kind": "rate_limit",
            "retrying_at": "2026-11-21T10:00:00.250Z", "retry_status": "retrying",
            "delay_source": "retry_after_header", "max_attempts": 25, "parked": true,
        }));
        assert_eq!((r.attempt, r.delay_ms, r.max_attempts), (3, 4000, 25));
        assert_eq!(r.kind(), pb::ErrorKind::RateLimit);
        assert_eq!(r.delay_source(), pb::RetryDelaySource::RetryAfterHeader);
        assert_eq!(r.retrying_at.map(|t| t.nanos), Some(250_000_000));
        assert!(r.parked);
    }

    #[test]
    fn provider_kinds_round_trip_through_their_wire_strings() {
        for wire in [
            "anthropic",
            "openai",
            "openai-compat",
            "azure",
            "bedrock",
            "google",
            "openrouter",
            "vercel",
        ] {
            let kind = provider_kind(wire);
            assert_ne!(kind, pb::ProviderKind::Unspecified, "{wire}");
            assert_eq!(provider_wire(kind).as_deref(), Some(wire));
        }
        assert_eq!(provider_kind("nope"), pb::ProviderKind::Unspecified);
        assert_eq!(provider_wire(pb::ProviderKind::Unspecified), None);
    }

    #[test]
    fn json_and_struct_round_trip() {
        let v = json!({"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"], "x": null, "b": true});
        assert_eq!(struct_json(&json_struct(&v).unwrap()), v);
        assert!(json_struct(&json!([1])).is_none());
    }

    #[test]
    fn input_needs_text() {
        let text = |t: &str| pb::ChatInputPart {
            part: Some(pb::chat_input_part::Part::Text(pb::TextPart {
                text: t.into(),
            })),
        };
        assert!(input(&[], "the message").is_err());
        assert!(input(&[text("  \n")], "the message").is_err());
        assert!(input(&[pb::ChatInputPart { part: None }], "the message").is_err());
        assert_eq!(
            input(&[text(" "), text("hi")], "the message")
                .unwrap()
                .len(),
            2
        );
    }
}
