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
}
