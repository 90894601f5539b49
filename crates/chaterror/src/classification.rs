//! The result of classifying an error, its normalisation, the provider-hint override and the
//! user-facing messages (spec/chaterror.md §2.1, §11, §12).

use std::time::Duration;

use crate::detail;
use crate::{
    ClassificationSource, ErrorKind, Provider, RetryAfterSource, SubReason, normalize_provider,
};

/// Which message template produced (or will produce) `message`, so a provider hint can
/// re-render it with the new subject (spec/chaterror.md §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageTemplate {
    /// The per-kind table of §12.1 (the default).
    #[default]
    Kind,
    /// `The request was canceled before it completed.`
    Canceled,
    /// The OpenAI Responses continuity mismatch message.
    ContinuityMismatch,
    /// `<S> stream closed unexpectedly before the response completed.`
    StreamClosed,
    /// The engine's "compaction could not reduce the history" message (kind `config`).
    CompactionOverLimit,
    /// A message set by whoever pinned the classification; never re-rendered.
    Custom,
}

/// A classified error: what the user is told, what an operator sees, and what the retry owner
/// may do (spec/chaterror.md §2.1). The default value is the empty ("no error") classification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    /// User-facing sentence; never the raw error text. Empty only for "no error".
    pub message: String,
    /// Sanitised diagnostic text, at most 500 characters.
    pub detail: String,
    /// The kind; `None` only for "no error".
    pub kind: Option<ErrorKind>,
    /// The normalised provider, if known.
    pub provider: Option<Provider>,
    /// Whether the retry owner may try again.
    pub retryable: bool,
    /// HTTP status; 0 = unknown. Never 200.
    pub status_code: u16,
    /// The provider's back-off hint; zero = none.
    pub retry_after: Duration,
    /// Where `retry_after` came from.
    pub retry_after_source: Option<RetryAfterSource>,
    /// The OpenAI Responses `previous_response_id` chain is broken: drop the chain id, reload
    /// the full history and retry.
    pub chain_broken: bool,
    /// Which evidence decided.
    pub source: ClassificationSource,
    /// Machine-readable refinement of the kind.
    pub sub_reason: Option<SubReason>,
    /// The provider's machine error type/code that decided, when one was read.
    pub provider_code: Option<String>,
    /// Category for the `content_filter` message, when the provider named one.
    pub content_filter_category: Option<String>,
    /// Which template produced `message`.
    pub message_template: MessageTemplate,
    /// The response said `x-should-retry: true` but the kind cannot be fixed by retrying, so the
    /// header was ignored. `classify` does not log; callers should log a warning when set.
    pub should_retry_ignored: bool,
}

impl Classification {
    /// Whether this is the empty ("no error") classification: nothing to report.
    pub fn is_empty(&self) -> bool {
        self.message.is_empty()
    }

    /// The engine's terminal error when a compaction just ran and the history is still over the
    /// model's limit (spec/chaterror.md §12.1; kind `config`, not retryable).
    pub fn compaction_still_over_limit() -> Self {
        normalize(Self {
            kind: Some(ErrorKind::Config),
            message_template: MessageTemplate::CompactionOverLimit,
            source: ClassificationSource::Explicit,
            ..Self::default()
        })
    }

    /// Applies a provider hint (spec/chaterror.md §11.2): when the hint names a provider, set
    /// it and re-render the message with the new subject (unless the provider did not change
    /// and a message is present). Everything else is preserved. An unknown hint changes
    /// nothing.
    ///
    /// ```
    /// use chaterror::{Classification, ErrorKind, Provider};
    ///
    /// let c = Classification { kind: Some(ErrorKind::RateLimit), retryable: true, status_code: 429, ..Default::default() };
    /// let c = chaterror::normalize(c).with_provider("openai");
    /// assert_eq!(c.provider, Some(Provider::OpenAi));
    /// assert_eq!(c.message, "OpenAI is rate limiting requests.");
    /// ```
    pub fn with_provider(mut self, hint: &str) -> Self {
        let Some(provider) = normalize_provider(hint) else {
            return self;
        };
        let changed = self.provider != Some(provider);
        self.provider = Some(provider);
        if (changed || self.message.is_empty())
            && self.message_template != MessageTemplate::Custom
            && self.kind.is_some()
        {
            self.message = render_message(&self);
        }
        self
    }
}

/// Normalises a classification (spec/chaterror.md §11.1): trims texts, caps `detail`, turns an
/// empty kind with something to say into `generic`, and generates an empty `message`.
/// Applied by `classify` to every result, including pinned ones.
pub fn normalize(mut c: Classification) -> Classification {
    c.message = c.message.trim().to_owned();
    c.detail = detail::cap(c.detail.trim());
    if c.kind.is_none() && (!c.message.is_empty() || !c.detail.is_empty()) {
        c.kind = Some(ErrorKind::Generic);
    }
    if c.message.is_empty() && c.kind.is_some() {
        if c.message_template == MessageTemplate::Custom {
            c.message_template = MessageTemplate::Kind;
        }
        c.message = render_message(&c);
    }
    c
}

