//! The JSON the engine stores in `chats.last_error` and `chats.retry_state` (spec/chaterror.md
//! §13, spec/chatretry.md §8): the keys of the stream events, empty values omitted.

use chaterror::Classification;
use chatretry::RetryEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// How a turn's failure ended its retries (spec/chatretry.md §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStatus {
    /// Retryable, but attempts, budget or park horizon ran out.
    Exhausted,
    /// Not retryable.
    Terminal,
}

impl RetryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::Terminal => "terminal",
        }
    }
}

/// The terminal `ChatError` JSON of a classification, with the retry owner's `retry_status`,
/// the number of the attempt that failed (0 = not a model call) and the provider's request id
/// when its response had one.
pub fn chat_error(
    c: &Classification,
    status: RetryStatus,
    attempts: i64,
    provider_request_id: Option<&str>,
) -> Value {
    let mut out = Map::new();
    out.insert("message".into(), json!(c.message));
    if !c.detail.is_empty() {
        out.insert("detail".into(), json!(c.detail));
    }
    if let Some(kind) = c.kind {
        out.insert("kind".into(), json!(kind.as_str()));
    }
    if let Some(provider) = c.provider {
        out.insert("provider".into(), json!(provider.as_str()));
    }
    out.insert("retryable".into(), json!(c.retryable));
    if c.status_code != 0 {
        out.insert("status_code".into(), json!(c.status_code));
    }
    out.insert("source".into(), json!(c.source.as_str()));
    if let Some(sub) = c.sub_reason {
        out.insert("sub_reason".into(), json!(sub.as_str()));
    }
    if let Some(code) = c.provider_code.as_deref().filter(|s| !s.is_empty()) {
        out.insert("provider_code".into(), json!(code));
    }
    out.insert("retry_status".into(), json!(status.as_str()));
    if attempts > 0 {
        out.insert("attempts".into(), json!(attempts));
    }
    if let Some(id) = provider_request_id {
        out.insert("provider_request_id".into(), json!(id));
    }
    Value::Object(out)
}

/// The `retry_state` JSON of a scheduled retry.
pub fn retry_state(event: &RetryEvent) -> Value {
    let c = &event.classification;
    let mut out = Map::new();
    out.insert("attempt".into(), json!(event.attempt));
    out.insert(
        "delay_ms".into(),
        json!(u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX)),
    );
    out.insert("error".into(), json!(chaterror::retry_banner_text(c)));
    if let Some(kind) = c.kind {
        out.insert("kind".into(), json!(kind.as_str()));
    }
    if let Some(provider) = c.provider {
        out.insert("provider".into(), json!(provider.as_str()));
    }
    if c.status_code != 0 {
        out.insert("status_code".into(), json!(c.status_code));
    }
    let at: DateTime<Utc> = event.retrying_at.into();
    out.insert(
        "retrying_at".into(),
        json!(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    out.insert("retry_status".into(), json!("retrying"));
    out.insert("delay_source".into(), json!(event.delay_source.as_str()));
    out.insert("max_attempts".into(), json!(event.max_attempts));
    if event.parked {
        out.insert("parked".into(), json!(true));
    }
    if let Some(id) = &event.provider_request_id {
        out.insert("provider_request_id".into(), json!(id));
    }
    Value::Object(out)
}

/// When a stored `retry_state` says the next attempt may start.
pub fn retrying_at(retry_state: &Value) -> Option<DateTime<Utc>> {
    let text = retry_state.get("retrying_at")?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use chaterror::{ClassifyContext, classify};
    use chatretry::DelaySource;

    use super::*;

    fn overloaded() -> Classification {
        classify(
            &chaterror::ProviderHttpError::new(529, "overloaded_error"),
            &ClassifyContext::new(SystemTime::UNIX_EPOCH),
        )
        .with_provider("anthropic")
    }

    #[test]
    fn a_retry_state_has_the_spec_keys_and_round_trips_its_time() {
        let event = RetryEvent {
            attempt: 3,
            delay: Duration::from_secs(4),
            delay_source: DelaySource::Backoff,
            retrying_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_777_636_804),
            error: "status 529".into(),
            classification: overloaded(),
            max_attempts: 25,
            parked: false,
            provider_request_id: None,
        };
        let v = retry_state(&event);
        assert_eq!(v["attempt"], 3);
        assert_eq!(v["delay_ms"], 4000);
        assert_eq!(v["error"], "Anthropic is temporarily overloaded.");
        assert_eq!(v["kind"], "overloaded");
        assert_eq!(v["provider"], "anthropic");
        assert_eq!(v["status_code"], 529);
        assert_eq!(v["retrying_at"], "2026-05-01T12:00:04.000Z");
        assert_eq!(v["retry_status"], "retrying");
        assert_eq!(v["delay_source"], "backoff");
        assert_eq!(v["max_attempts"], 25);
        assert!(v.get("parked").is_none());
        assert_eq!(
            retrying_at(&v).unwrap(),
            DateTime::<Utc>::from(event.retrying_at)
        );
    }

    #[test]
    fn a_chat_error_omits_empty_fields() {
        let v = chat_error(&overloaded(), RetryStatus::Exhausted, 25, Some("req_7"));
        assert_eq!(v["provider_request_id"], "req_7");
        assert_eq!(v["kind"], "overloaded");
        assert_eq!(v["retry_status"], "exhausted");
        assert_eq!(v["attempts"], 25);
        assert!(v.get("sub_reason").is_none());
        let v = chat_error(&overloaded(), RetryStatus::Terminal, 0, None);
        assert!(v.get("attempts").is_none());
        assert!(v.get("provider_request_id").is_none());
    }
}
