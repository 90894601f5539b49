//! The classification pipeline (spec/chaterror.md §4, §8, §9, §15), in its exact order.

use std::error::Error;
use std::time::SystemTime;

use crate::classification::{MessageTemplate, normalize};
use crate::extract::{Structured, body_retry_hint, status_from_text};
use crate::graph::{find, full_text, nodes};
use crate::{
    Cancelled, Classification, ClassificationSource, DeadlineExceeded, ErrorKind, Http2StreamReset,
    Pinned, Provider, ProviderHttpError, ProviderStreamError, ProviderTransportReset,
    RetryAfterSource, SubReason, TransportTimeout, codes, detail,
};

/// Inputs of `classify` besides the error. `now` is used only to turn an HTTP-date
/// `Retry-After` into a delay; `classify` never reads the clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyContext {
    /// The current time.
    pub now: SystemTime,
}

impl ClassifyContext {
    /// A context at `now`.
    pub fn new(now: SystemTime) -> Self {
        Self { now }
    }
}

/// Classifies any error graph (spec/chaterror.md §4). Pure: the same inputs always give the
/// same result, with no I/O, no clock and no logging.
///
/// ```
/// use chaterror::{ClassifyContext, ErrorKind, ProviderHttpError, classify};
/// use std::time::{Duration, SystemTime};
///
/// let err = ProviderHttpError::new(429, "").with_header("retry-after-ms", "1500");
/// let c = classify(&err, &ClassifyContext::new(SystemTime::UNIX_EPOCH));
/// assert_eq!(c.kind, Some(ErrorKind::RateLimit));
/// assert!(c.retryable);
/// assert_eq!(c.retry_after, Duration::from_millis(1500));
/// assert_eq!(c.message, "The AI provider is rate limiting requests.");
/// ```
pub fn classify(err: &(dyn Error + 'static), ctx: &ClassifyContext) -> Classification {
    let graph = nodes(err);

    // Step 2: a pinned classification wins; nothing else runs.
    if let Some(pinned) = find::<Pinned>(&graph) {
        let mut c = normalize(pinned.classification().clone());
        c.source = ClassificationSource::Explicit;
        return c;
    }

    // Step 3: structured extraction from the first `ProviderHttpError` (its headers carry
    // Retry-After and `x-should-retry`), else from the first `ProviderStreamError`.
    let structured = find::<ProviderHttpError>(&graph)
        .map(|e| Structured::from_http(e, ctx.now))
        .or_else(|| find::<ProviderStreamError>(&graph).map(Structured::from_stream))
        .unwrap_or_default();

    // Step 4: the search text.
    let text = full_text(err);
    if text.is_empty() && !structured.found {
        return Classification::default();
    }
    let lower = text.to_lowercase();
    let detail_lower = structured.detail.to_lowercase();

    // Steps 5 and 6: status and provider.
    // An in-stream error's status comes only from its payload, never from text (§15(a)).
    let (status, status_structured) = if structured.status != 0 || structured.from_stream {
        (structured.status, true)
    } else {
        (status_from_text(&lower), false)
    };
    let provider = structured
        .provider
        .or_else(|| Provider::detect_lowercase(&lower));

    let evidence = Evidence {
        markers: Markers::find(&graph),
        lower: &lower,
        usage_text: format!("{lower}\n{detail_lower}"),
        status,
        status_structured,
    };
    let decision = decide(&evidence, &structured, &detail_lower);

    let mut c = Classification {
        kind: Some(decision.kind),
        retryable: decision.retryable,
        status_code: status,
        provider: provider.or(decision.default_provider),
        detail: match decision.detail {
            // Auth details never come from the client's message: it may echo the key (§10).
            DetailRule::StructuredOnly
                if decision.kind == ErrorKind::Auth && !structured.detail_from_payload =>
            {
                String::new()
            }
            DetailRule::StructuredOnly => detail::structured(&structured.detail),
            DetailRule::StructuredElseFallback if !structured.detail.trim().is_empty() => {
                detail::structured(&structured.detail)
            }
            DetailRule::StructuredElseFallback => detail::fallback(&text),
            DetailRule::Fixed(text) => text.to_owned(),
        },
        retry_after: structured.retry_after,
        retry_after_source: structured.retry_after_source,
        chain_broken: decision.chain_broken,
        source: decision.source,
        sub_reason: decision.sub_reason,
        // The code that decided, else the first one read (for the heuristic-results metric).
        provider_code: decision
            .provider_code
            .or_else(|| structured.codes.first().map(|c| c.value.clone())),
        message_template: decision.template,
        ..Classification::default()
    };
    if decision.reads_body_hint
        && c.retry_after.is_zero()
        && let Some(hint) = body_retry_hint(&structured.detail)
    {
        c.retry_after = hint;
        c.retry_after_source = Some(RetryAfterSource::Body);
    }

    // Step 13a: `x-should-retry` (§15(c)).
    match structured.should_retry {
        Some(false) => c.retryable = false,
        Some(true) if retry_cannot_help(decision.kind) => c.should_retry_ignored = true,
        Some(true) => c.retryable = true,
        None => {}
    }

    // Step 14.
    normalize(c)
}

/// Whether `err`'s classification is retryable.
pub fn is_retryable(err: &(dyn Error + 'static), ctx: &ClassifyContext) -> bool {
    classify(err, ctx).retryable
}

/// Kinds an `x-should-retry: true` header cannot make retryable.
fn retry_cannot_help(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Auth
            | ErrorKind::UsageLimit
            | ErrorKind::MissingKey
            | ErrorKind::ProviderDisabled
            | ErrorKind::ContentFilter
            | ErrorKind::Config
    )
}

/// Typed markers anywhere in the graph.
#[derive(Debug, Default)]
struct Markers {
    cancelled: bool,
    deadline: bool,
    transport_reset: bool,
    transport_timeout: bool,
    /// A peer HTTP/2 reset whose code is worth retrying: a timeout signal.
    h2_retryable_peer: bool,
    /// Any other HTTP/2 reset: its own text must not trigger the timeout patterns.
    h2_other: bool,
}

impl Markers {
    fn find(graph: &[&(dyn Error + 'static)]) -> Self {
        let mut m = Self::default();
        for node in graph {
            m.cancelled |= node.is::<Cancelled>();
            m.deadline |= node.is::<DeadlineExceeded>();
            m.transport_reset |= node.is::<ProviderTransportReset>();
            m.transport_timeout |= node.is::<TransportTimeout>();
            if let Some(reset) = node.downcast_ref::<Http2StreamReset>() {
                if reset.is_retryable_peer_reset() {
                    m.h2_retryable_peer = true;
                } else {
                    m.h2_other = true;
                }
            }
        }
        m
    }
}

/// Everything the rules look at.
struct Evidence<'a> {
    markers: Markers,
    /// The lower-cased full text.
    lower: &'a str,
    /// Full text plus structured detail, lower-cased (rule 2, config match, continuity).
    usage_text: String,
    status: u16,
    status_structured: bool,
}

impl Evidence<'_> {
    fn text_has(&self, needles: &[&str]) -> bool {
        needles.iter().any(|n| self.lower.contains(n))
    }

    /// The source of a rule that held: structured when a structured input alone satisfies it.
    fn source(&self, structured_hit: bool) -> ClassificationSource {
        if structured_hit {
            ClassificationSource::Structured
        } else {
            ClassificationSource::Heuristic
        }
    }

    fn status_in(&self, set: &[u16]) -> bool {
        set.contains(&self.status)
    }

    /// A status from `set` that came from a structured input.
    fn structured_status_in(&self, set: &[u16]) -> bool {
        self.status_structured && self.status_in(set)
    }
}

const CONFIG_LITERALS: &[&str] = &[
    "invalid model",
    "model not found",
    "model_not_found",
    "unsupported model",
    "malformed config",
    "malformed configuration",
];

/// Config literals that mean the context window was exceeded (spec/chaterror.md §15(d)).
const CONTEXT_WINDOW_LITERALS: &[&str] = &[
    "context length exceeded",
    "context_exceeded",
    "maximum context length",
    "context_length_exceeded",
    "prompt is too long",
    "input is too long for requested model",
    "exceeds the maximum number of tokens",
];

const TIMEOUT_PATTERNS: &[&str] = &[
    "timeout",
    "timed out",
    "service unavailable",
    "unavailable",
    "connection reset",
    "connection refused",
    "eof",
    "broken pipe",
    "bad gateway",
    "gateway timeout",
    "client conn",
    "goaway",
    "http2: stream closed",
    "use of closed network connection",
    "internal_error; received from peer",
    "refused_stream; received from peer",
    "cancel; received from peer",
    "enhance_your_calm; received from peer",
    "no_error; received from peer",
];

/// Which detail a decision uses (spec/chaterror.md §10).
enum DetailRule {
    StructuredOnly,
    StructuredElseFallback,
    Fixed(&'static str),
}

struct Decision {
    kind: ErrorKind,
    retryable: bool,
    detail: DetailRule,
    source: ClassificationSource,
    template: MessageTemplate,
    default_provider: Option<Provider>,
    chain_broken: bool,
    sub_reason: Option<SubReason>,
    provider_code: Option<String>,
    reads_body_hint: bool,
}

impl Decision {
    fn new(
        kind: ErrorKind,
        retryable: bool,
        detail: DetailRule,
        source: ClassificationSource,
    ) -> Self {
        Self {
            kind,
            retryable,
            detail,
            source,
            template: MessageTemplate::Kind,
            default_provider: None,
            chain_broken: false,
            sub_reason: None,
            provider_code: None,
            reads_body_hint: false,
        }
    }
}

/// Steps 7 to 13 of the pipeline, first match wins.
fn decide(e: &Evidence<'_>, structured: &Structured, detail_lower: &str) -> Decision {
    use ClassificationSource::{Default as Fallthrough, Heuristic, Structured as Typed};
    use DetailRule::{Fixed, StructuredElseFallback, StructuredOnly};

    // Step 7: interrupted.
    if e.text_has(&[
        "chat interrupted",
        "request interrupted",
        "operation interrupted",
    ]) {
        return Decision {
            template: MessageTemplate::Canceled,
            ..Decision::new(ErrorKind::Generic, false, StructuredOnly, Heuristic)
        };
    }

    // Step 8: OpenAI Responses continuity diagnostics (text or structured detail).
    let continuity = [
        (
            "no tool output found for function call",
            "OpenAI Responses API request continuity diagnostic: match=function_call_output_missing.",
        ),
        (
            "was provided without its required 'reasoning' item",
            "OpenAI Responses API request continuity diagnostic: match=web_search_reasoning_missing.",
        ),
    ];
    for (needle, diagnostic) in continuity {
        if e.lower.contains(needle) || detail_lower.contains(needle) {
            return Decision {
                template: MessageTemplate::ContinuityMismatch,
                ..Decision::new(ErrorKind::Generic, false, Fixed(diagnostic), Heuristic)
            };
        }
    }

    // Step 9: a stream that closed before its terminal event.
    for (needle, provider) in [
        (
            "anthropic stream closed before message_stop",
            Provider::Anthropic,
        ),
        (
            "openai responses stream closed before terminal event",
            Provider::OpenAi,
        ),
    ] {
        if e.lower.contains(needle) {
            return Decision {
                template: MessageTemplate::StreamClosed,
                default_provider: Some(provider),
                ..Decision::new(ErrorKind::Timeout, true, StructuredOnly, Heuristic)
            };
        }
    }

    // Step 10: broken response chain.
    if e.lower.contains("previous response with id") && e.lower.contains("not found") {
        return Decision {
            default_provider: Some(Provider::OpenAi),
            chain_broken: true,
            ..Decision::new(ErrorKind::Generic, true, StructuredOnly, Heuristic)
        };
    }

    let context_window = CONTEXT_WINDOW_LITERALS
        .iter()
        .any(|l| e.usage_text.contains(l));
    let config_match = context_window || CONFIG_LITERALS.iter().any(|l| e.usage_text.contains(l));

    // Step 10a: the provider error-code table.
    if let Some(rule) = codes::lookup(&structured.codes, config_match) {
        let detail = if rule.kind == ErrorKind::Auth {
            StructuredOnly
        } else {
            StructuredElseFallback
        };
        return Decision {
            chain_broken: rule.chain_broken,
            sub_reason: rule.sub_reason,
            provider_code: Some(rule.code.to_owned()),
            reads_body_hint: rule.reads_body_hint,
            ..Decision::new(rule.kind, rule.retryable, detail, Typed)
        };
    }

    // Step 11: the rule table (§8).
    // 1. overloaded
    if e.status == 529 || e.text_has(&["overloaded"]) {
        return Decision::new(
            ErrorKind::Overloaded,
            true,
            StructuredElseFallback,
            e.source(e.structured_status_in(&[529])),
        );
    }
    // 2. usage limit
    let usage = &e.usage_text;
    if usage.contains("insufficient_quota")
        || (e.status != 429
            && ["quota", "billing", "payment required"]
                .iter()
                .any(|n| usage.contains(n)))
    {
        return Decision::new(
            ErrorKind::UsageLimit,
            false,
            StructuredElseFallback,
            Heuristic,
        );
    }
    // 3. strong auth
    if e.status == 401
        || e.text_has(&[
            "authentication",
            "unauthorized",
            "invalid api key",
            "invalid_api_key",
        ])
    {
        return Decision::new(
            ErrorKind::Auth,
            false,
            StructuredOnly,
            e.source(e.structured_status_in(&[401])),
        );
    }
    // 4. weak auth
    if (e.status == 403 || e.text_has(&["forbidden"])) && !config_match {
        return Decision::new(
            ErrorKind::Auth,
            false,
            StructuredOnly,
            e.source(e.structured_status_in(&[403])),
        );
    }
    // 5. rate limit
    if (e.status == 429
        || e.text_has(&[
            "rate limit",
            "rate_limit",
            "rate limited",
            "rate-limited",
            "too many requests",
        ]))
        && !config_match
    {
        return Decision::new(
            ErrorKind::RateLimit,
            true,
            StructuredElseFallback,
            e.source(e.structured_status_in(&[429])),
        );
    }
    // 6. provider disabled (before 7, so it beats a 503)
    if e.text_has(&["provider_disabled"]) {
        return Decision::new(
            ErrorKind::ProviderDisabled,
            false,
            StructuredElseFallback,
            Heuristic,
        );
    }
    // 7. timeout
    if !config_match {
        let m = &e.markers;
        let typed_signal = (m.transport_reset && e.status == 0)
            || m.deadline
            || m.transport_timeout
            || m.h2_retryable_peer
            || e.structured_status_in(&[408, 502, 503, 504]);
        let text_signal =
            e.status_in(&[408, 502, 503, 504]) || (!m.h2_other && e.text_has(TIMEOUT_PATTERNS));
        if typed_signal || text_signal {
            return Decision::new(
                ErrorKind::Timeout,
                !m.deadline,
                StructuredElseFallback,
                e.source(typed_signal),
            );
        }
    }
    // 8. config
    if config_match {
        return Decision {
            sub_reason: context_window.then_some(SubReason::ContextWindowExceeded),
            ..Decision::new(ErrorKind::Config, false, StructuredElseFallback, Heuristic)
        };
    }
    // 9. server error
    if e.status == 500 || e.text_has(&["server error", "internal server error"]) {
        return Decision::new(
            ErrorKind::Generic,
            true,
            StructuredElseFallback,
            e.source(e.structured_status_in(&[500])),
        );
    }

    // Step 12: a bare cancellation.
    if e.markers.cancelled {
        return Decision {
            template: MessageTemplate::Canceled,
            ..Decision::new(ErrorKind::Generic, false, StructuredOnly, Typed)
        };
    }

    // Step 13: nothing matched.
    Decision::new(
        ErrorKind::Generic,
        false,
        StructuredElseFallback,
        Fallthrough,
    )
}
