//! The replica registry, cluster secrets and the database clock on SQLite (one replica per file,
//! so the registry holds this daemon's own relay address).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqliteStore, ago, later};
use crate::StoreError;
use crate::replicas::{CredentialHold, ReplicaStore};

#[async_trait]
impl ReplicaStore for SqliteStore {
    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(sqlx::query_scalar(concat!("SELECT ", now!()))
            .fetch_one(self.db.reader())
            .await?)
    }

    async fn register_worker(
        &self,
        worker_id: Uuid,
        relay_address: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO chatd_workers (worker_id, relay_address, heartbeat_at) VALUES ($1, $2, ",
            now!(),
            ") ON CONFLICT (worker_id) DO UPDATE SET relay_address = excluded.relay_address,
                                                    heartbeat_at = excluded.heartbeat_at"
        ))
        .bind(worker_id)
        .bind(relay_address)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    async fn worker_address(
        &self,
        worker_id: Uuid,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT relay_address FROM chatd_workers WHERE worker_id = $1 AND heartbeat_at > ",
            now_shifted!("$2")
        ))
        .bind(worker_id)
        .bind(ago(stale_after))
        .fetch_optional(self.db.reader())
        .await?)
    }

    async fn cluster_secret(&self, name: &str) -> Result<String, StoreError> {
        let candidate = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        // Writes run one at a time: the insert loses quietly to a secret that exists, and the
        // select on the same connection reads the winner.
        sqlx::query("INSERT INTO chatd_cluster_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate)
            .execute(self.db.writer())
            .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM chatd_cluster_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(self.db.writer())
                .await?,
        )
    }

    async fn hold_credential(
        &self,
        credential: &str,
        hold_for: Duration,
        reason: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO provider_rate_limits (credential, hold_until, reason) VALUES ($1, ",
            now_shifted!("$2"),
            ", $3) ON CONFLICT (credential) DO UPDATE
                  SET hold_until = excluded.hold_until, reason = excluded.reason,
                      updated_at = excluded.updated_at
                WHERE provider_rate_limits.hold_until < excluded.hold_until"
        ))
        .bind(credential)
        .bind(later(hold_for))
        .bind(reason.to_string())
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    async fn credential_holds(&self) -> Result<Vec<CredentialHold>, StoreError> {
        let rows: Vec<(String, f64, String)> = sqlx::query_as(concat!(
            "SELECT credential, (julianday(hold_until) - julianday('now')) * 86400.0, reason
               FROM provider_rate_limits WHERE hold_until > ",
            now!()
        ))
        .fetch_all(self.db.reader())
        .await?;
        Ok(crate::replicas::holds(
            rows.into_iter()
                .map(|(c, secs, reason)| {
                    (c, secs, serde_json::from_str(&reason).unwrap_or_default())
                })
                .collect(),
        ))
    }
}
