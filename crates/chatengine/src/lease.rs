//! What a runner can prove of its lease without asking the database (spec/engine.md §9.4).
//!
//! A lease row's `heartbeat_at` is written by the statement that acquires or renews it, so the
//! database cannot call the lease stale before `sent + lease_stale_after`, where `sent` is when
//! that statement left this process. Both clocks advance at the same rate, so the runner needs
//! only its own monotonic clock: until then, no other replica can have taken the chat over.
//! Tool calls are dispatched only within that window (less a margin for the dispatch's own
//! flight), so a replica cut off from the database stops touching workspaces before another one
//! may start.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A runner's lease proof: the last confirmation and how long it holds.
#[derive(Debug)]
pub(crate) struct LeaseProof {
    confirmed: Mutex<Instant>,
    holds_for: Duration,
}

impl LeaseProof {
    /// A lease confirmed by a statement sent at `sent`, stale `lease_stale_after` after its
    /// last confirmation; a tenth of that is kept as the margin.
    pub(crate) fn new(sent: Instant, lease_stale_after: Duration) -> Self {
        Self {
            confirmed: Mutex::new(sent),
            holds_for: lease_stale_after - lease_stale_after / 10,
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        *confirmed = (*confirmed).max(sent);
    }

    /// Whether the lease is still provably this runner's at `now`.
    pub(crate) fn holds_at(&self, now: Instant) -> bool {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        now < confirmed + self.holds_for
    }

    /// Whether the lease is still provably this runner's.
    pub(crate) fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }
}

impl chattool::context::LeaseCheck for LeaseProof {
    fn holds(&self) -> bool {
        LeaseProof::holds(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_until_the_margin_before_staleness_and_renewals_extend_it() {
        let t0 = Instant::now();
        let proof = LeaseProof::new(t0, Duration::from_secs(30));
        assert!(proof.holds_at(t0 + Duration::from_secs(26)));
        assert!(!proof.holds_at(t0 + Duration::from_secs(27)));
        proof.renewed(t0 + Duration::from_secs(9));
        assert!(proof.holds_at(t0 + Duration::from_secs(35)));
        // A renewal that was sent earlier (a slow reply) never shortens the proof.
        proof.renewed(t0 + Duration::from_secs(1));
        assert!(proof.holds_at(t0 + Duration::from_secs(35)));
        assert!(!proof.holds_at(t0 + Duration::from_secs(36)));
    }
}
