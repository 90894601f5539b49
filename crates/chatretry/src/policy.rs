//! The retry policy: constants, back-off schedule, jitter, budget, Retry-After ceiling and
//! parking (spec/chatretry.md §3, §11). Both drivers — the in-process [`retry`](crate::retry)
//! and the engine's persisted generation retries — decide with [`RetryPolicy::decide`], so they
//! produce the same schedule.

use std::fmt;
use std::time::Duration;

use chaterror::{Classification, RetryAfterSource};

/// How the back-off term is randomised (spec/chatretry.md §11.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No randomisation (the reference's behaviour).
    None,
    /// `backoff × (1 − ratio·u)`, `u ∈ [0, 1)`: never longer than the schedule. Ratio in 0..=1.
    Bounded(f64),
    /// `backoff × u`.
    Full,
}

impl Default for Jitter {
    fn default() -> Self {
        Self::Bounded(0.2)
    }
}

/// A source of uniform numbers in `[0, 1)` for jitter. Inject a fixed sequence in tests.
pub trait RetryRng: Send {
    /// The next number in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

/// The production RNG: SplitMix64 seeded once from the process's random hash keys (which the
/// standard library draws from the operating system).
#[derive(Debug, Clone)]
pub struct OsSeededRng {
    state: u64,
}

impl Default for OsSeededRng {
    fn default() -> Self {
        use std::hash::{BuildHasher as _, RandomState};
        Self {
            state: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl RetryRng for OsSeededRng {
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A fixed, repeating sequence of numbers (clamped into `[0, 1)`), for deterministic tests.
#[derive(Debug, Clone)]
pub struct FixedRng {
    values: Vec<f64>,
    next: usize,
}

impl FixedRng {
    /// Repeats `values` forever; an empty list always yields 0.
    pub fn new(values: impl Into<Vec<f64>>) -> Self {
        Self {
            values: values.into(),
            next: 0,
        }
    }
}

impl RetryRng for FixedRng {
    fn next_unit(&mut self) -> f64 {
        let Some(value) = self.values.get(self.next % self.values.len().max(1)) else {
            return 0.0;
        };
        self.next += 1;
        value.clamp(0.0, 1.0 - f64::EPSILON)
    }
}

/// Which term determined a delay (spec/chatretry.md §8, §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelaySource {
    /// The back-off schedule.
    Backoff,
    /// A `retry-after` / `retry-after-ms` header.
    RetryAfterHeader,
    /// A hint in the error body.
    RetryAfterBody,
    /// Another call with the same credential was rate limited: the shared hold
    /// ([`SharedLimits`](crate::SharedLimits)).
    SharedLimit,
}

impl DelaySource {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::RetryAfterHeader => "retry_after_header",
            Self::RetryAfterBody => "retry_after_body",
            Self::SharedLimit => "shared_limit",
        }
    }
}

/// Why a retryable failure is not retried any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedReason {
    /// `max_attempts` calls were made.
    Attempts,
    /// The next attempt would start after the wall-clock budget of the call.
    Budget,
    /// The provider asked to wait longer than `max_park`.
    ParkHorizon,
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait `delay`, then try again.
    Retry {
        /// The wait.
        delay: Duration,
        /// Which term determined it.
        source: DelaySource,
    },
    /// Park the turn for `delay` (a long Retry-After): release resources and resume later.
    Park {
        /// The wait (the provider's hint).
        delay: Duration,
        /// Which header or body gave the hint.
        source: DelaySource,
    },
    /// Give up.
    Exhausted(ExhaustedReason),
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The retry configuration (config keys `retry.*`), defaults equal to the spec's.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry.initial_delay`: the first back-off (1 s).
    pub initial_delay: Duration,
    /// `retry.max_delay`: cap on the back-off term (60 s).
    pub max_delay: Duration,
    /// `retry.max_attempts`: total calls, first included (25).
    pub max_attempts: u32,
    /// `retry.jitter` (bounded 0.2).
    pub jitter: Jitter,
    /// `retry.budget`: wall-clock time one call may spend failing and waiting (30 min).
    pub budget: Duration,
    /// `retry.max_inline_retry_after`: largest hint honoured as an in-task wait (60 s).
    pub max_inline_retry_after: Duration,
    /// `retry.max_park`: largest hint for which the turn is parked (6 h).
    pub max_park: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 25,
            jitter: Jitter::default(),
            budget: Duration::from_secs(30 * 60),
            max_inline_retry_after: Duration::from_secs(60),
            max_park: Duration::from_secs(6 * 60 * 60),
        }
    }
}

