//! The replicas sharing a database: the relay registry, cluster-wide secrets and the database
//! clock they agree on.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreError;

#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// The database's clock (`now()`), the time connection statuses and leases are computed
    /// against, so replicas with skewed clocks agree.
    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError>;
    /// Registers (or refreshes) a replica's relay address.
    async fn register_worker(&self, worker_id: Uuid, relay_address: &str)
    -> Result<(), StoreError>;
    /// The relay address of a live replica (heartbeat fresher than `stale_after`).
    async fn worker_address(
        &self,
        worker_id: Uuid,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError>;
    /// The deployment-wide secret called `name`, created from the OS's random source by the
    /// first caller; every replica on the database reads the same one.
    async fn cluster_secret(&self, name: &str) -> Result<String, StoreError>;
    /// Holds provider credential `credential` back for `hold_for` from now (the database's
    /// clock), because of `reason`; a longer hold already recorded stays.
    async fn hold_credential(
        &self,
        credential: &str,
        hold_for: Duration,
        reason: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// The credentials held back now, each with the time left (so replicas with skewed clocks
    /// agree) and the reason it was recorded with.
    async fn credential_holds(&self) -> Result<Vec<CredentialHold>, StoreError>;
}

/// A provider credential held back by a shared rate limit ([`ReplicaStore::hold_credential`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialHold {
    /// The credential's key (provider, base URL, key reference).
    pub credential: String,
    /// How long the hold lasts from the read.
    pub remaining: Duration,
    /// The failure that set it, as recorded.
    pub reason: serde_json::Value,
}

/// Rows of (credential, seconds left, reason) as holds; a hold that ended between the query's
/// filter and its clock reads as none left.
pub(crate) fn holds(rows: Vec<(String, f64, serde_json::Value)>) -> Vec<CredentialHold> {
    rows.into_iter()
        .map(|(credential, secs, reason)| CredentialHold {
            credential,
            remaining: Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO),
            reason,
        })
        .collect()
}
