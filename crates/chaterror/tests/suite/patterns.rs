//! spec/chaterror.md §14.2: every literal of the rule table, alone.

use crate::rows;
use crate::support::*;

rows! {
    overloaded: text("overloaded") => Overloaded, true, 0, None, "overloaded", "The AI provider is temporarily overloaded.";

    rate_limit_space: text("rate limit") => RateLimit, true, 0, None, "rate limit", RATE_LIMITING;
    rate_limit_underscore: text("rate_limit") => RateLimit, true, 0, None, "rate_limit", RATE_LIMITING;
    rate_limited: text("rate limited") => RateLimit, true, 0, None, "rate limited", RATE_LIMITING;
    rate_limited_hyphen: text("rate-limited") => RateLimit, true, 0, None, "rate-limited", RATE_LIMITING;
    too_many_requests: text("too many requests") => RateLimit, true, 0, None, "too many requests", RATE_LIMITING;

    timeout: text("timeout") => Timeout, true, 0, None, "timeout", UNAVAILABLE;
    timed_out: text("timed out") => Timeout, true, 0, None, "timed out", UNAVAILABLE;
    service_unavailable: text("service unavailable") => Timeout, true, 0, None, "service unavailable", UNAVAILABLE;
    unavailable: text("unavailable") => Timeout, true, 0, None, "unavailable", UNAVAILABLE;
    connection_reset: text("connection reset") => Timeout, true, 0, None, "connection reset", UNAVAILABLE;
    connection_refused: text("connection refused") => Timeout, true, 0, None, "connection refused", UNAVAILABLE;
    eof: text("eof") => Timeout, true, 0, None, "eof", UNAVAILABLE;
    broken_pipe: text("broken pipe") => Timeout, true, 0, None, "broken pipe", UNAVAILABLE;
    bad_gateway: text("bad gateway") => Timeout, true, 0, None, "bad gateway", UNAVAILABLE;
    gateway_timeout: text("gateway timeout") => Timeout, true, 0, None, "gateway timeout", UNAVAILABLE;
    client_conn: text("client conn") => Timeout, true, 0, None, "client conn", UNAVAILABLE;
    goaway: text("goaway") => Timeout, true, 0, None, "goaway", UNAVAILABLE;
    http2_stream_closed: text("http2: stream closed") => Timeout, true, 0, None, "http2: stream closed", UNAVAILABLE;
    closed_network_connection: text("use of closed network connection") => Timeout, true, 0, None, "use of closed network connection", UNAVAILABLE;
    internal_error_from_peer: text("internal_error; received from peer") => Timeout, true, 0, None, "internal_error; received from peer", UNAVAILABLE;
    refused_stream_from_peer: text("refused_stream; received from peer") => Timeout, true, 0, None, "refused_stream; received from peer", UNAVAILABLE;
    cancel_from_peer: text("cancel; received from peer") => Timeout, true, 0, None, "cancel; received from peer", UNAVAILABLE;
    enhance_your_calm_from_peer: text("enhance_your_calm; received from peer") => Timeout, true, 0, None, "enhance_your_calm; received from peer", UNAVAILABLE;
    no_error_from_peer: text("no_error; received from peer") => Timeout, true, 0, None, "no_error; received from peer", UNAVAILABLE;
    status_408: text("status 408") => Timeout, true, 408, None, "status 408", UNAVAILABLE;

    authentication: text("authentication") => Auth, false, 0, None, "", A;
    unauthorized: text("unauthorized") => Auth, false, 0, None, "", A;
    invalid_api_key_space: text("invalid api key") => Auth, false, 0, None, "", A;
    invalid_api_key_underscore: text("invalid_api_key") => Auth, false, 0, None, "", A;
    forbidden: text("forbidden") => Auth, false, 0, None, "", A;

    quota: text("quota") => UsageLimit, false, 0, None, "quota", u("the AI provider");
    billing: text("billing") => UsageLimit, false, 0, None, "billing", u("the AI provider");
    insufficient_quota: text("insufficient_quota") => UsageLimit, false, 0, None, "insufficient_quota", u("the AI provider");
    payment_required: text("payment required") => UsageLimit, false, 0, None, "payment required", u("the AI provider");

    invalid_model: text("invalid model") => Config, false, 0, None, "invalid model", C;
    model_not_found_space: text("model not found") => Config, false, 0, None, "model not found", C;
    model_not_found_underscore: text("model_not_found") => Config, false, 0, None, "model_not_found", C;
    unsupported_model: text("unsupported model") => Config, false, 0, None, "unsupported model", C;
    context_length_exceeded: text("context length exceeded") => Config, false, 0, None, "context length exceeded", C;
    context_exceeded: text("context_exceeded") => Config, false, 0, None, "context_exceeded", C;
    maximum_context_length: text("maximum context length") => Config, false, 0, None, "maximum context length", C;
    malformed_config: text("malformed config") => Config, false, 0, None, "malformed config", C;
    malformed_configuration: text("malformed configuration") => Config, false, 0, None, "malformed configuration", C;

    server_error: text("server error") => Generic, true, 0, None, "server error", UNEXPECTED;
    internal_server_error: text("internal server error") => Generic, true, 0, None, "internal server error", UNEXPECTED;
    status_500: text("status 500") => Generic, true, 500, None, "status 500", UNEXPECTED;

    chat_interrupted: text("chat interrupted") => Generic, false, 0, None, "", CANCELED;
    request_interrupted: text("request interrupted") => Generic, false, 0, None, "", CANCELED;
    operation_interrupted: text("operation interrupted") => Generic, false, 0, None, "", CANCELED;

    provider_disabled: text("provider_disabled") => ProviderDisabled, false, 0, None, "provider_disabled", "The AI provider has been disabled. Contact your administrator.";
}
