//! The one retry owner for model calls (spec/chatretry.md).
//!
//! - [`CancelToken`]: cancellation that carries a [`CancelCause`], so a user interrupt, a
//!   shutdown or a superseded turn is never mistaken for a provider failure.
//! - [`RetryPolicy`]: the back-off schedule (1 s doubling to 60 s, 25 attempts), jitter with an
//!   injectable RNG, a wall-clock budget per call, a ceiling on Retry-After with parking.
//!   [`RetryPolicy::decide`] is the single decision both drivers use.
//! - [`retry`] / [`Retrier`]: the in-process driver, with the exact order of checks, the
//!   transport-reset normalisation and typed outcomes ([`RetryError`]).
//! - [`SharedLimits`]: a rate limit heard by one caller holds back the other callers of the
//!   same credential until it ends, then lets one probe through (a circuit breaker).
//! - [`guard_silence`]: the stream silence guard, a stream adapter that fails a silent attempt
//!   exactly once with a retryable `stream_silence_timeout`.
//!
//! Classification is `chaterror`'s job; this crate only acts on it. It knows nothing of
//! databases, gRPC servers or HTTP clients; provider clients must never retry on their own.
//! Timing uses Tokio's clock, so tests run the whole 25-attempt schedule on a paused clock.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use chaterror::{BoxError, ErrorKind, ProviderHttpError};
//! use chatretry::{CancelToken, RetryError, RetryPolicy, retry};
//!
//! // A call that fails twice with HTTP 503 (retryable), then with HTTP 401 (terminal).
//! let mut calls = 0;
//! let mut retries = Vec::new();
//! let result = retry(
//!     &CancelToken::new(),
//!     &RetryPolicy::default(),
//!     |_attempt: CancelToken| {
//!         calls += 1;
//!         let status = if calls < 3 { 503 } else { 401 };
//!         async move { Err::<String, BoxError>(Box::new(ProviderHttpError::new(status, "no"))) }
//!     },
//!     |event| retries.push(event.attempt),
//! )
//! .await;
//!
//! assert_eq!(retries, [1, 2]);
//! let Err(RetryError::Terminal { classification, .. }) = result else { panic!("{result:?}") };
//! assert_eq!(classification.kind, Some(ErrorKind::Auth));
//! # });
//! ```

mod driver;
mod limits;
mod policy;
mod silence;
mod token;

/// What a retried call returns on failure, and the cancellation value a call may fail with:
/// re-exported so a caller of [`retry`] needs no direct dependency on `chaterror`.
pub use chaterror::{BoxError, CancelCause, Cancelled};
pub use driver::{
    Retrier, RetryError, RetryEvent, normalize_attempt_error, provider_request_id, retry,
};
pub use limits::{Admission, Hold, Permit, SharedLimits, Wait};
pub use policy::{
    DelaySource, ExhaustedReason, FixedRng, Jitter, OsSeededRng, PolicyError, RetryDecision,
    RetryPolicy, RetryRng,
};
pub use silence::{
    MAX_SILENCE_TIMEOUT, SilenceGuarded, SilenceTimeout, SilenceTimeoutError, guard_silence,
    silence_error,
};
pub use token::CancelToken;
