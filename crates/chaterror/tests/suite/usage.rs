//! spec/chaterror.md §14.4, rows 53–63: usage limit vs auth vs rate limit.

use chaterror::Provider::{Azure, Google, OpenAi};

use crate::rows;
use crate::support::*;

rows! {
    row53_usage_beats_auth: text("unauthorized: insufficient_quota") => UsageLimit, false, 0, None, "unauthorized: insufficient_quota", u("the AI provider");
    row54_unauthorized: text("unauthorized") => Auth, false, 0, None, "", A;
    row55_status_401: text("status 401") => Auth, false, 401, None, "", A;
    row56_openai_quota_json_text: text("stream error: {\"error\":{\"message\":\"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}") => UsageLimit, false, 0, Some(OpenAi), "", u("OpenAI");
    row57_billing_in_body: boxed(pe("upstream failed", 500).with_body(r#"{"error":{"message":"check your billing plan"}}"#)) => UsageLimit, false, 500, None, "check your billing plan", u("the AI provider");
    row58_429_insufficient_quota: text("status 429: insufficient_quota") => UsageLimit, false, 429, None, "status 429: insufficient_quota", u("the AI provider");
    row59_pe_429_insufficient_quota: boxed(pe("", 429).with_body(r#"{"error":{"message":"insufficient_quota"}}"#)) => UsageLimit, false, 429, None, "insufficient_quota", u("the AI provider");
    row60_gemini_429_quota_is_rate_limit: text("gemini status 429: Resource has been exhausted (e.g. check quota).") => RateLimit, true, 429, Some(Google), "gemini status 429: Resource has been exhausted (e.g. check quota).", "Google is rate limiting requests.";
    row61_azure_429: text("azure openai exceeded token rate limit; quota remaining: 0; status 429") => RateLimit, true, 429, Some(Azure), "azure openai exceeded token rate limit; quota remaining: 0; status 429", "Azure OpenAI is rate limiting requests.";
    row62_429_billing_words: text("status 429: rate limited: upgrade your billing plan for higher rate limits") => RateLimit, true, 429, None, "status 429: rate limited: upgrade your billing plan for higher rate limits", RATE_LIMITING;
    row63_pe_429_quota_words: boxed(pe("Resource has been exhausted (e.g. check quota).", 429)) => RateLimit, true, 429, None, "Resource has been exhausted (e.g. check quota).", RATE_LIMITING;
}
