//! Rate limits shared by every caller of one credential (spec/chatretry.md §13).
//!
//! When a provider answers one call with a rate limit (`rate_limit` or `overloaded`) and says
//! how long to wait (a Retry-After header or body hint), that wait applies to every call made
//! with the same credential, not only to the one that heard it. [`SharedLimits`] keeps, per
//! credential key, a *hold* until that time, and admits calls like a circuit breaker:
//!
//! - **closed** (no hold): every call goes;
//! - **open** (a hold in the future): no call goes; callers wait until it ends;
//! - **half-open** (a hold that has ended): one call goes as the probe, the others wait for its
//!   outcome. A probe that gets through closes the breaker; one that is limited again opens it
//!   with the new hold; one that fails otherwise (or is dropped) lets the next caller probe.
//!
//! The key is the caller's business (chatd uses provider, base URL and key reference; never the
//! key itself). Holds learned elsewhere (another process, through a database) are
//! [merged](SharedLimits::merge) in; holds learned here are handed to the
//! [publisher](SharedLimits::with_publisher) so they can be shared the same way. A hold is never
//! longer than the ceiling given at construction, so a wrong or hostile Retry-After cannot stop
//! a credential for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chaterror::{Classification, ErrorKind};

/// A credential's hold: no call starts before `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// When calls may start again (one probe first).
    pub until: SystemTime,
    /// The failure that set it, for the waiting callers' retry events.
    pub classification: Classification,
}

/// Why [`SharedLimits::admit`] held a caller back.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// When the hold ends; `None` while another caller's probe is in flight (its outcome is
    /// announced through [`SharedLimits::changed`]).
    pub until: Option<SystemTime>,
    /// The failure behind the hold.
    pub classification: Classification,
}

/// The answer of [`SharedLimits::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Call now; report the outcome on the permit.
    Go(Permit),
    /// Do not call yet.
    Wait(Wait),
}

type Publisher = Box<dyn Fn(&str, &Hold) + Send + Sync>;

#[derive(Debug, Default)]
struct Entry {
    hold: Option<Hold>,
    probing: bool,
}

