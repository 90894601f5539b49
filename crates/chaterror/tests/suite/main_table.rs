//! spec/chaterror.md §14.1, rows 1–27.

use chaterror::Provider::{Anthropic, Google, OpenAi};

use crate::rows;
use crate::support::*;

rows! {
    row01_status_529: text("status 529 from upstream") => Overloaded, true, 529, None, "status 529 from upstream", "The AI provider is temporarily overloaded.";
    row02_anthropic_overloaded_error: text("anthropic overloaded_error") => Overloaded, true, 0, Some(Anthropic), "anthropic overloaded_error", "Anthropic is temporarily overloaded.";
    row03_anthropic_stream_closed: text("anthropic stream closed before message_stop: EOF") => Timeout, true, 0, Some(Anthropic), "", "Anthropic stream closed unexpectedly before the response completed.";
    row04_openai_stream_closed: text("openai responses stream closed before terminal event: EOF") => Timeout, true, 0, Some(OpenAi), "", "OpenAI stream closed unexpectedly before the response completed.";
    row05_strong_auth_beats_config: text("authentication failed: invalid model") => Auth, false, 0, None, "", A;
    row06_invalid_model: text("invalid model") => Config, false, 0, None, "invalid model", C;
    row07_forbidden: text("forbidden") => Auth, false, 0, None, "", A;
    row08_status_401: text("status 401 from upstream") => Auth, false, 401, None, "", A;
    row09_status_403: text("status 403 from upstream") => Auth, false, 403, None, "", A;
    row10_config_beats_weak_auth: text("forbidden: context length exceeded") => Config, false, 0, None, "forbidden: context length exceeded", C;
    row11_status_429: text("status 429 from upstream") => RateLimit, true, 429, None, "status 429 from upstream", RATE_LIMITING;
    row12_config_beats_rate_limit: text("status 429: invalid model") => Config, false, 429, None, "status 429: invalid model", C;
    row13_config_beats_rate_limit_with_quota: text("status 429: invalid model quota") => Config, false, 429, None, "status 429: invalid model quota", C;
    row14_service_unavailable: text("service unavailable") => Timeout, true, 0, None, "service unavailable", UNAVAILABLE;
    row15_config_beats_503: text("status 503: invalid model") => Config, false, 503, None, "status 503: invalid model", C;
    row16_config_beats_timeout_text: text("service unavailable: model not found") => Config, false, 0, None, "service unavailable: model not found", C;
    row17_unsupported_model: text("connection refused: unsupported model") => Config, false, 0, None, "connection refused: unsupported model", C;
    row18_deadline_not_retryable: deadline() => Timeout, false, 0, None, "context deadline exceeded", "The request timed out before it completed.";
    row19_reset_joined_with_cancel: join(vec![reset(), cancelled()]) => Timeout, true, 0, None, "provider transport reset context canceled", UNAVAILABLE;
    row20_bare_cancel: cancelled() => Generic, false, 0, None, "", CANCELED;
    row21_status_500_beats_cancel: wrap("received status 500 from upstream: ", cancelled()) => Generic, true, 500, None, "received status 500 from upstream: context canceled", UNEXPECTED;
    row22_joined_provider_error: wrap("provider stream closed: ", join(vec![cancelled(), boxed(pe("context canceled", 500))])) => Generic, true, 500, None, "context canceled", UNEXPECTED;
    row23_provider_disabled_openai: boxed(pe("provider_disabled: AI provider \"openai\" is disabled\n", 503)) => ProviderDisabled, false, 503, Some(OpenAi), "provider_disabled: AI provider \"openai\" is disabled", "The OpenAI provider has been disabled. Contact your administrator.";
    row24_provider_disabled_unknown: boxed(pe("provider_disabled: AI provider \"mycustomprovider\" is disabled\n", 503)) => ProviderDisabled, false, 503, None, "provider_disabled: AI provider \"mycustomprovider\" is disabled", "The AI provider has been disabled. Contact your administrator.";
    row25_provider_disabled_text: text("provider_disabled: AI provider \"anthropic\" is disabled") => ProviderDisabled, false, 0, Some(Anthropic), "provider_disabled: AI provider \"anthropic\" is disabled", "The Anthropic provider has been disabled. Contact your administrator.";
    row26_provider_disabled_google: boxed(pe("provider_disabled: AI provider \"google\" is disabled\n", 503)) => ProviderDisabled, false, 503, Some(Google), "provider_disabled: AI provider \"google\" is disabled", "The Google provider has been disabled. Contact your administrator.";
    row27_pe_service_unavailable: boxed(pe("service unavailable", 503)) => Timeout, true, 503, None, "service unavailable", UNAVAILABLE;
}
