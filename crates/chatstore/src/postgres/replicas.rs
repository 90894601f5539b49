//! The replica registry, cluster secrets and the database clock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::replicas::{CredentialHold, ReplicaStore};

#[async_trait]
impl ReplicaStore for PgStore {
    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(self.pool())
            .await?)
    }

    async fn register_worker(
        &self,
        worker_id: Uuid,
        relay_address: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO chatd_workers (worker_id, relay_address, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (worker_id) DO UPDATE SET relay_address = $2, heartbeat_at = now()",
        )
        .bind(worker_id)
        .bind(relay_address)
        .execute(self.lease_pool())
        .await?;
        Ok(())
    }

    async fn worker_address(
        &self,
        worker_id: Uuid,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT relay_address FROM chatd_workers
              WHERE worker_id = $1 AND heartbeat_at > now() - make_interval(secs => $2)",
        )
        .bind(worker_id)
        .bind(stale_after.as_secs_f64())
        .fetch_optional(self.pool())
        .await?)
    }

    async fn cluster_secret(&self, name: &str) -> Result<String, StoreError> {
        let candidate = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        // The insert loses quietly to a secret that exists or is being created concurrently;
        // the select then reads the winner.
        sqlx::query(
            "INSERT INTO chatd_cluster_secrets (name, secret) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&candidate)
        .execute(self.pool())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM chatd_cluster_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(self.pool())
                .await?,
        )
    }

    async fn hold_credential(
        &self,
        credential: &str,
        hold_for: Duration,
        reason: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_rate_limits (credential, hold_until, reason)
             VALUES ($1, now() + make_interval(secs => $2), $3)
             ON CONFLICT (credential) DO UPDATE
                SET hold_until = excluded.hold_until, reason = excluded.reason, updated_at = now()
              WHERE provider_rate_limits.hold_until < excluded.hold_until",
        )
        .bind(credential)
        .bind(hold_for.as_secs_f64())
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn credential_holds(&self) -> Result<Vec<CredentialHold>, StoreError> {
        let rows: Vec<(String, f64, serde_json::Value)> = sqlx::query_as(
            "SELECT credential, EXTRACT(EPOCH FROM hold_until - now())::float8, reason
               FROM provider_rate_limits WHERE hold_until > now()",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(crate::replicas::holds(rows))
    }
}
