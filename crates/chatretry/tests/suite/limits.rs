//! The shared rate limits of one credential: closed, open, half-open with one probe.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chaterror::{Classification, ErrorKind};
use chatretry::{Admission, Hold, Permit, SharedLimits};

const KEY: &str = "anthropic https://api.example key-a";

fn limited(kind: ErrorKind, retry_after: Duration) -> Classification {
    Classification {
        kind: Some(kind),
        retryable: true,
        status_code: if kind == ErrorKind::RateLimit {
            429
        } else {
            529
        },
        retry_after,
        ..Classification::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn go(limits: &Arc<SharedLimits>, key: &str, now: SystemTime) -> Permit {
    match limits.admit(key, now) {
        Admission::Go(permit) => permit,
        Admission::Wait(wait) => panic!("held back: {wait:?}"),
    }
}

fn held_until(limits: &Arc<SharedLimits>, key: &str, now: SystemTime) -> Option<SystemTime> {
    match limits.admit(key, now) {
        Admission::Go(permit) => panic!("admitted (probe: {})", permit.is_probe()),
        Admission::Wait(wait) => wait.until,
    }
}

#[test]
fn a_limit_with_a_hint_holds_every_caller_of_the_credential_and_no_other() {
    let limits = SharedLimits::new(secs(60)).shared();
    let t0 = SystemTime::UNIX_EPOCH + secs(1_000);
    let first = go(&limits, KEY, t0);
    let second = go(&limits, KEY, t0);
    let hold = first.failed(&limited(ErrorKind::RateLimit, secs(10)), t0);
    assert_eq!(hold.map(|h| h.until), Some(t0 + secs(10)));
    assert_eq!(held_until(&limits, KEY, t0 + secs(9)), Some(t0 + secs(10)));
    // Another credential is not held.
    drop(go(&limits, "openai https://api.example key-a", t0));
    // A call that started before the hold and then fails the same way extends nothing shorter.
    second.failed(&limited(ErrorKind::Overloaded, secs(4)), t0 + secs(1));
    assert_eq!(held_until(&limits, KEY, t0 + secs(2)), Some(t0 + secs(10)));
}

#[test]
fn failures_without_a_hint_or_of_other_kinds_hold_nothing() {
    let limits = SharedLimits::new(secs(60)).shared();
    let now = SystemTime::UNIX_EPOCH + secs(1_000);
    let cases = [
        limited(ErrorKind::RateLimit, Duration::ZERO),
        limited(ErrorKind::Timeout, secs(5)),
        Classification {
            retryable: false,
            ..limited(ErrorKind::RateLimit, secs(5))
        },
    ];
    for c in cases {
        assert_eq!(go(&limits, KEY, now).failed(&c, now), None, "{c:?}");
        drop(go(&limits, KEY, now));
    }
}

#[test]
fn after_the_hold_one_probe_goes_and_its_outcome_decides_for_the_others() {
    let limits = SharedLimits::new(secs(60)).shared();
    let t0 = SystemTime::UNIX_EPOCH + secs(1_000);
    let _ = go(&limits, KEY, t0).failed(&limited(ErrorKind::RateLimit, secs(5)), t0);
    let t1 = t0 + secs(6);

    // Limited again: open with the new hold.
    let probe = go(&limits, KEY, t1);
    assert!(probe.is_probe());
    assert_eq!(held_until(&limits, KEY, t1), None, "waits for the probe");
    let _ = probe.failed(&limited(ErrorKind::RateLimit, secs(5)), t1);
    assert_eq!(held_until(&limits, KEY, t1), Some(t1 + secs(5)));

    // Another kind of failure: the next caller probes.
    let t2 = t1 + secs(6);
    let probe = go(&limits, KEY, t2);
    let _ = probe.failed(&limited(ErrorKind::Timeout, Duration::ZERO), t2);
    let probe = go(&limits, KEY, t2);
    assert!(probe.is_probe());

    // Dropped (cancelled): the next caller probes.
    drop(probe);
    let mut probe = go(&limits, KEY, t2);
    assert!(probe.is_probe());

    // Accepted: closed; everyone goes, nobody probes.
    probe.succeeded();
    assert!(!go(&limits, KEY, t2).is_probe());
    assert!(!go(&limits, KEY, t2).is_probe());
    assert_eq!(limits.hold(KEY), None);
    // A failure reported after the probe was accepted (mid-stream) still counts.
    let _ = probe.failed(&limited(ErrorKind::Overloaded, secs(3)), t2);
    assert_eq!(held_until(&limits, KEY, t2), Some(t2 + secs(3)));
}

#[test]
fn holds_are_capped_published_when_heard_here_and_merged_without_shortening() {
    let published = Arc::new(Mutex::new(Vec::new()));
    let sink = published.clone();
    let limits = SharedLimits::new(secs(30))
        .with_publisher(move |key, hold: &Hold| {
            sink.lock().unwrap().push((key.to_owned(), hold.until));
        })
        .shared();
    let t0 = SystemTime::UNIX_EPOCH + secs(1_000);

    // A hostile Retry-After of a day is cut to the ceiling.
    let _ = go(&limits, KEY, t0).failed(&limited(ErrorKind::RateLimit, secs(86_400)), t0);
    assert_eq!(held_until(&limits, KEY, t0), Some(t0 + secs(30)));
    assert_eq!(
        *published.lock().unwrap(),
        [(KEY.to_owned(), t0 + secs(30))]
    );

    // Merged holds: a shorter one changes nothing, a longer one extends (to the ceiling from
    // now), and neither is published again.
    let c = limited(ErrorKind::RateLimit, secs(1));
    let merge = |until| Hold {
        until,
        classification: c.clone(),
    };
    limits.merge(KEY, merge(t0 + secs(5)), t0);
    assert_eq!(held_until(&limits, KEY, t0), Some(t0 + secs(30)));
    limits.merge(KEY, merge(t0 + secs(3_600)), t0 + secs(10));
    assert_eq!(held_until(&limits, KEY, t0), Some(t0 + secs(40)));
    limits.merge("other", merge(t0 + secs(2)), t0);
    assert_eq!(held_until(&limits, "other", t0), Some(t0 + secs(2)));
    assert_eq!(published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn waiting_callers_hear_when_the_probe_ends() {
    let limits = SharedLimits::new(secs(60)).shared();
    let t0 = SystemTime::UNIX_EPOCH + secs(1_000);
    let _ = go(&limits, KEY, t0).failed(&limited(ErrorKind::RateLimit, secs(1)), t0);
    let t1 = t0 + secs(2);
    let mut probe = go(&limits, KEY, t1);
    let waiter = {
        let limits = limits.clone();
        tokio::spawn(async move {
            loop {
                let changed = limits.changed();
                if let Admission::Go(permit) = limits.admit(KEY, t1) {
                    return permit.is_probe();
                }
                changed.await;
            }
        })
    };
    tokio::task::yield_now().await;
    probe.succeeded();
    let was_probe = tokio::time::timeout(secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(!was_probe, "after an accepted probe, callers go as usual");
}
