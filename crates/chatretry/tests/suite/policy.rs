//! The schedule (spec/chatretry.md §3) and the beyond-the-reference policy (§11.1–§11.3).

use std::time::Duration;

use chaterror::{Classification, RetryAfterSource};
use chatretry::{DelaySource, ExhaustedReason, FixedRng, Jitter, RetryDecision, RetryPolicy};
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn failure(retry_after: Duration) -> Classification {
    Classification {
        retryable: true,
        retry_after,
        retry_after_source: (!retry_after.is_zero()).then_some(RetryAfterSource::Header),
        ..Classification::default()
    }
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy {
        jitter: Jitter::None,
        ..RetryPolicy::default()
    }
}

fn delay_of(decision: RetryDecision) -> Duration {
    match decision {
        RetryDecision::Retry { delay, .. } => delay,
        other => panic!("expected a retry, got {other:?}"),
    }
}

macro_rules! schedule_rows {
    ($($name:ident: retry $k:literal => $secs:literal;)*) => {$(
        #[test]
        fn $name() {
            let d = no_jitter().decide($k, &failure(Duration::ZERO), Duration::ZERO, &mut FixedRng::new([0.0]));
            assert_eq!(d, RetryDecision::Retry { delay: secs($secs), source: DelaySource::Backoff });
        }
    )*};
}

// spec/chatretry.md §3 table.
schedule_rows! {
    retry_1_waits_1s: retry 1 => 1;
    retry_2_waits_2s: retry 2 => 2;
    retry_3_waits_4s: retry 3 => 4;
    retry_4_waits_8s: retry 4 => 8;
    retry_5_waits_16s: retry 5 => 16;
    retry_6_waits_32s: retry 6 => 32;
    retry_7_is_capped_at_60s: retry 7 => 60;
    retry_24_is_capped_at_60s: retry 24 => 60;
}

#[test]
fn the_25th_failure_is_the_last() {
    let d = no_jitter().decide(
        25,
        &failure(Duration::ZERO),
        Duration::ZERO,
        &mut FixedRng::new([0.0]),
    );
    assert_eq!(d, RetryDecision::Exhausted(ExhaustedReason::Attempts));
}

#[test]
fn the_whole_schedule_waits_1143_seconds() {
    let p = RetryPolicy::reference();
    let total: Duration = (1..25)
        .map(|k| {
            delay_of(p.decide(
                k,
                &failure(Duration::ZERO),
                Duration::ZERO,
                &mut FixedRng::new([0.0]),
            ))
        })
        .sum();
    assert_eq!(total, secs(1143));
}

#[test]
fn retry_after_is_a_floor() {
    let p = no_jitter();
    let mut rng = FixedRng::new([0.0]);
    assert_eq!(
        p.decide(1, &failure(secs(3)), Duration::ZERO, &mut rng),
        RetryDecision::Retry {
            delay: secs(3),
            source: DelaySource::RetryAfterHeader
        }
    );
    assert_eq!(
        p.decide(
            1,
            &failure(Duration::from_millis(500)),
            Duration::ZERO,
            &mut rng
        ),
        RetryDecision::Retry {
            delay: secs(1),
            source: DelaySource::Backoff
        }
    );
}

#[test]
fn a_body_hint_is_reported_as_such() {
    let c = Classification {
        retryable: true,
        retry_after: secs(5),
        retry_after_source: Some(RetryAfterSource::Body),
        ..Classification::default()
    };
    let d = no_jitter().decide(1, &c, Duration::ZERO, &mut FixedRng::new([0.0]));
    assert_eq!(
        d,
        RetryDecision::Retry {
            delay: secs(5),
            source: DelaySource::RetryAfterBody
        }
    );
}

#[test]
fn bounded_jitter_only_shrinks_the_backoff() {
    let p = RetryPolicy::default(); // bounded(0.2)
    let d = p.decide(
        3,
        &failure(Duration::ZERO),
        Duration::ZERO,
        &mut FixedRng::new([0.5]),
    );
    assert_eq!(delay_of(d), Duration::from_millis(3600)); // 4 s × (1 − 0.2 × 0.5)
}

