//! The stream silence guard (spec/chatretry.md §6): a stream adapter that fails an attempt whose
//! provider stream delivers nothing for too long.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chaterror::{
    BoxError, CancelCause, Cancelled, Classification, ErrorKind, Provider, with_classification,
};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::CancelToken;

/// The largest accepted silence timeout.
pub const MAX_SILENCE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A validated `stream_silence_timeout`: default 10 minutes, 0 disables the guard, above 24 h is
/// rejected.
///
/// ```
/// use chatretry::SilenceTimeout;
/// use std::time::Duration;
///
/// assert!(SilenceTimeout::new(Duration::from_secs(24 * 3600)).is_ok());
/// let err = SilenceTimeout::new(Duration::from_secs(24 * 3600 + 1)).unwrap_err();
/// assert_eq!(err.to_string(), "stream_silence_timeout must not exceed 24h");
/// assert!(SilenceTimeout::new(Duration::ZERO).unwrap().is_disabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceTimeout(Duration);

impl SilenceTimeout {
    /// The default, 10 minutes.
    pub const DEFAULT: Duration = Duration::from_secs(10 * 60);

    /// Validates a configured value.
    pub fn new(timeout: Duration) -> Result<Self, SilenceTimeoutError> {
        if timeout > MAX_SILENCE_TIMEOUT {
            return Err(SilenceTimeoutError);
        }
        Ok(Self(timeout))
    }

    /// Whether the guard is off (timeout 0).
    pub fn is_disabled(self) -> bool {
        self.0.is_zero()
    }

    /// The timeout.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for SilenceTimeout {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

/// `stream_silence_timeout` above 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceTimeoutError;

impl fmt::Display for SilenceTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream_silence_timeout must not exceed 24h")
    }
}

impl std::error::Error for SilenceTimeoutError {}

/// The guard's state machine: settled once, by whichever of "fired" and "disarmed" comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardState {
    Armed,
    Fired,
    Disarmed,
}

pin_project! {
    /// A provider stream under the silence guard. Armed when created (so it also bounds the
    /// time to the first part), reset by every item, it fires at most once: it cancels the
    /// **attempt** token with [`CancelCause::StreamSilence`], yields one error pinned as a
    /// retryable `stream_silence_timeout` for the model's provider, and ends. Once the inner
    /// stream ends or fails, a late timer does nothing.
    pub struct SilenceGuarded<S> {
        #[pin]
        inner: S,
        #[pin]
        timer: Option<Sleep>,
        timeout: Duration,
        attempt: CancelToken,
        provider: Option<Provider>,
        state: GuardState,
    }
}

impl<S> fmt::Debug for SilenceGuarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SilenceGuarded")
            .field("timeout", &self.timeout)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Puts `stream` under the silence guard. `attempt` is the attempt's token (never the turn's);
/// `provider` is the model configuration's provider, for the user-facing message.
pub fn guard_silence<S, T>(
    stream: S,
    timeout: SilenceTimeout,
    attempt: CancelToken,
    provider: Option<Provider>,
) -> SilenceGuarded<S>
where
    S: Stream<Item = Result<T, BoxError>>,
{
    let timer = (!timeout.is_disabled()).then(|| tokio::time::sleep(timeout.get()));
    SilenceGuarded {
        inner: stream,
        timer,
        timeout: timeout.get(),
        attempt,
        provider,
        state: GuardState::Armed,
    }
}

/// The error of a stream the guard stopped: `context canceled` caused by `StreamSilence`,
/// pinned as a retryable `stream_silence_timeout`.
pub fn silence_error(provider: Option<Provider>) -> BoxError {
    Box::new(with_classification(
        Cancelled {
            cause: Some(CancelCause::StreamSilence),
        },
        Classification {
            kind: Some(ErrorKind::StreamSilenceTimeout),
            retryable: true,
            provider,
            ..Classification::default()
        },
    ))
}

impl<S, T> Stream for SilenceGuarded<S>
where
    S: Stream<Item = Result<T, BoxError>>,
{
    type Item = Result<T, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        match *this.state {
            GuardState::Fired => return Poll::Ready(None),
            GuardState::Disarmed => return this.inner.poll_next(cx),
            GuardState::Armed => {}
        }
        // The inner stream first: a part or an end that is ready now settles the race in its
        // favour, so a completed stream is never reported as silent.
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                    timer.reset(Instant::now() + *this.timeout);
                }
                return Poll::Ready(Some(Ok(item)));
            }
            Poll::Ready(other) => {
                // Ended or failed for another reason: disarm for good.
                *this.state = GuardState::Disarmed;
                this.timer.set(None);
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        let Some(timer) = this.timer.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match timer.poll(cx) {
            Poll::Ready(()) => {
                *this.state = GuardState::Fired;
                this.timer.set(None);
                this.attempt.cancel(CancelCause::StreamSilence);
                Poll::Ready(Some(Err(silence_error(*this.provider))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
