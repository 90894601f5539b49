//! Wire payloads (spec/chaterror.md §13): a classification as `chatd.v1.ChatError` and as the
//! reference fields of a `chatd.v1.RetryEvent`, and back.

use std::time::{Duration, SystemTime};

use chatproto::chatd::v1 as wire;

use crate::{
    Classification, ClassificationSource, ErrorKind, Provider, SubReason, retry_banner_text,
};

/// The terminal error payload of a classification (`chats.last_error`, the stream's `error`
/// event); `None` for the empty classification. `retry_status` and `attempts` are left for the
/// retry owner to fill in.
///
/// ```
/// use chaterror::{ClassifyContext, classify, terminal_payload};
/// use chatproto::chatd::v1::ErrorKind;
///
/// let c = classify(&std::io::Error::other("status 401"), &ClassifyContext::new(std::time::SystemTime::UNIX_EPOCH));
/// let wire = terminal_payload(&c).unwrap();
/// assert_eq!(wire.kind(), ErrorKind::Auth);
/// assert_eq!(wire.status_code, 401);
/// ```
pub fn terminal_payload(c: &Classification) -> Option<wire::ChatError> {
    if c.is_empty() {
        return None;
    }
    Some(wire::ChatError {
        message: c.message.clone(),
        detail: c.detail.clone(),
        kind: kind_to_wire(c.kind).into(),
        provider: provider_to_wire(c.provider).into(),
        retryable: c.retryable,
        status_code: u32::from(c.status_code),
        source: source_to_wire(c.source).into(),
        sub_reason: match c.sub_reason {
            Some(SubReason::ContextWindowExceeded) => wire::ErrorSubReason::ContextWindowExceeded,
            None => wire::ErrorSubReason::Unspecified,
        }
        .into(),
        provider_code: c.provider_code.clone().unwrap_or_default(),
        retry_status: wire::RetryStatus::Unspecified.into(),
        attempts: 0,
        retry_after: (!c.retry_after.is_zero())
            .then(|| chatproto::prost_types::Duration::try_from(c.retry_after).ok())
            .flatten(),
        // The classification knows no response headers; the retry owner adds the id.
        provider_request_id: String::new(),
    })
}

/// The reference fields of a retry event for a failure that will be retried after `delay`
/// (`attempt` is 1-based; `error` is the retry-banner text). The retry owner adds
/// `retry_status`, `delay_source`, `max_attempts`, `parked` and `provider_request_id`.
pub fn retry_payload(
    c: &Classification,
    attempt: u32,
    delay: Duration,
    now: SystemTime,
) -> wire::RetryEvent {
    wire::RetryEvent {
        attempt,
        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        error: retry_banner_text(c),
        kind: kind_to_wire(c.kind).into(),
        provider: provider_to_wire(c.provider).into(),
        status_code: u32::from(c.status_code),
        retrying_at: now
            .checked_add(delay)
            .map(chatproto::prost_types::Timestamp::from),
        ..wire::RetryEvent::default()
    }
}

impl From<&Classification> for wire::ChatError {
    /// Like [`terminal_payload`], but an empty classification gives an empty `ChatError`.
    fn from(c: &Classification) -> Self {
        terminal_payload(c).unwrap_or_default()
    }
}

/// Reads a stored or received `ChatError` back into a classification (internal-only fields at
/// their defaults; the message is kept verbatim, so the template is `Custom`).
pub fn classification_from_wire(err: &wire::ChatError) -> Classification {
    Classification {
        message: err.message.clone(),
        detail: err.detail.clone(),
        kind: kind_from_wire(err.kind()),
        provider: provider_from_wire(err.provider()),
        retryable: err.retryable,
        status_code: u16::try_from(err.status_code).unwrap_or(0),
        retry_after: err
            .retry_after
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default(),
        source: match err.source() {
            wire::ClassificationSource::Explicit => ClassificationSource::Explicit,
            wire::ClassificationSource::Structured => ClassificationSource::Structured,
            wire::ClassificationSource::Heuristic => ClassificationSource::Heuristic,
            wire::ClassificationSource::Default | wire::ClassificationSource::Unspecified => {
                ClassificationSource::Default
            }
        },
        sub_reason: match err.sub_reason() {
            wire::ErrorSubReason::ContextWindowExceeded => Some(SubReason::ContextWindowExceeded),
            wire::ErrorSubReason::Unspecified => None,
        },
        provider_code: (!err.provider_code.is_empty()).then(|| err.provider_code.clone()),
        message_template: crate::MessageTemplate::Custom,
        ..Classification::default()
    }
}

/// A kind as its wire enum.
pub fn kind_to_wire(kind: Option<ErrorKind>) -> wire::ErrorKind {
    use wire::ErrorKind as W;
    match kind {
        None => W::Unspecified,
        Some(ErrorKind::Overloaded) => W::Overloaded,
        Some(ErrorKind::RateLimit) => W::RateLimit,
        Some(ErrorKind::Timeout) => W::Timeout,
        Some(ErrorKind::StreamSilenceTimeout) => W::StreamSilenceTimeout,
        Some(ErrorKind::UsageLimit) => W::UsageLimit,
        Some(ErrorKind::Auth) => W::Auth,
        Some(ErrorKind::Config) => W::Config,
        Some(ErrorKind::MissingKey) => W::MissingKey,
        Some(ErrorKind::ProviderDisabled) => W::ProviderDisabled,
        Some(ErrorKind::ContentFilter) => W::ContentFilter,
        Some(ErrorKind::Generic) => W::Generic,
        Some(ErrorKind::HookDispatchFailed) => W::HookDispatchFailed,
        Some(ErrorKind::HookDenied) => W::HookDenied,
    }
}

/// A wire kind as a kind (`None` for unspecified).
pub fn kind_from_wire(kind: wire::ErrorKind) -> Option<ErrorKind> {
    ErrorKind::ALL
        .into_iter()
        .find(|k| kind_to_wire(Some(*k)) == kind)
}

/// A provider as its wire enum.
pub fn provider_to_wire(provider: Option<Provider>) -> wire::ProviderKind {
    use wire::ProviderKind as W;
    match provider {
        None => W::Unspecified,
        Some(Provider::OpenAiCompat) => W::OpenaiCompat,
        Some(Provider::Azure) => W::Azure,
        Some(Provider::OpenRouter) => W::Openrouter,
        Some(Provider::Bedrock) => W::Bedrock,
        Some(Provider::Vercel) => W::Vercel,
        Some(Provider::Anthropic) => W::Anthropic,
        Some(Provider::Google) => W::Google,
        Some(Provider::OpenAi) => W::Openai,
    }
}

/// A wire provider as a provider (`None` for unspecified).
pub fn provider_from_wire(provider: wire::ProviderKind) -> Option<Provider> {
    Provider::DETECTION_ORDER
        .into_iter()
        .find(|p| provider_to_wire(Some(*p)) == provider)
}

fn source_to_wire(source: ClassificationSource) -> wire::ClassificationSource {
    match source {
        ClassificationSource::Explicit => wire::ClassificationSource::Explicit,
        ClassificationSource::Structured => wire::ClassificationSource::Structured,
        ClassificationSource::Heuristic => wire::ClassificationSource::Heuristic,
        ClassificationSource::Default => wire::ClassificationSource::Default,
    }
}
