//! The typed error values the classifier recognises in an error graph (spec/chaterror.md §2.4).
//! Provider clients and the retry layer construct them; `classify` finds them with
//! `downcast_ref` anywhere in the `source()` chain or inside a [`JoinedError`].

use std::error::Error;
use std::fmt;

use crate::{BoxError, Classification, Provider};

/// Why a chatd cancellation token fired (spec/chatretry.md §2.1). The `Display` texts are
/// contracts: `chat interrupted`, for one, is what classifies a user interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelCause {
    /// The user pressed Stop (or the chat is `interrupting`).
    UserInterrupt,
    /// The server is shutting down.
    Shutdown,
    /// The runner moved on: history advanced, status changed, or the lease was lost.
    TurnSuperseded,
    /// The stream silence guard fired on an attempt.
    StreamSilence,
    /// A provider adapter saw its connection or stream reset and cancelled the attempt.
    ProviderReset {
        /// The HTTP/2 reason code, when the reset was an HTTP/2 one.
        h2_code: Option<u32>,
    },
    /// The 30 s workspace-agent dial timer expired (not a model-call cause).
    DialTimeout,
}

impl fmt::Display for CancelCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UserInterrupt => "chat interrupted",
            Self::Shutdown => "chatd server shutting down",
            Self::TurnSuperseded => "chat turn superseded",
            Self::StreamSilence => "chat stream was silent for longer than the configured timeout",
            Self::ProviderReset { .. } => "provider transport reset",
            Self::DialTimeout => {
                "connection to the workspace agent timed out. The agent may still be reachable on the next attempt."
            }
        })
    }
}

impl Error for CancelCause {}

/// An operation stopped because a cancellation token fired. `cause` is `None` when the
/// cancellation did not come from a chatd token (e.g. the HTTP stack cancelled a stream).
///
/// Displays `context canceled`. A [`CancelCause::ProviderReset`] cause is exposed as a
/// [`ProviderTransportReset`] source (a retryable `timeout`); other causes add nothing to the
/// error's text, so every other cancellation classifies as a cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// The token's cause, if a chatd token fired.
    pub cause: Option<CancelCause>,
}

static TRANSPORT_RESET: ProviderTransportReset = ProviderTransportReset { source: None };

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("context canceled")
    }
}

impl Error for Cancelled {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.cause {
            Some(CancelCause::ProviderReset { .. }) => Some(&TRANSPORT_RESET),
            _ => None,
        }
    }
}

/// A deadline that chatd itself set for an operation expired. Classified `timeout`, **not**
/// retryable. Not for transport timeouts (see [`TransportTimeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("context deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// Marker added by the retry layer when a bare cancellation came from a dropped provider
/// connection (spec/chatretry.md §5). With status 0 it classifies as a retryable `timeout`.
///
/// ```
/// use chaterror::{Cancelled, ProviderTransportReset, classify, ClassifyContext, ErrorKind};
///
/// let err = ProviderTransportReset::wrapping(Cancelled { cause: None });
/// assert_eq!(err.to_string(), "provider transport reset");
/// let c = classify(&err, &ClassifyContext::new(std::time::SystemTime::UNIX_EPOCH));
/// assert_eq!((c.kind, c.retryable), (Some(ErrorKind::Timeout), true));
/// ```
#[derive(Debug, Default)]
pub struct ProviderTransportReset {
    source: Option<BoxError>,
}

impl ProviderTransportReset {
    /// A bare marker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The marker in front of the error it explains; the full text reads
    /// `provider transport reset: <error>`.
    pub fn wrapping(err: impl Into<BoxError>) -> Self {
        Self {
            source: Some(err.into()),
        }
    }

    /// The wrapped error, if any.
    pub fn into_source(self) -> Option<BoxError> {
        self.source
    }
}

impl fmt::Display for ProviderTransportReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("provider transport reset")
    }
}

