//! Workspace agents on SQLite. Agent changes a waiter cares about are published on the hub
//! after their commit.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqliteStore, stored_time};
use crate::StoreError;
use crate::agents::*;
use crate::identity::token_hash;
use crate::rows::{AgentRow, ManifestRow, agent_columns, agent_manifest_query};

#[async_trait]
impl AgentStore for SqliteStore {
    async fn insert_agent(
        &self,
        job_id: Uuid,
        name: &str,
        directory: &str,
        connection_timeout_seconds: i32,
        auth_token_hash: &[u8],
    ) -> Result<Uuid, StoreError> {
        let (resource, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tx = self.db.writer().begin().await?;
        sqlx::query(
            "INSERT INTO workspace_resources (id, job_id, type, name) VALUES ($1, $2, 'chatd_local', $3)",
        )
        .bind(resource)
        .bind(job_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_agents (id, resource_id, name, directory, connection_timeout_seconds,
                                           auth_token_hash)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(agent)
        .bind(resource)
        .bind(name)
        .bind(directory)
        .bind(connection_timeout_seconds)
        .bind(auth_token_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.agent_changed(agent);
        Ok(agent)
    }

    async fn build_agents(&self, build_id: Uuid) -> Result<Vec<Agent>, StoreError> {
        let rows: Vec<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               JOIN workspace_builds b ON b.job_id = r.job_id
              WHERE b.id = $1 AND NOT a.deleted
              ORDER BY a.display_order, a.name, a.id"
        ))
        .bind(build_id)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(Agent::from).collect())
    }

    async fn agent(&self, agent_id: Uuid) -> Result<Agent, StoreError> {
        let row: Option<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM workspace_agents a WHERE a.id = $1"
        ))
        .bind(agent_id)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(Agent::from)
            .ok_or_else(|| agent_not_found(agent_id))
    }

    async fn agent_secret(&self, agent_id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "SELECT w.control_plane_secret FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               JOIN workspace_builds b ON b.job_id = r.job_id
               JOIN workspaces w ON w.id = b.workspace_id
              WHERE a.id = $1",
        )
        .bind(agent_id)
        .fetch_optional(self.db.reader())
        .await?
        .ok_or_else(|| agent_without_workspace(agent_id))
    }

    async fn agent_is_external(&self, agent_id: Uuid) -> Result<bool, StoreError> {
        let row: Option<(Option<bool>,)> = sqlx::query_as(
            "SELECT v.has_external_agent FROM workspace_agents a
               JOIN workspace_resources r ON r.id = a.resource_id
               LEFT JOIN workspace_builds b ON b.job_id = r.job_id
               LEFT JOIN template_versions v ON v.id = b.template_version_id
              WHERE a.id = $1",
        )
        .bind(agent_id)
        .fetch_optional(self.db.reader())
        .await?;
        let (external,) = row.ok_or_else(|| agent_not_found(agent_id))?;
        Ok(external.unwrap_or(false))
    }

    async fn agent_heartbeat(
        &self,
        agent_id: Uuid,
        report: &AgentReport,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.writer().begin().await?;
        // Publish only when something a waiter cares about changes (first connection,
        // reconnection, a new address), not on every routine heartbeat.
        let changed: Option<bool> = sqlx::query_scalar(
            "SELECT first_connected_at IS NULL
                    OR (disconnected_at IS NOT NULL AND disconnected_at >= last_connected_at)
                    OR address <> $2
               FROM workspace_agents WHERE id = $1",
        )
        .bind(agent_id)
        .bind(&report.address)
        .fetch_optional(&mut *tx)
        .await?;
        let changed = changed.ok_or_else(|| agent_not_found(agent_id))?;
        sqlx::query(concat!(
            "UPDATE workspace_agents
                SET first_connected_at = COALESCE(first_connected_at, ",
            now!(),
            "), last_connected_at = ",
            now!(),
            ", address = $2,
                    expanded_directory = CASE WHEN $3 = '' THEN expanded_directory ELSE $3 END,
                    operating_system = CASE WHEN $4 = '' THEN operating_system ELSE $4 END
              WHERE id = $1"
        ))
        .bind(agent_id)
        .bind(&report.address)
        .bind(&report.expanded_directory)
        .bind(&report.operating_system)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if changed {
            self.agent_changed(agent_id);
        }
        Ok(())
    }

    async fn agent_manifest_by_token(
        &self,
        token: &str,
    ) -> Result<Option<AgentManifest>, StoreError> {
        let row: Option<ManifestRow> = sqlx::query_as(agent_manifest_query!())
            .bind(token_hash(token))
            .fetch_optional(self.db.reader())
            .await?;
        row.map(AgentManifest::try_from).transpose()
    }

    async fn set_agent_startup(
        &self,
        agent_id: Uuid,
        startup_script: &str,
        timeout_seconds: i32,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspace_agents SET startup_script = $2, startup_script_timeout_seconds = $3, env = $4
              WHERE id = $1",
        )
        .bind(agent_id)
        .bind(startup_script)
        .bind(timeout_seconds)
        .bind(env_json(env)?)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    async fn append_agent_logs(
        &self,
        agent_id: Uuid,
        source: &str,
        lines: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let used: Option<i64> =
            sqlx::query_scalar("SELECT logs_bytes FROM workspace_agents WHERE id = $1")
                .bind(agent_id)
                .fetch_optional(&mut *tx)
                .await?;
        let used = used.ok_or_else(|| agent_not_found(agent_id))?;
        let capped = cap_agent_logs(used, lines);
        for (level, output) in capped.kept {
            sqlx::query(
                "INSERT INTO workspace_agent_logs (agent_id, source, level, output) VALUES ($1, $2, $3, $4)",
            )
            .bind(agent_id)
            .bind(source)
            .bind(level)
            .bind(output)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE workspace_agents SET logs_bytes = $2, logs_overflowed = logs_overflowed OR $3
              WHERE id = $1",
        )
        .bind(agent_id)
        .bind(capped.used)
        .bind(capped.overflowed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(capped.overflowed)
    }

    async fn agent_disconnected(&self, agent_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE workspace_agents SET disconnected_at = ",
            now!(),
            " WHERE id = $1"
        ))
        .bind(agent_id)
        .execute(self.db.writer())
        .await?;
        self.agent_changed(agent_id);
        Ok(())
    }

    async fn update_agent_lifecycle(
        &self,
        agent_id: Uuid,
        state: AgentLifecycle,
        changed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE workspace_agents SET lifecycle_state = $2, lifecycle_changed_at = $3
              WHERE id = $1 AND (lifecycle_changed_at IS NULL OR lifecycle_changed_at <= $3)",
        )
        .bind(agent_id)
        .bind(state)
        .bind(stored_time(changed_at))
        .execute(self.db.writer())
        .await?
        .rows_affected();
        if updated > 0 {
            self.agent_changed(agent_id);
        }
        Ok(())
    }
}
