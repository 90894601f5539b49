use chaterror::{
    BoxError, Http2StreamReset, Provider, ProviderHttpError, ProviderStreamError, TransportTimeout,
};

/// Why a model call failed. Every variant keeps the typed value `chaterror` recognises as its
/// source, so `chaterror::classify(&err, ..)` sees statuses, headers, provider codes, resets and
/// timeouts, not just text.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A non-2xx response.
    #[error("{0}")]
    Http(#[source] ProviderHttpError),
    /// An error event inside a 200 stream.
    #[error("{0}")]
    Stream(#[source] ProviderStreamError),
    /// An HTTP/2 stream reset.
    #[error("{0}")]
    Reset(#[source] Http2StreamReset),
    /// chatd's connect or first-byte timeout.
    #[error("{0}")]
    Timeout(#[source] TransportTimeout),
    /// The stream ended before its terminal event (spec/chaterror.md §15(a) texts).
    #[error("{} stream closed before {}", stream_name(*provider), terminal_event(*provider))]
    Truncated {
        /// Whose stream.
        provider: Provider,
        /// Why it ended (e.g. EOF, a transport error).
        #[source]
        cause: BoxError,
    },
    /// A stream event whose data is not the JSON the provider documents.
    #[error("invalid {provider} stream event {event:?}: {detail}")]
    InvalidEvent {
        /// Whose stream.
        provider: Provider,
        /// The event (or `data` for unnamed events).
        event: String,
        /// What was wrong.
        detail: String,
    },
    /// Any other transport failure (connection refused, TLS, ...), kept as the source.
    #[error("provider request failed")]
    Transport(#[source] BoxError),
}

fn stream_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Anthropic => "anthropic",
        _ => "openai chat completions",
    }
}

fn terminal_event(provider: Provider) -> &'static str {
    match provider {
        Provider::Anthropic => "message_stop",
        _ => "[DONE]",
    }
}
