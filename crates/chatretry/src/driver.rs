//! The in-process retry driver (spec/chatretry.md §4) and transport-reset normalisation (§5).

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use chaterror::{
    BoxError, CancelCause, Cancelled, Classification, ClassifyContext, Pinned, ProviderHttpError,
    ProviderTransportReset, classify, find_in_graph, full_text, with_classification,
};
#[cfg(feature = "wire")]
use chatproto::chatd::v1 as wire;
use tokio::time::Instant;

use crate::{
    CancelToken, DelaySource, ExhaustedReason, OsSeededRng, RetryDecision, RetryPolicy, RetryRng,
};

/// One scheduled retry (spec/chatretry.md §8), given to `on_retry` before the wait.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryEvent {
    /// 1-based number of the failed attempt.
    pub attempt: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// Which term determined `delay`.
    pub delay_source: DelaySource,
    /// When the next attempt starts.
    pub retrying_at: SystemTime,
    /// The full text of the (normalised) error, e.g. `provider transport reset: context canceled`.
    pub error: String,
    /// The failure's classification.
    pub classification: Classification,
    /// The configured attempt cap.
    pub max_attempts: u32,
    /// The turn is parked until `retrying_at` (a long Retry-After).
    pub parked: bool,
    /// The provider's request id, from its response headers, when known.
    pub provider_request_id: Option<String>,
}

#[cfg(feature = "wire")]
impl RetryEvent {
    /// The wire form: the `retry` stream event and `chats.retry_state` (feature `wire`).
    pub fn to_wire(&self) -> wire::RetryEvent {
        let mut event = chaterror::retry_payload(
            &self.classification,
            self.attempt,
            self.delay,
            SystemTime::UNIX_EPOCH,
        );
        event.retrying_at = Some(chatproto::prost_types::Timestamp::from(self.retrying_at));
        event.retry_status = wire::RetryStatus::Retrying.into();
        event.delay_source = match self.delay_source {
            DelaySource::Backoff => wire::RetryDelaySource::Backoff,
            DelaySource::RetryAfterHeader => wire::RetryDelaySource::RetryAfterHeader,
            DelaySource::RetryAfterBody => wire::RetryDelaySource::RetryAfterBody,
            DelaySource::SharedLimit => wire::RetryDelaySource::SharedLimit,
        }
        .into();
        event.max_attempts = self.max_attempts;
        event.parked = self.parked;
        event.provider_request_id = self.provider_request_id.clone().unwrap_or_default();
        event
    }
}

/// Why [`retry`] did not return a value.
#[derive(Debug)]
pub enum RetryError {
    /// The caller's token fired; its cause, untouched and never classified.
    Cancelled(CancelCause),
    /// A failure that is not retryable, pinned with its classification.
    Terminal {
        /// The error, pinned so upstream classification sees the same decision.
        error: Pinned,
        /// Its classification.
        classification: Classification,
    },
    /// A retryable failure, but attempts, budget or park horizon ran out.
    Exhausted {
        /// Calls made.
        attempts: u32,
        /// Which limit was reached.
        reason: ExhaustedReason,
        /// The last error, pinned with its classification.
        error: Pinned,
        /// The last failure's classification.
        classification: Classification,
        /// The configured attempt cap (for the message).
        max_attempts: u32,
    },
    /// The provider asked for a wait too long to hold resources for: resume at `resume_at`.
    Parked {
        /// When the call may be tried again.
        resume_at: SystemTime,
        /// The failure's classification.
        classification: Classification,
    },
}

impl RetryError {
    /// The classification to report, if the error was classified (not for cancellations).
    pub fn classification(&self) -> Option<&Classification> {
        match self {
            Self::Cancelled(_) => None,
            Self::Terminal { classification, .. }
            | Self::Exhausted { classification, .. }
            | Self::Parked { classification, .. } => Some(classification),
        }
    }
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled(cause) => write!(f, "{cause}"),
            Self::Terminal { error, .. } => f.write_str(&full_text(error)),
            Self::Exhausted {
                reason: ExhaustedReason::Attempts,
                error,
                max_attempts,
                ..
            } => write!(
                f,
                "max retry attempts ({max_attempts}) exceeded: {}",
                full_text(error)
            ),
            Self::Exhausted {
                reason: ExhaustedReason::Budget,
                error,
                ..
            } => write!(f, "retry budget exhausted: {}", full_text(error)),
            Self::Exhausted {
                reason: ExhaustedReason::ParkHorizon,
                error,
                ..
            } => write!(
                f,
                "provider asked to wait longer than the park limit: {}",
                full_text(error)
            ),
            Self::Parked { resume_at, .. } => {
                write!(f, "parked until {}", fmt_system_time(*resume_at))
            }
        }
    }
}

impl std::error::Error for RetryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Terminal { error, .. } | Self::Exhausted { error, .. } => Some(error),
            Self::Cancelled(_) | Self::Parked { .. } => None,
        }
    }
}

fn fmt_system_time(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("{}s after the Unix epoch", d.as_secs()),
        Err(_) => "a time before the Unix epoch".to_owned(),
    }
}

/// Runs model calls under the policy: the jitter RNG and the wall clock are injectable so tests
/// are deterministic.
pub struct Retrier {
    /// The policy.
    pub policy: RetryPolicy,
    rng: Box<dyn RetryRng>,
    wall_clock: fn() -> SystemTime,
}