#[test]
fn full_jitter_scales_the_whole_backoff() {
    let p = RetryPolicy {
        jitter: Jitter::Full,
        ..RetryPolicy::default()
    };
    let d = p.decide(
        3,
        &failure(Duration::ZERO),
        Duration::ZERO,
        &mut FixedRng::new([0.25]),
    );
    assert_eq!(delay_of(d), secs(1));
}

#[test]
fn jitter_never_shortens_a_provider_hint() {
    let p = RetryPolicy {
        jitter: Jitter::Full,
        ..RetryPolicy::default()
    };
    let d = p.decide(
        6,
        &failure(secs(10)),
        Duration::ZERO,
        &mut FixedRng::new([0.0]),
    );
    assert_eq!(
        d,
        RetryDecision::Retry {
            delay: secs(10),
            source: DelaySource::RetryAfterHeader
        }
    );
}

#[test]
fn the_budget_ends_retries() {
    let p = no_jitter();
    let c = failure(Duration::ZERO);
    // 29 min 30 s into the window, a 60 s back-off would end after the 30 min budget.
    let d = p.decide(10, &c, secs(29 * 60 + 30), &mut FixedRng::new([0.0]));
    assert_eq!(d, RetryDecision::Exhausted(ExhaustedReason::Budget));
    assert_eq!(
        delay_of(p.decide(10, &c, secs(28 * 60), &mut FixedRng::new([0.0]))),
        secs(60)
    );
}

#[test]
fn a_hint_above_the_inline_ceiling_parks_the_turn() {
    let d = no_jitter().decide(
        1,
        &failure(secs(600)),
        Duration::ZERO,
        &mut FixedRng::new([0.0]),
    );
    assert_eq!(
        d,
        RetryDecision::Park {
            delay: secs(600),
            source: DelaySource::RetryAfterHeader
        }
    );
}

#[test]
fn a_hint_beyond_the_remaining_budget_parks_the_turn() {
    let d = no_jitter().decide(
        1,
        &failure(secs(50)),
        secs(29 * 60 + 30),
        &mut FixedRng::new([0.0]),
    );
    assert_eq!(
        d,
        RetryDecision::Park {
            delay: secs(50),
            source: DelaySource::RetryAfterHeader
        }
    );
}

#[test]
fn a_hint_beyond_the_park_horizon_exhausts() {
    let d = no_jitter().decide(
        1,
        &failure(secs(7 * 3600)),
        Duration::ZERO,
        &mut FixedRng::new([0.0]),
    );
    assert_eq!(d, RetryDecision::Exhausted(ExhaustedReason::ParkHorizon));
}

#[test]
fn invalid_policies_are_rejected() {
    assert!(RetryPolicy::default().validate().is_ok());
    assert!(
        RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        RetryPolicy {
            jitter: Jitter::Bounded(1.5),
            ..RetryPolicy::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        RetryPolicy {
            initial_delay: Duration::ZERO,
            ..RetryPolicy::default()
        }
        .validate()
        .is_err()
    );
}

proptest! {
    /// Delays are monotone until the cap, never exceed the cap (bounded jitter only shrinks), and
    /// a Retry-After hint is always honoured as a floor.
    #[test]
    fn schedule_properties(u in 0.0f64..1.0, hint_ms in 0u64..60_000, ratio in 0.0f64..=1.0) {
        let plain = no_jitter();
        let mut previous = Duration::ZERO;
        for k in 1..25 {
            let d = delay_of(plain.decide(k, &failure(Duration::ZERO), Duration::ZERO, &mut FixedRng::new([u])));
            prop_assert!(d >= previous);
            prop_assert!(d <= plain.max_delay);
            previous = d;
        }
        let jittered = RetryPolicy { jitter: Jitter::Bounded(ratio), ..RetryPolicy::default() };
        let hint = Duration::from_millis(hint_ms);
        for k in 1..25 {
            let d = delay_of(jittered.decide(k, &failure(hint), Duration::ZERO, &mut FixedRng::new([u])));
            prop_assert!(d >= hint, "hint {hint:?} not honoured: {d:?}");
            prop_assert!(d <= jittered.max_delay.max(hint));
            prop_assert!(d <= plain.backoff(k - 1).max(hint));
        }
    }
}