impl Error for ProviderTransportReset {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Http2ErrorCode(pub u32);

impl Http2ErrorCode {
    /// `NO_ERROR`
    pub const NO_ERROR: Self = Self(0x0);
    /// `PROTOCOL_ERROR`
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    /// `INTERNAL_ERROR`
    pub const INTERNAL_ERROR: Self = Self(0x2);
    /// `FLOW_CONTROL_ERROR`
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    /// `SETTINGS_TIMEOUT`
    pub const SETTINGS_TIMEOUT: Self = Self(0x4);
    /// `STREAM_CLOSED`
    pub const STREAM_CLOSED: Self = Self(0x5);
    /// `FRAME_SIZE_ERROR`
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    /// `REFUSED_STREAM`
    pub const REFUSED_STREAM: Self = Self(0x7);
    /// `CANCEL`
    pub const CANCEL: Self = Self(0x8);
    /// `COMPRESSION_ERROR`
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    /// `CONNECT_ERROR`
    pub const CONNECT_ERROR: Self = Self(0xa);
    /// `ENHANCE_YOUR_CALM`
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);
    /// `INADEQUATE_SECURITY`
    pub const INADEQUATE_SECURITY: Self = Self(0xc);
    /// `HTTP_1_1_REQUIRED`
    pub const HTTP_1_1_REQUIRED: Self = Self(0xd);

    /// The RFC 9113 upper-case name, or `UNKNOWN_0x..` for a code outside the registry.
    pub fn name(self) -> String {
        let known = match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            other => return format!("UNKNOWN_{other:#x}"),
        };
        known.to_owned()
    }

    /// Whether a **peer** reset with this code is worth retrying (spec/chaterror.md §9).
    pub fn is_retryable_from_peer(self) -> bool {
        matches!(
            self,
            Self::NO_ERROR
                | Self::INTERNAL_ERROR
                | Self::REFUSED_STREAM
                | Self::CANCEL
                | Self::ENHANCE_YOUR_CALM
        )
    }
}

/// Who reset an HTTP/2 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetOrigin {
    /// The server sent RST_STREAM.
    Peer,
    /// Our side reset the stream, optionally saying why.
    Local {
        /// The local cause's text, if any.
        cause: Option<String>,
    },
}

/// A typed HTTP/2 stream reset, built by adapters from the HTTP/2 library's error.
///
/// ```
/// use chaterror::{Http2ErrorCode, Http2StreamReset, ResetOrigin};
///
/// let reset = Http2StreamReset { stream_id: 455, code: Http2ErrorCode::INTERNAL_ERROR, origin: ResetOrigin::Peer };
/// assert_eq!(reset.to_string(), "stream error: stream ID 455; INTERNAL_ERROR; received from peer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2StreamReset {
    /// The stream's id (never a status code).
    pub stream_id: u32,
    /// The reason code.
    pub code: Http2ErrorCode,
    /// Who reset it.
    pub origin: ResetOrigin,
}

impl Http2StreamReset {
    /// A peer reset whose code says the request may be retried: a timeout signal.
    pub(crate) fn is_retryable_peer_reset(&self) -> bool {
        self.origin == ResetOrigin::Peer && self.code.is_retryable_from_peer()
    }
}

impl fmt::Display for Http2StreamReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream error: stream ID {}; {}",
            self.stream_id,
            self.code.name()
        )?;
        match &self.origin {
            ResetOrigin::Peer => f.write_str("; received from peer"),
            ResetOrigin::Local { cause: Some(cause) } if !cause.is_empty() => {
                write!(f, "; {cause}")
            }
            ResetOrigin::Local { .. } => Ok(()),
        }
    }
}

impl Error for Http2StreamReset {}

/// A non-2xx provider response: status, raw body, response headers and the client's message.
/// Displays `message`.
///
/// ```
/// use chaterror::ProviderHttpError;
///
/// let err = ProviderHttpError::new(429, "rate limited")
///     .with_header("retry-after", "30")
///     .with_body(br#"{"error":{"message":"slow down"}}"#.to_vec());
/// assert_eq!(err.to_string(), "rate limited");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderHttpError {
    /// HTTP status; 0 when unknown.
    pub status: u16,
    /// The client's message (may be empty).
    pub message: String,
    /// The raw response body (clients keep at most 64 KiB; the classifier reads no more).
    pub body: Vec<u8>,
    /// Response headers as (name, value); names compare case-insensitively.
    pub headers: Vec<(String, String)>,
}

