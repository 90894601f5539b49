//! The vocabulary of a classification: kinds, providers, sources and sub-reasons, each with its
//! wire string (spec/chaterror.md §2).

use std::fmt;

/// What kind of failure a classification describes (spec/chaterror.md §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `overloaded`: the provider is temporarily overloaded.
    Overloaded,
    /// `rate_limit`: the provider rate-limited the request.
    RateLimit,
    /// `timeout`: transport failure, gateway timeout, peer stream reset.
    Timeout,
    /// `stream_silence_timeout`: the stream went silent (pinned by the silence guard only).
    StreamSilenceTimeout,
    /// `usage_limit`: quota or billing exhausted.
    UsageLimit,
    /// `auth`: authentication or permission failure.
    Auth,
    /// `config`: bad model, context too long, malformed configuration.
    Config,
    /// `missing_key`: the turn's API key is gone (pinned only).
    MissingKey,
    /// `provider_disabled`: a gateway reports the provider disabled.
    ProviderDisabled,
    /// `content_filter`: the provider filtered the response (pinned only).
    ContentFilter,
    /// `generic`: anything else.
    Generic,
    /// `hook_dispatch_failed`: reserved for lifecycle hooks; accepted, never produced.
    HookDispatchFailed,
    /// `hook_denied`: reserved for lifecycle hooks; accepted, never produced.
    HookDenied,
}

impl ErrorKind {
    /// Every kind, in the spec's order.
    pub const ALL: [ErrorKind; 13] = [
        Self::Overloaded,
        Self::RateLimit,
        Self::Timeout,
        Self::StreamSilenceTimeout,
        Self::UsageLimit,
        Self::Auth,
        Self::Config,
        Self::MissingKey,
        Self::ProviderDisabled,
        Self::ContentFilter,
        Self::Generic,
        Self::HookDispatchFailed,
        Self::HookDenied,
    ];