/// `<S>`, `<s>` and `<D>` of spec/chaterror.md §2.3.
struct Subject {
    sentence: &'static str,
    mid: &'static str,
    adjective: &'static str,
}

fn subject(provider: Option<Provider>) -> Subject {
    match provider {
        Some(p) => Subject {
            sentence: p.display_name(),
            mid: p.display_name(),
            adjective: p.display_name(),
        },
        None => Subject {
            sentence: "The AI provider",
            mid: "the AI provider",
            adjective: "AI",
        },
    }
}

/// Renders the message of `c`'s template for its kind, provider, retry flag and status
/// (spec/chaterror.md §12.1).
fn render_message(c: &Classification) -> String {
    let s = subject(c.provider);
    match c.message_template {
        MessageTemplate::Canceled => {
            return "The request was canceled before it completed.".to_owned();
        }
        MessageTemplate::ContinuityMismatch => {
            return "The chat continuation failed due to an internal state mismatch. This is not a configuration or billing issue."
                .to_owned();
        }
        MessageTemplate::StreamClosed => {
            return format!(
                "{} stream closed unexpectedly before the response completed.",
                s.sentence
            );
        }
        MessageTemplate::CompactionOverLimit => {
            return "Conversation compaction could not reduce the history below the configured limit. Raise the compaction limit in settings, or start a new conversation."
                .to_owned();
        }
        MessageTemplate::Kind | MessageTemplate::Custom => {}
    }
    let unknown_and_final = !c.retryable && c.status_code == 0;
    match c.kind.unwrap_or(ErrorKind::Generic) {
        ErrorKind::Overloaded => format!("{} is temporarily overloaded.", s.sentence),
        ErrorKind::RateLimit => format!("{} is rate limiting requests.", s.sentence),
        ErrorKind::Timeout if unknown_and_final => "The request timed out before it completed.".to_owned(),
        ErrorKind::Timeout => format!("{} is temporarily unavailable.", s.sentence),
        ErrorKind::StreamSilenceTimeout => format!("{} did not send response data in time.", s.sentence),
        ErrorKind::UsageLimit => format!(
            "The usage quota for {} has been exceeded. Check the billing and quota settings for the provider account.",
            s.mid
        ),
        ErrorKind::Auth => format!("Authentication with {} failed. Check the API key and permissions.", s.mid),
        ErrorKind::Config => format!(
            "{} rejected the model configuration. Check the selected model and provider settings.",
            s.sentence
        ),
        ErrorKind::MissingKey => "This conversation was started with an API key that is no longer available. Send your message again to continue.".to_owned(),
        ErrorKind::ProviderDisabled => {
            format!("The {} provider has been disabled. Contact your administrator.", s.adjective)
        }
        ErrorKind::ContentFilter => match c.content_filter_category.as_deref().map(str::trim) {
            Some(category) if !category.is_empty() => {
                format!("{} blocked this response under its content policy ({category}).", s.sentence)
            }
            _ => format!("{} blocked this response under its content policy.", s.sentence),
        },
        ErrorKind::Generic | ErrorKind::HookDispatchFailed | ErrorKind::HookDenied if unknown_and_final => {
            "The chat request failed unexpectedly.".to_owned()
        }
        ErrorKind::Generic | ErrorKind::HookDispatchFailed | ErrorKind::HookDenied => {
            format!("{} returned an unexpected error.", s.sentence)
        }
    }
}

/// The short text of a retry banner: the `error` field of a retry event (spec/chaterror.md
/// §12.2). A retryable classification with a message shows the message.
///
/// ```
/// use chaterror::{Classification, ErrorKind, retry_banner_text};
///
/// let auth = Classification { kind: Some(ErrorKind::Auth), message: "x".into(), ..Default::default() };
/// assert_eq!(retry_banner_text(&auth), "Authentication with the AI provider failed.");
/// ```
pub fn retry_banner_text(c: &Classification) -> String {
    if c.retryable && !c.message.is_empty() {
        return c.message.clone();
    }
    let s = subject(c.provider);
    match c.kind {
        Some(ErrorKind::Auth) => format!("Authentication with {} failed.", s.mid),
        Some(ErrorKind::Config) => format!("{} rejected the model configuration.", s.sentence),
        Some(ErrorKind::MissingKey) => {
            "The API key for this conversation is no longer available.".to_owned()
        }
        Some(ErrorKind::ProviderDisabled) => {
            format!(
                "The {} provider has been disabled by an administrator.",
                s.adjective
            )
        }
        _ => format!("{} returned an unexpected error.", s.sentence),
    }
}