impl ProviderHttpError {
    /// An error with a status and a message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            ..Self::default()
        }
    }

    /// Sets the response body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for ProviderHttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for ProviderHttpError {}

/// An error delivered **inside** a 200 stream (Anthropic `event: error`, an OpenAI error chunk,
/// `response.failed`, ...). Displays `message`. The stream's HTTP 200 is never a status: pass
/// only a numeric code found inside the payload (200 is treated as 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderStreamError {
    /// The provider whose adapter read the error.
    pub provider: Option<Provider>,
    /// The payload's error type (e.g. Anthropic `overloaded_error`, Google `UNAVAILABLE`).
    pub error_type: String,
    /// The payload's error code (e.g. OpenAI `rate_limit_exceeded`).
    pub code: String,
    /// The payload's message.
    pub message: String,
    /// A numeric code inside the payload (e.g. Google `error.code`); 0 when none.
    pub status: u16,
}

impl fmt::Display for ProviderStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for ProviderStreamError {}

/// Which of chatd's own provider timeouts expired (spec/chatretry.md §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// TCP connect and TLS handshake.
    Connect,
    /// From sending the request to the first stream event.
    FirstByte,
    /// Between two stream events (a client-side inter-event timeout; chatd's silence guard is
    /// the pinned `stream_silence_timeout` instead).
    InterEvent,
}

/// chatd's connect or first-byte timeout expired: a retryable `timeout`, decided structurally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportTimeout {
    /// Which timeout.
    pub phase: TimeoutPhase,
}

impl fmt::Display for TransportTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.phase {
            TimeoutPhase::Connect => "timed out connecting to the provider",
            TimeoutPhase::FirstByte => "timed out waiting for the provider's first response event",
            TimeoutPhase::InterEvent => "timed out waiting for the provider's next stream event",
        })
    }
}

impl Error for TransportTimeout {}

/// Several errors at once; the classifier searches every member. Displays the members' full
/// texts joined by newlines.
#[derive(Debug, Default)]
pub struct JoinedError(pub Vec<BoxError>);

impl JoinedError {
    /// Joins errors.
    pub fn new(errors: impl IntoIterator<Item = BoxError>) -> Self {
        Self(errors.into_iter().collect())
    }
}

impl fmt::Display for JoinedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, member) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&crate::graph::full_text(member.as_ref()))?;
        }
        Ok(())
    }
}

impl Error for JoinedError {}

/// An error with an explicit classification attached (spec/chaterror.md §11.3): displays exactly
/// like the inner error, has it as its source (so downcasts and markers still work), and makes
/// every later [`classify`](crate::classify) return the pinned classification.
#[derive(Debug)]
pub struct Pinned {
    inner: BoxError,
    classification: Classification,
}

impl Pinned {
    /// The pinned classification, as given.
    pub fn classification(&self) -> &Classification {
        &self.classification
    }

    /// The wrapped error.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.inner.as_ref()
    }

    /// Unwraps into the inner error and the classification.
    pub fn into_parts(self) -> (BoxError, Classification) {
        (self.inner, self.classification)
    }
}

impl fmt::Display for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Error for Pinned {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.inner.as_ref())
    }
}

/// Pins a classification onto an error (spec/chaterror.md §11.3).
///
/// ```
/// use chaterror::{Classification, ClassificationSource, ClassifyContext, ErrorKind, Provider, classify, with_classification};
///
/// let pinned = with_classification(
///     "context canceled",
///     Classification { kind: Some(ErrorKind::StreamSilenceTimeout), provider: Some(Provider::OpenAi), retryable: true, ..Default::default() },
/// );
/// let c = classify(&pinned, &ClassifyContext::new(std::time::SystemTime::UNIX_EPOCH));
/// assert_eq!(c.message, "OpenAI did not send response data in time.");
/// assert_eq!(c.source, ClassificationSource::Explicit);
/// ```
pub fn with_classification(err: impl Into<BoxError>, classification: Classification) -> Pinned {
    Pinned {
        inner: err.into(),
        classification,
    }
}