    /// The wire string, e.g. `rate_limit`.
    ///
    /// ```
    /// assert_eq!(chaterror::ErrorKind::RateLimit.as_str(), "rate_limit");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            Self::StreamSilenceTimeout => "stream_silence_timeout",
            Self::UsageLimit => "usage_limit",
            Self::Auth => "auth",
            Self::Config => "config",
            Self::MissingKey => "missing_key",
            Self::ProviderDisabled => "provider_disabled",
            Self::ContentFilter => "content_filter",
            Self::Generic => "generic",
            Self::HookDispatchFailed => "hook_dispatch_failed",
            Self::HookDenied => "hook_denied",
        }
    }

    /// Parses a wire string; `None` for an unknown one.
    ///
    /// ```
    /// use chaterror::ErrorKind;
    /// assert_eq!(ErrorKind::from_wire("hook_denied"), Some(ErrorKind::HookDenied));
    /// assert_eq!(ErrorKind::from_wire("nope"), None);
    /// ```
    pub fn from_wire(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An LLM provider, by its normalised id (spec/chaterror.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// `openai-compat`: any OpenAI-compatible server.
    OpenAiCompat,
    /// `azure`: Azure OpenAI.
    Azure,
    /// `openrouter`: OpenRouter.
    OpenRouter,
    /// `bedrock`: AWS Bedrock.
    Bedrock,
    /// `vercel`: Vercel AI Gateway.
    Vercel,
    /// `anthropic`: Anthropic.
    Anthropic,
    /// `google`: Google (Gemini, Vertex).
    Google,
    /// `openai`: OpenAI.
    OpenAi,
}

impl Provider {
    /// Every provider, in detection order (the order is load-bearing: "openai compatible" must
    /// not become `openai`).
    pub const DETECTION_ORDER: [Provider; 8] = [
        Self::OpenAiCompat,
        Self::Azure,
        Self::OpenRouter,
        Self::Bedrock,
        Self::Vercel,
        Self::Anthropic,
        Self::Google,
        Self::OpenAi,
    ];

    /// The wire id, e.g. `openai-compat`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiCompat => "openai-compat",
            Self::Azure => "azure",
            Self::OpenRouter => "openrouter",
            Self::Bedrock => "bedrock",
            Self::Vercel => "vercel",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
            Self::OpenAi => "openai",
        }
    }

    /// The name shown to users, e.g. `Azure OpenAI`.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::OpenAiCompat => "OpenAI Compatible",
            Self::Azure => "Azure OpenAI",
            Self::OpenRouter => "OpenRouter",
            Self::Bedrock => "AWS Bedrock",
            Self::Vercel => "Vercel AI Gateway",
            Self::Anthropic => "Anthropic",
            Self::Google => "Google",
            Self::OpenAi => "OpenAI",
        }
    }

    /// Lower-case substrings that identify the provider in error text.
    fn needles(self) -> &'static [&'static str] {
        match self {
            Self::OpenAiCompat => &["openai-compat", "openai compatible"],
            Self::Azure => &["azure openai", "azure-openai"],
            Self::OpenRouter => &["openrouter"],
            Self::Bedrock => &["aws bedrock", "bedrock"],
            Self::Vercel => &["vercel ai gateway", "vercel"],
            Self::Anthropic => &["anthropic", "claude"],
            Self::Google => &["google", "gemini", "vertex"],
            Self::OpenAi => &["openai"],
        }
    }

    /// Detects a provider in text (spec/chaterror.md §7.1): the first provider, in detection
    /// order, with a matching substring of the lower-cased text.
    ///
    /// ```
    /// use chaterror::Provider;
    /// assert_eq!(Provider::detect("OpenAI compatible endpoint failed"), Some(Provider::OpenAiCompat));
    /// assert_eq!(Provider::detect("claude returned 529"), Some(Provider::Anthropic));
    /// assert_eq!(Provider::detect("upstream error"), None);
    /// ```
    pub fn detect(text: &str) -> Option<Self> {
        let lower = text.to_lowercase();
        Self::detect_lowercase(&lower)
    }

    pub(crate) fn detect_lowercase(lower: &str) -> Option<Self> {
        Self::DETECTION_ORDER
            .into_iter()
            .find(|p| p.needles().iter().any(|n| lower.contains(n)))
    }

    /// Parses a wire id exactly; `None` for anything else.
    pub fn from_wire(text: &str) -> Option<Self> {
        Self::DETECTION_ORDER
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalises a provider hint (spec/chaterror.md §7.2): trims and lower-cases, maps the usual
/// spellings, accepts a wire id, then falls back to text detection; `None` when nothing fits
/// (the hint is then ignored).
///
/// ```
/// use chaterror::{Provider, normalize_provider};
/// assert_eq!(normalize_provider("Azure OpenAI"), Some(Provider::Azure));
/// assert_eq!(normalize_provider("openai_compat"), Some(Provider::OpenAiCompat));
/// assert_eq!(normalize_provider("something-else"), None);
/// ```
pub fn normalize_provider(hint: &str) -> Option<Provider> {
    let hint = hint.trim().to_lowercase();
    match hint.as_str() {
        "azure openai" | "azure-openai" => Some(Provider::Azure),
        "openai compat" | "openai compatible" | "openai_compat" => Some(Provider::OpenAiCompat),
        other => Provider::from_wire(other).or_else(|| Provider::detect_lowercase(other)),
    }
}

/// Which evidence decided a classification (spec/chaterror.md §15(b)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClassificationSource {
    /// `explicit`: a pinned classification.
    Explicit,
    /// `structured`: typed markers, structured status, provider codes or headers decided.
    Structured,
    /// `heuristic`: a text pattern or a status read from text was decisive.
    Heuristic,
    /// `default`: nothing matched (also the empty classification).
    #[default]
    Default,
}

impl ClassificationSource {
    /// The wire string, e.g. `heuristic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Structured => "structured",
            Self::Heuristic => "heuristic",
            Self::Default => "default",
        }
    }
}

/// A machine-readable refinement of a kind (spec/chaterror.md §15(d)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubReason {
    /// `context_window_exceeded` (kind `config`): the prompt did not fit the context window.
    ContextWindowExceeded,
}

impl SubReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContextWindowExceeded => "context_window_exceeded",
        }
    }
}

/// Where a `retry_after` hint came from; feeds the `delay_source` of retry events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryAfterSource {
    /// A `retry-after` / `retry-after-ms` response header.
    Header,
    /// A hint in the error body or message ("try again in 1.5s").
    Body,
}