impl RetryPolicy {
    /// The reference's schedule exactly: no jitter, and budget and ceilings wide enough never to
    /// interfere with 25 attempts.
    pub fn reference() -> Self {
        Self {
            jitter: Jitter::None,
            budget: Duration::from_secs(24 * 60 * 60),
            max_inline_retry_after: Duration::from_secs(24 * 60 * 60),
            ..Self::default()
        }
    }

    /// Checks the values: at least one attempt, a jitter ratio in `0..=1`, a non-zero initial
    /// delay not above the cap.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_attempts == 0 {
            return Err(PolicyError("retry.max_attempts must be at least 1".into()));
        }
        if self.initial_delay.is_zero() || self.initial_delay > self.max_delay {
            return Err(PolicyError(
                "retry.initial_delay must be positive and not above retry.max_delay".into(),
            ));
        }
        if let Jitter::Bounded(ratio) = self.jitter
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(PolicyError(
                "retry.jitter ratio must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// `backoff(n) = min(initial × 2^n, max_delay)`, `n` zero-based.
    ///
    /// ```
    /// use chatretry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let p = RetryPolicy::default();
    /// assert_eq!(p.backoff(0), Duration::from_secs(1));
    /// assert_eq!(p.backoff(5), Duration::from_secs(32));
    /// assert_eq!(p.backoff(6), Duration::from_secs(60));
    /// ```
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 2u32.checked_pow(n).unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    fn jittered(&self, backoff: Duration, rng: &mut dyn RetryRng) -> Duration {
        match self.jitter {
            Jitter::None => backoff,
            Jitter::Bounded(ratio) => {
                backoff.mul_f64((1.0 - ratio * rng.next_unit()).clamp(0.0, 1.0))
            }
            Jitter::Full => backoff.mul_f64(rng.next_unit().clamp(0.0, 1.0)),
        }
    }

    /// Decides what follows the `failed`-th failed attempt (1-based) of a call whose retry window
    /// has been open for `elapsed` (spec/chatretry.md §4 steps 8–9, §7, §11.1–§11.3).
    ///
    /// ```
    /// use chaterror::Classification;
    /// use chatretry::{DelaySource, Jitter, RetryDecision, RetryPolicy, FixedRng};
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy { jitter: Jitter::None, ..RetryPolicy::default() };
    /// let failure = Classification { retryable: true, ..Default::default() };
    /// let decision = policy.decide(3, &failure, Duration::ZERO, &mut FixedRng::new([0.0]));
    /// assert_eq!(decision, RetryDecision::Retry { delay: Duration::from_secs(4), source: DelaySource::Backoff });
    /// ```
    pub fn decide(
        &self,
        failed: u32,
        c: &Classification,
        elapsed: Duration,
        rng: &mut dyn RetryRng,
    ) -> RetryDecision {
        if failed >= self.max_attempts {
            return RetryDecision::Exhausted(ExhaustedReason::Attempts);
        }
        let backoff = self.jittered(self.backoff(failed.saturating_sub(1)), rng);
        let hint = c.retry_after;
        let hint_source = match c.retry_after_source {
            Some(RetryAfterSource::Body) => DelaySource::RetryAfterBody,
            _ => DelaySource::RetryAfterHeader,
        };
        let remaining = self.budget.saturating_sub(elapsed);

        if hint > self.max_park {
            return RetryDecision::Exhausted(ExhaustedReason::ParkHorizon);
        }
        if hint > self.max_inline_retry_after || hint > remaining {
            return RetryDecision::Park {
                delay: hint,
                source: hint_source,
            };
        }
        let (delay, source) = if hint > backoff {
            (hint, hint_source)
        } else {
            (backoff, DelaySource::Backoff)
        };
        if delay > remaining {
            return RetryDecision::Exhausted(ExhaustedReason::Budget);
        }
        RetryDecision::Retry { delay, source }
    }
}
