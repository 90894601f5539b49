//! The HTTP transport: one shared `reqwest` client per provider configuration, separate connect
//! / first-byte / inter-event timeouts, and failures mapped to the typed values `chaterror`
//! classifies. It never retries.

use std::error::Error as StdError;
use std::pin::Pin;
use std::time::Duration;

use chaterror::{
    BoxError, Http2ErrorCode, Http2StreamReset, Provider, ProviderHttpError, ResetOrigin,
    TimeoutPhase, TransportTimeout,
};
use eventsource_stream::{Event, Eventsource as _};
use futures_util::{Stream, StreamExt as _};

use crate::anthropic::{self, AnthropicDecoder};
use crate::openai::{self, OpenAiDecoder};
use crate::{ModelError, ModelRequest, StreamPart};

/// The most of an error response body that is kept.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// The Anthropic API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions.
    OpenAi,
    /// An OpenAI-compatible server (Chat Completions wire format).
    OpenAiCompatible,
}

impl WireFormat {
    fn provider(self) -> Provider {
        match self {
            Self::Anthropic => Provider::Anthropic,
            Self::OpenAi => Provider::OpenAi,
            Self::OpenAiCompatible => Provider::OpenAiCompat,
        }
    }
}

/// The three timeouts of a model call (spec/chatretry.md §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake (10 s).
    pub connect: Duration,
    /// From sending the request to the first stream event (2 min).
    pub first_byte: Duration,
    /// Between two stream events; zero disables it (the default: the engine's silence guard
    /// bounds silence instead).
    pub inter_event: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            inter_event: Duration::ZERO,
        }
    }
}

/// Where and how to reach a provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Wire format.
    pub format: WireFormat,
    /// Base URL, e.g. `https://api.anthropic.com` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// API key; optional for compatible servers.
    pub api_key: Option<String>,
    /// Extra request headers.
    pub extra_headers: Vec<(String, String)>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Speak HTTP/2 without TLS negotiation (`h2c` with prior knowledge), for cleartext servers
    /// that only speak HTTP/2. HTTPS servers negotiate HTTP/2 by ALPN regardless.
    pub http2_prior_knowledge: bool,
}

/// A streaming client for one provider configuration.
#[derive(Debug, Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    config: ProviderConfig,
}

/// The part stream of one call.
pub type PartStream = Pin<Box<dyn Stream<Item = Result<StreamPart, ModelError>> + Send>>;

impl ModelClient {
    /// Builds the client (HTTP/2 where the server offers it, keep-alive, rustls with aws-lc-rs).
    pub fn new(config: ProviderConfig) -> Result<Self, ModelError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            // Requests leave at once (reqwest's default, stated because the first token depends
            // on it).
            .tcp_nodelay(true)
            // reqwest retries protocol NACKs (e.g. REFUSED_STREAM) by default; chatretry is
            // the one retry owner (spec/chatretry.md §11.6), so the client never retries.
            .retry(reqwest::retry::never())
            // The API key travels in headers reqwest does not strip on a redirect to another
            // host (`x-api-key`): a provider never redirects a model call, so none is followed.
            .redirect(reqwest::redirect::Policy::none());
        if config.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .build()
            .map_err(|e| ModelError::Transport(Box::new(e)))?;
        Ok(Self { http, config })
    }

    fn url(&self) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match self.config.format {
            WireFormat::Anthropic => format!("{base}/v1/messages"),
            WireFormat::OpenAi | WireFormat::OpenAiCompatible => format!("{base}/chat/completions"),
        }
    }

    /// Starts a call and returns its part stream. Fails before the stream when the request
    /// cannot be sent, the provider answers with an error status, or no event arrives within
    /// the first-byte timeout.
    pub async fn stream(&self, request: &ModelRequest) -> Result<PartStream, ModelError> {
        let format = self.config.format;
        let provider = format.provider();
        let body = match format {
            WireFormat::Anthropic => anthropic::request_body(request),
            WireFormat::OpenAi | WireFormat::OpenAiCompatible => openai::request_body(request),
        };
        let mut builder = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string());
        match (format, &self.config.api_key) {
            (WireFormat::Anthropic, key) => {
                builder = builder.header("anthropic-version", ANTHROPIC_VERSION);
                if let Some(key) = key {
                    builder = builder.header("x-api-key", key);
                }
            }
            (_, Some(key)) => builder = builder.bearer_auth(key),
            (_, None) => {}
        }
        for (name, value) in &self.config.extra_headers {
            builder = builder.header(name, value);
        }

        let first_byte = self.config.timeouts.first_byte;
        let opened = async {
            let response = builder.send().await.map_err(transport_error)?;
            let status = response.status();
            if !status.is_success() {
                return Err(http_error(response).await);
            }
            let mut events = response.bytes_stream().eventsource();
            let first = events.next().await;
            Ok((events, first))
        };
        let (events, first) = match tokio::time::timeout(first_byte, opened).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ModelError::Timeout(TransportTimeout {
                    phase: TimeoutPhase::FirstByte,
                }));
            }
        };

        let state = DecodeState {
            decoder: match format {
                WireFormat::Anthropic => Decoder::Anthropic(AnthropicDecoder::default()),
                _ => Decoder::OpenAi(OpenAiDecoder::new(provider)),
            },
            provider,
            inter_event: self.config.timeouts.inter_event,
            pending: std::collections::VecDeque::new(),
            first,
            events: Box::pin(events),
            finished: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            DecodeState::next,
        )))
    }
}