/// Per-credential rate-limit state shared by the callers of one process.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use chaterror::{Classification, ErrorKind};
/// use chatretry::{Admission, SharedLimits};
///
/// let limits = SharedLimits::new(Duration::from_secs(300)).shared();
/// let now = SystemTime::now();
/// let Admission::Go(first) = limits.admit("anthropic key-a", now) else { unreachable!() };
///
/// // The call is rate limited for 10 s: the credential's other callers wait.
/// let limited = Classification {
///     kind: Some(ErrorKind::RateLimit),
///     retryable: true,
///     status_code: 429,
///     retry_after: Duration::from_secs(10),
///     ..Classification::default()
/// };
/// first.failed(&limited, now);
/// let Admission::Wait(wait) = limits.admit("anthropic key-a", now) else { unreachable!() };
/// assert_eq!(wait.until, Some(now + Duration::from_secs(10)));
///
/// // Then one probe goes; the others wait for it.
/// let later = now + Duration::from_secs(11);
/// let Admission::Go(mut probe) = limits.admit("anthropic key-a", later) else { unreachable!() };
/// assert!(probe.is_probe());
/// assert!(matches!(limits.admit("anthropic key-a", later), Admission::Wait(_)));
/// probe.succeeded();
/// assert!(matches!(limits.admit("anthropic key-a", later), Admission::Go(_)));
/// ```
pub struct SharedLimits {
    entries: Mutex<HashMap<String, Entry>>,
    changed: tokio::sync::Notify,
    max_hold: Duration,
    publisher: Option<Publisher>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("max_hold", &self.max_hold)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// No holds yet; a hold never lasts longer than `max_hold`.
    pub fn new(max_hold: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            max_hold,
            publisher: None,
        }
    }

    /// Calls `publish` with each hold a failure seen here sets or extends (not with merged
    /// ones), e.g. to write it where other processes read it. It runs under no lock of this
    /// value but must not block.
    pub fn with_publisher(mut self, publish: impl Fn(&str, &Hold) + Send + Sync + 'static) -> Self {
        self.publisher = Some(Box::new(publish));
        self
    }

    /// Wraps the value for sharing; [`admit`](Self::admit) needs an `Arc`.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call with credential `key` may start at `now`.
    pub fn admit(self: &Arc<Self>, key: &str, now: SystemTime) -> Admission {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(key) else {
            return Admission::Go(self.permit(key, false));
        };
        let Some(hold) = &entry.hold else {
            return Admission::Go(self.permit(key, false));
        };
        if hold.until > now {
            return Admission::Wait(Wait {
                until: Some(hold.until),
                classification: hold.classification.clone(),
            });
        }
        if entry.probing {
            return Admission::Wait(Wait {
                until: None,
                classification: hold.classification.clone(),
            });
        }
        entry.probing = true;
        Admission::Go(self.permit(key, true))
    }

    fn permit(self: &Arc<Self>, key: &str, probe: bool) -> Permit {
        Permit {
            limits: Arc::clone(self),
            key: key.to_owned(),
            probe,
        }
    }

    /// The hold a failure classified as `c` at `now` calls for: a retryable `rate_limit` or
    /// `overloaded` with a Retry-After hint, capped at the ceiling.
    pub fn hold_for(&self, c: &Classification, now: SystemTime) -> Option<Hold> {
        let limited = matches!(c.kind, Some(ErrorKind::RateLimit | ErrorKind::Overloaded));
        if !limited || !c.retryable || c.retry_after.is_zero() {
            return None;
        }
        Some(Hold {
            until: now + c.retry_after.min(self.max_hold),
            classification: c.clone(),
        })
    }

    /// Records a hold learned elsewhere (not published again). A hold ends no earlier than
    /// the latest one known; one beyond the ceiling from `now` is cut to it.
    pub fn merge(&self, key: &str, mut hold: Hold, now: SystemTime) {
        hold.until = hold.until.min(now + self.max_hold);
        if self.extend(key, hold, false) {
            self.changed.notify_waiters();
        }
    }

    /// Sets or extends the hold of `key`; `true` when it changed. `end_probe` also ends the
    /// probe in flight (its outcome is this hold).
    fn extend(&self, key: &str, hold: Hold, end_probe: bool) -> bool {
        let mut entries = self.entries();
        let entry = entries.entry(key.to_owned()).or_default();
        let ended_probe = end_probe && std::mem::take(&mut entry.probing);
        match &entry.hold {
            Some(current) if current.until >= hold.until => ended_probe,
            _ => {
                entry.hold = Some(hold);
                true
            }
        }
    }

    /// The hold of `key`, if any (ended or not).
    pub fn hold(&self, key: &str) -> Option<Hold> {
        self.entries().get(key).and_then(|e| e.hold.clone())
    }

    /// Resolves the next time a hold is set, extended or lifted, or a probe ends: a waiting
    /// caller then asks [`admit`](Self::admit) again. It hears every change from its creation
    /// on, so create it before asking `admit` and await it after.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn probe_ended(&self, key: &str, cleared: bool) {
        {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(key) else {
                return;
            };
            entry.probing = false;
            if cleared {
                entry.hold = None;
            }
        }
        self.changed.notify_waiters();
    }
}

/// Leave to make one call. Report how it went with [`succeeded`](Self::succeeded) (the
/// provider accepted it) and [`failed`](Self::failed); a probe dropped without either (a
/// cancelled call) lets another caller probe.
#[derive(Debug)]
#[must_use = "a permit reports the call's outcome"]
pub struct Permit {
    limits: Arc<SharedLimits>,
    key: String,
    probe: bool,
}

impl Permit {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The provider accepted the call (it may still fail later, reported with
    /// [`failed`](Self::failed)): a probe closes the breaker.
    pub fn succeeded(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.limits.probe_ended(&self.key, true);
        }
    }

    /// The call failed as `c` at `now`: a rate limit with a hint holds the credential back
    /// (and is published); any other failure of a probe lets the next caller probe. Returns
    /// the hold it set, if any.
    pub fn failed(mut self, c: &Classification, now: SystemTime) -> Option<Hold> {
        let probe = std::mem::take(&mut self.probe);
        let Some(hold) = self.limits.hold_for(c, now) else {
            if probe {
                self.limits.probe_ended(&self.key, false);
            }
            return None;
        };
        if self.limits.extend(&self.key, hold.clone(), probe) {
            self.limits.changed.notify_waiters();
        }
        if let Some(publish) = &self.limits.publisher {
            publish(&self.key, &hold);
        }
        Some(hold)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe {
            self.limits.probe_ended(&self.key, false);
        }
    }
}
