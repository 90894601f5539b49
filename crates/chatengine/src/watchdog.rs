//! The idle watchdog of a chat task (spec/engine.md §11): a task that makes no progress for
//! `worker.task_idle_watchdog` is cancelled and started again, so a hang nobody foresaw (a
//! stream the silence guard does not cover, a database call that never returns) cannot hold a
//! chat in `running` for good.
//!
//! Progress is a kick: every model stream part, every workspace round-trip of a tool, every look
//! of a build or readiness wait, every commit. A deliberate wait (a retry back-off, a parked
//! turn, the requires-action deadline) holds the watchdog off while it lasts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chatretry::SilenceTimeout;
use tokio::time::Instant;

/// The default idle limit (15 min).
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The idle limit in force: `configured`, raised above the stream silence timeout by 5 min so
/// that the silence guard, which classifies and retries, always fires first (spec/chatretry.md
/// §6).
pub fn effective_limit(configured: Duration, silence: SilenceTimeout) -> Duration {
    if silence.is_disabled() {
        configured
    } else {
        configured.max(silence.get() + Duration::from_secs(5 * 60))
    }
}

/// One task's progress.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last kick.
    last: AtomicU64,
    /// Deliberate waits in progress.
    waiting: AtomicUsize,
}

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The task made progress.
    pub(crate) fn kick(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// A deliberate wait: the watchdog holds off until the guard drops (which kicks).
    pub(crate) fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }

    fn last_kick(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once the task has gone `limit` without a kick outside a deliberate wait.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let due = self.last_kick() + limit;
            tokio::time::sleep_until(due).await;
            if self.waiting.load(Ordering::Relaxed) > 0 {
                // Look again a whole limit after the wait ends (its guard kicks on drop).
                tokio::time::sleep(limit).await;
                continue;
            }
            if self.last_kick() + limit <= Instant::now() {
                return;
            }
        }
    }
}

/// A deliberate wait in progress ([`Progress::waiting`]).
#[derive(Debug)]
pub(crate) struct Waiting(Arc<Progress>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.kick();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_stays_above_the_silence_guard() {
        let minute = Duration::from_secs(60);
        let silence = |d| SilenceTimeout::new(d).unwrap();
        assert_eq!(
            effective_limit(15 * minute, silence(10 * minute)),
            15 * minute
        );
        assert_eq!(
            effective_limit(15 * minute, silence(20 * minute)),
            25 * minute
        );
        assert_eq!(
            effective_limit(Duration::from_secs(1), silence(Duration::ZERO)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn kicks_and_deliberate_waits_hold_the_watchdog_off() {
        let limit = Duration::from_secs(10);
        let progress = Progress::new();
        let fired = {
            let progress = progress.clone();
            tokio::spawn(async move {
                progress.idle_for(limit).await;
                Instant::now()
            })
        };
        // Kicked every 6 s for 30 s: no firing.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            progress.kick();
        }
        // A deliberate wait of 40 s.
        let wait = progress.waiting();
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(!fired.is_finished());
        let ended = Instant::now();
        drop(wait);
        let at = fired.await.unwrap();
        assert!(at >= ended + limit, "fired {:?} after the wait", at - ended);
        assert!(at <= ended + 2 * limit + Duration::from_secs(1));
    }
}