enum Decoder {
    Anthropic(AnthropicDecoder),
    OpenAi(OpenAiDecoder),
}

impl Decoder {
    fn decode(&mut self, event: &Event) -> Result<Vec<StreamPart>, ModelError> {
        match self {
            Self::Anthropic(d) => d.decode(&event.event, &event.data),
            Self::OpenAi(d) => d.decode(&event.data),
        }
    }

    fn is_complete(&self) -> bool {
        match self {
            Self::Anthropic(d) => d.is_complete(),
            Self::OpenAi(d) => d.is_complete(),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, EventError>> + Send>>;
type EventError = eventsource_stream::EventStreamError<reqwest::Error>;

struct DecodeState {
    decoder: Decoder,
    provider: Provider,
    inter_event: Duration,
    pending: std::collections::VecDeque<StreamPart>,
    first: Option<Result<Event, EventError>>,
    events: EventStream,
    finished: bool,
}

impl DecodeState {
    async fn next(mut self) -> Option<(Result<StreamPart, ModelError>, Self)> {
        loop {
            if let Some(part) = self.pending.pop_front() {
                return Some((Ok(part), self));
            }
            if self.finished || self.decoder.is_complete() {
                return None;
            }
            let item = match self.first.take() {
                Some(first) => Some(first),
                None if self.inter_event.is_zero() => self.events.next().await,
                None => match tokio::time::timeout(self.inter_event, self.events.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        self.finished = true;
                        let err = ModelError::Timeout(TransportTimeout {
                            phase: TimeoutPhase::InterEvent,
                        });
                        return Some((Err(err), self));
                    }
                },
            };
            match item {
                Some(Ok(event)) => match self.decoder.decode(&event) {
                    Ok(parts) => self.pending.extend(parts),
                    Err(err) => {
                        self.finished = true;
                        return Some((Err(err), self));
                    }
                },
                Some(Err(err)) => {
                    self.finished = true;
                    let err = match err {
                        eventsource_stream::EventStreamError::Transport(e) => {
                            match transport_error(e) {
                                reset @ ModelError::Reset(_) => reset,
                                other => ModelError::Truncated {
                                    provider: self.provider,
                                    cause: Box::new(other),
                                },
                            }
                        }
                        other => ModelError::InvalidEvent {
                            provider: self.provider,
                            event: "stream".to_owned(),
                            detail: other.to_string(),
                        },
                    };
                    return Some((Err(err), self));
                }
                None => {
                    self.finished = true;
                    if self.decoder.is_complete() {
                        return None;
                    }
                    let err = ModelError::Truncated {
                        provider: self.provider,
                        cause: "unexpected EOF".into(),
                    };
                    return Some((Err(err), self));
                }
            }
        }
    }
}

/// A non-2xx response as a `ProviderHttpError` (status, headers, at most 64 KiB of body).
async fn http_error(response: reqwest::Response) -> ModelError {
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    let message = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    ModelError::Http(ProviderHttpError {
        status: status.as_u16(),
        message,
        body,
        headers,
    })
}

/// A transport failure: an HTTP/2 stream reset (found by walking the error's sources down to
/// `h2::Error`), a connect timeout, or anything else kept as the source.
fn transport_error(err: reqwest::Error) -> ModelError {
    if let Some(reset) = find_h2_reset(&err) {
        return ModelError::Reset(reset);
    }
    if err.is_connect() && err.is_timeout() {
        return ModelError::Timeout(TransportTimeout {
            phase: TimeoutPhase::Connect,
        });
    }
    ModelError::Transport(Box::new(err))
}

fn find_h2_reset(err: &(dyn StdError + 'static)) -> Option<Http2StreamReset> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && let Some(reason) = h2.reason()
            && !h2.is_go_away()
        {
            let origin = if h2.is_remote() {
                ResetOrigin::Peer
            } else {
                ResetOrigin::Local { cause: None }
            };
            return Some(Http2StreamReset {
                // h2 does not expose the stream id of a reset.
                stream_id: 0,
                code: Http2ErrorCode(u32::from(reason)),
                origin,
            });
        }
        current = e.source();
    }
    None
}

/// Boxes a transport error (used by callers that build their own requests).
pub fn boxed(err: impl StdError + Send + Sync + 'static) -> BoxError {
    Box::new(err)
}