impl fmt::Debug for Retrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// A retrier with an OS-seeded RNG and the system clock.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            rng: Box::new(OsSeededRng::default()),
            wall_clock: SystemTime::now,
        }
    }

    /// Uses `rng` for jitter.
    pub fn with_rng(mut self, rng: impl RetryRng + 'static) -> Self {
        self.rng = Box::new(rng);
        self
    }

    /// Uses `clock` for `retrying_at` and HTTP-date hints.
    pub fn with_wall_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.wall_clock = clock;
        self
    }

    /// The driver of spec/chatretry.md §4: calls `op` with a child of `token` until it succeeds,
    /// fails terminally, runs out of attempts or budget, is parked, or the caller cancels.
    pub async fn run<T, F, Fut>(
        &mut self,
        token: &CancelToken,
        mut op: F,
        mut on_retry: impl FnMut(&RetryEvent),
    ) -> Result<T, RetryError>
    where
        F: FnMut(CancelToken) -> Fut,
        Fut: Future<Output = Result<T, BoxError>>,
    {
        let mut attempt: u32 = 0;
        let mut window_start: Option<Instant> = None;
        loop {
            // Step 1.
            if let Some(cause) = token.cause() {
                return Err(RetryError::Cancelled(cause));
            }
            // Steps 2–3.
            let err = match op(token.child()).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            // Step 4: a caller cause is returned untouched, never classified.
            if let Some(cause) = token.cause() {
                return Err(RetryError::Cancelled(cause));
            }
            // Step 5.
            let ctx = ClassifyContext::new((self.wall_clock)());
            let c = classify(err.as_ref(), &ctx);
            let (err, c) = normalize_attempt_error(err, c, &ctx);
            // Step 6.
            if !c.retryable {
                return Err(RetryError::Terminal {
                    error: with_classification(err, c.clone()),
                    classification: c,
                });
            }
            // Step 7.
            if let Some(cause) = token.cause() {
                return Err(RetryError::Cancelled(cause));
            }
            // Steps 8–9.
            attempt += 1;
            let now = Instant::now();
            let elapsed = now - *window_start.get_or_insert(now);
            let decision = self.policy.decide(attempt, &c, elapsed, self.rng.as_mut());
            let (delay, source, parked) = match decision {
                RetryDecision::Exhausted(reason) => {
                    return Err(RetryError::Exhausted {
                        attempts: attempt,
                        reason,
                        error: with_classification(err, c.clone()),
                        classification: c,
                        max_attempts: self.policy.max_attempts,
                    });
                }
                RetryDecision::Retry { delay, source } => (delay, source, false),
                RetryDecision::Park { delay, source } => (delay, source, true),
            };
            // Step 10.
            let retrying_at = ctx.now + delay;
            let event = RetryEvent {
                attempt,
                delay,
                delay_source: source,
                retrying_at,
                error: full_text(err.as_ref()),
                provider_request_id: provider_request_id(err.as_ref()),
                classification: c,
                max_attempts: self.policy.max_attempts,
                parked,
            };
            on_retry(&event);
            if parked {
                return Err(RetryError::Parked {
                    resume_at: retrying_at,
                    classification: event.classification,
                });
            }
            // Step 11.
            if let Err(Cancelled { cause }) = token.run(tokio::time::sleep(delay)).await {
                return Err(RetryError::Cancelled(
                    cause.unwrap_or(CancelCause::Shutdown),
                ));
            }
        }
    }
}

/// [`Retrier::run`] with an OS-seeded RNG and the system clock.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use chatretry::{CancelToken, RetryPolicy, retry};
///
/// let mut calls = 0;
/// let value = retry(&CancelToken::new(), &RetryPolicy::default(), |_attempt| {
///     calls += 1;
///     let fail = calls == 1;
///     async move {
///         if fail { Err::<u32, _>("status 503".into()) } else { Ok(7) }
///     }
/// }, |event| assert_eq!(event.attempt, 1)).await.unwrap();
/// assert_eq!((value, calls), (7, 2));
/// # });
/// ```
pub async fn retry<T, F, Fut>(
    token: &CancelToken,
    policy: &RetryPolicy,
    op: F,
    on_retry: impl FnMut(&RetryEvent),
) -> Result<T, RetryError>
where
    F: FnMut(CancelToken) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    Retrier::new(policy.clone()).run(token, op, on_retry).await
}

/// Transport-reset normalisation (spec/chatretry.md §5): a non-retryable, status-less failure
/// that contains a bare cancellation, while the caller is alive, came from a dropped provider
/// connection. If re-classifying it as `provider transport reset: <error>` makes it retryable,
/// that is the attempt's error; otherwise the original stands. The caller must have checked
/// that its own token is not cancelled.
pub fn normalize_attempt_error(
    err: BoxError,
    c: Classification,
    ctx: &ClassifyContext,
) -> (BoxError, Classification) {
    if c.retryable || c.status_code != 0 || find_in_graph::<Cancelled>(err.as_ref()).is_none() {
        return (err, c);
    }
    let rewritten = ProviderTransportReset::wrapping(err);
    let reclassified = classify(&rewritten, ctx);
    if reclassified.retryable {
        return (Box::new(rewritten), reclassified);
    }
    let Some(original) = rewritten.into_source() else {
        // `wrapping` always keeps its error; this branch is unreachable in practice.
        return (Box::new(ProviderTransportReset::new()), c);
    };
    (original, c)
}

/// The provider's request id from the first HTTP error's headers (`request-id`,
/// `x-request-id`), for retry events and stored errors.
pub fn provider_request_id(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let http = find_in_graph::<ProviderHttpError>(err)?;
    ["request-id", "x-request-id"]
        .iter()
        .find_map(|name| http.header(name))
        .map(str::to_owned)
}
