//! The provider error-code table (spec/chaterror.md §15(a)): provider machine codes decide the
//! kind before any text rule. Each row is keyed on the payload field its provider uses
//! (Anthropic `error.type`, OpenAI `code`, Google `error.status`); the codes of the three
//! providers are disjoint, so a row applies whichever provider (or gateway speaking its format)
//! reported it.

use crate::{ErrorKind, SubReason};

/// The payload field a code was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeField {
    /// `error.type`, the top-level `type`, or a stream error's type.
    Type,
    /// `error.code` or a stream error's code.
    Code,
    /// `error.status` (Google).
    Status,
}

/// A code read from an error payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadCode {
    pub(crate) field: CodeField,
    pub(crate) value: String,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeRule {
    pub(crate) code: &'static str,
    /// The fields this row reads the code from.
    pub(crate) fields: &'static [CodeField],
    pub(crate) kind: ErrorKind,
    pub(crate) retryable: bool,
    /// † in the spec: a config match in the text wins over this row.
    pub(crate) yields_to_config: bool,
    pub(crate) sub_reason: Option<SubReason>,
    pub(crate) chain_broken: bool,
    /// A "try again in N s" hint in the message sets `retry_after`.
    pub(crate) reads_body_hint: bool,
}

const ANTHROPIC: &[CodeField] = &[CodeField::Type];
const OPENAI: &[CodeField] = &[CodeField::Code];
const OPENAI_CODE_OR_TYPE: &[CodeField] = &[CodeField::Code, CodeField::Type];
/// Google's `error.status`; a stream adapter reports it as the error type.
const GOOGLE: &[CodeField] = &[CodeField::Status, CodeField::Type];

const fn rule(
    fields: &'static [CodeField],
    code: &'static str,
    kind: ErrorKind,
    retryable: bool,
) -> CodeRule {
    CodeRule {
        code,
        fields,
        kind,
        retryable,
        yields_to_config: false,
        sub_reason: None,
        chain_broken: false,
        reads_body_hint: false,
    }
}

const fn yielding(mut r: CodeRule) -> CodeRule {
    r.yields_to_config = true;
    r
}

use ErrorKind::{Auth, Config, Generic, Overloaded, RateLimit, Timeout, UsageLimit};

pub(crate) const TABLE: &[CodeRule] = &[
    // Anthropic `error.type`.
    rule(ANTHROPIC, "overloaded_error", Overloaded, true),
    yielding(rule(ANTHROPIC, "rate_limit_error", RateLimit, true)),
    rule(ANTHROPIC, "api_error", Generic, true),
    yielding(rule(ANTHROPIC, "timeout_error", Timeout, true)),
    rule(ANTHROPIC, "authentication_error", Auth, false),
    yielding(rule(ANTHROPIC, "permission_error", Auth, false)),
    rule(ANTHROPIC, "billing_error", UsageLimit, false),
    // OpenAI `code` (or `type`).
    rule(OPENAI, "server_is_overloaded", Overloaded, true),
    rule(OPENAI, "slow_down", Overloaded, true),
    CodeRule {
        reads_body_hint: true,
        ..yielding(rule(OPENAI, "rate_limit_exceeded", RateLimit, true))
    },
    rule(OPENAI_CODE_OR_TYPE, "insufficient_quota", UsageLimit, false),
    CodeRule {
        sub_reason: Some(SubReason::ContextWindowExceeded),
        ..rule(OPENAI, "context_length_exceeded", Config, false)
    },
    rule(OPENAI, "invalid_api_key", Auth, false),
    rule(OPENAI, "model_not_found", Config, false),
    rule(OPENAI, "server_error", Generic, true),
    CodeRule {
        chain_broken: true,
        ..rule(OPENAI, "previous_response_not_found", Generic, true)
    },
    // Google `error.status`.
    yielding(rule(GOOGLE, "RESOURCE_EXHAUSTED", RateLimit, true)),
    yielding(rule(GOOGLE, "UNAVAILABLE", Timeout, true)),
    yielding(rule(GOOGLE, "DEADLINE_EXCEEDED", Timeout, true)),
    rule(GOOGLE, "INTERNAL", Generic, true),
    rule(GOOGLE, "UNAUTHENTICATED", Auth, false),
    yielding(rule(GOOGLE, "PERMISSION_DENIED", Auth, false)),
];

/// The first row (in table order) whose code was read, skipping rows that yield to a config
/// match when there is one.
pub(crate) fn lookup(codes: &[ReadCode], config_match: bool) -> Option<&'static CodeRule> {
    TABLE
        .iter()
        .filter(|r| !(r.yields_to_config && config_match))
        .find(|r| {
            codes
                .iter()
                .any(|c| c.value == r.code && r.fields.contains(&c.field))
        })
}
