//! Store rows as `chatd.v1` messages (spec/engine.md §15), and client input as store values.
//! Internal-only fields (`provider_metadata`, versions, ownership) never leave through here.

use chatproto::chatd::v1 as pb;
use chatproto::prost_types::{self, Timestamp};
use chatstate::ChatStatus;
use chatstore::types::{Chat, Message, MessagePart, QueuedMessage, Role, Usage};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tonic::Status;

use crate::engine::step::LivePart;
use crate::parts::EpisodeKey;

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

fn usage(u: &Usage) -> pb::ChatMessageUsage {
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
        }));
        assert_eq!(e.kind(), pb::ErrorKind::Overloaded);
        assert_eq!(e.provider(), pb::ProviderKind::OpenaiCompat);
        assert_eq!(e.source(), pb::ClassificationSource::Structured);
        assert_eq!(e.sub_reason(), pb::ErrorSubReason::ContextWindowExceeded);
        assert_eq!(e.retry_status(), pb::RetryStatus::Exhausted);
        assert_eq!((e.status_code, e.attempts), (529, 25));
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
