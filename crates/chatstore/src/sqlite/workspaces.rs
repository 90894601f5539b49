//! Workspaces, builds and provisioner jobs on SQLite. Job changes are published on the hub
//! after their commit. Writes run one at a time on the writer, so taking a job needs no row
//! lock: one statement marks the oldest pending job started. The times of workspaces, builds
//! and jobs come from the process clock ([`stored_time`]), one per write as PostgreSQL's rows
//! share their transaction's `now()`: jobs are taken and workspaces listed in their order, and
//! a job's times never run backwards.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, id_list, stored_time};
use crate::StoreError;
use crate::rows::{
    BuildRow, JobLogRow, JobRow, WorkspaceListingRow, WorkspaceRow, build_columns, job_columns,
    job_log_columns, workspace_columns,
};
use crate::sql::like_pattern;
use crate::workspaces::*;

/// Inserts a pending job created at `now`. The caller publishes it after its commit.
pub(super) async fn insert_job(
    conn: &mut SqliteConnection,
    organization_id: Uuid,
    job: NewJob,
    now: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, organization_id, type, input, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id)
    .bind(organization_id)
    .bind(job.kind())
    .bind(job.input())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Inserts the next build of a workspace with its job, both created at `now`.
async fn insert_build(
    conn: &mut SqliteConnection,
    workspace: &WorkspaceRow,
    transition: WorkspaceTransition,
    initiator_id: Option<Uuid>,
    parameters: serde_json::Value,
    now: &str,
) -> Result<Build, StoreError> {
    let (active, require_active): (Option<Uuid>, bool) = sqlx::query_as(
        "SELECT active_version_id, require_active_version FROM templates WHERE id = $1",
    )
    .bind(workspace.template_id)
    .fetch_one(&mut *conn)
    .await?;
    let latest: Option<Uuid> = sqlx::query_scalar(
        "SELECT template_version_id FROM workspace_builds WHERE workspace_id = $1
          ORDER BY build_number DESC LIMIT 1",
    )
    .bind(workspace.id)
    .fetch_optional(&mut *conn)
    .await?;
    let version = build_version(latest, active, require_active, transition)?;
    let build_id = Uuid::new_v4();
    let job = NewJob::Build {
        build_id,
        workspace_id: workspace.id,
        transition,
    };
    let job_id = insert_job(conn, workspace.organization_id, job, now).await?;
    let row: BuildRow = sqlx::query_as(concat!(
        "INSERT INTO workspace_builds (id, workspace_id, build_number, transition, job_id, template_version_id,
                                       initiator_id, parameters, created_at)
         VALUES ($1, $2, COALESCE((SELECT max(build_number) FROM workspace_builds WHERE workspace_id = $2), 0) + 1,
                 $3, $4, $5, $6, $7, $8)
         RETURNING ",
        build_columns!()
    ))
    .bind(build_id)
    .bind(workspace.id)
    .bind(transition)
    .bind(job_id)
    .bind(version)
    .bind(initiator_id)
    .bind(parameters)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.into())
}

macro_rules! workspace_listing_columns {
    () => {
        "w.id, w.owner_id, w.organization_id, w.template_id, w.name, w.deleted, w.ttl_ms, w.created_at,
         max(w.updated_at, COALESCE((SELECT max(b.created_at) FROM workspace_builds b WHERE b.workspace_id = w.id),
                                    w.updated_at)) AS updated_at,
         u.username AS owner_name, t.name AS template_name
           FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id"
    };
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(
        &self,
        organization_id: Uuid,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
        parameters: serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<(Workspace, Build), StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let now = stored_time(Utc::now());
        let row: WorkspaceRow = sqlx::query_as(concat!(
            "INSERT INTO workspaces (id, owner_id, organization_id, template_id, name, ttl_ms, control_plane_secret,
                                     created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             RETURNING ",
            workspace_columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(owner_id)
        .bind(organization_id)
        .bind(template_id)
        .bind(name)
        .bind(ttl_ms)
        .bind(new_control_plane_secret())
        .bind(&now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| workspace_insert_error(err, name))?;
        let build = insert_build(
            &mut tx,
            &row,
            WorkspaceTransition::Start,
            Some(owner_id),
            parameters,
            &now,
        )
        .await?;
        tx.commit().await?;
        self.job_changed(build.job_id);
        Ok((row.into(), build))
    }

    async fn new_build(
        &self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Option<Uuid>,
        parameters: serde_json::Value,
    ) -> Result<Build, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let now = stored_time(Utc::now());
        let row: Option<WorkspaceRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_columns!(),
            " FROM workspaces WHERE id = $1 AND NOT deleted"
        ))
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or_else(|| workspace_not_found(workspace_id))?;
        let busy: Option<JobStatus> = sqlx::query_scalar(
            "SELECT j.job_status FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
              WHERE b.workspace_id = $1 ORDER BY b.build_number DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        ensure_latest_build_finished(busy)?;
        let build = insert_build(&mut tx, &row, transition, initiator_id, parameters, &now).await?;
        if transition == WorkspaceTransition::Delete {
            sqlx::query("UPDATE workspaces SET updated_at = $2 WHERE id = $1")
                .bind(workspace_id)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.job_changed(build.job_id);
        Ok(build)
    }

    async fn latest_build(&self, workspace_id: Uuid) -> Result<Option<Build>, StoreError> {
        let row: Option<BuildRow> = sqlx::query_as(concat!(
            "SELECT ",
            build_columns!(),
            " FROM workspace_builds WHERE workspace_id = $1 ORDER BY build_number DESC LIMIT 1"
        ))
        .bind(workspace_id)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(row.map(Build::from))
    }

    async fn build(&self, build_id: Uuid) -> Result<Build, StoreError> {
        let row: Option<BuildRow> = sqlx::query_as(concat!(
            "SELECT ",
            build_columns!(),
            " FROM workspace_builds WHERE id = $1"
        ))
        .bind(build_id)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(Build::from)
            .ok_or_else(|| build_not_found(build_id))
    }

    async fn workspace(&self, workspace_id: Uuid) -> Result<Workspace, StoreError> {
        let row: Option<WorkspaceRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_columns!(),
            " FROM workspaces WHERE id = $1"
        ))
        .bind(workspace_id)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(Workspace::from)
            .ok_or_else(|| workspace_not_found(workspace_id))
    }

    async fn jobs_in_progress(&self, worker_id: Uuid) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM provisioner_jobs WHERE worker_id = $1 AND started_at IS NOT NULL AND completed_at IS NULL
              ORDER BY created_at, id"
        ))
        .bind(worker_id)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    async fn acquire_job(&self, worker_id: Uuid) -> Result<Option<Job>, StoreError> {
        // One statement on the one writer: two workers never take the same job. The time is
        // taken once the writer is ours, so it is never before a job written ahead of it.
        let mut writer = self.db.writer().acquire().await?;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs SET started_at = $2, updated_at = $2, worker_id = $1
              WHERE id = (SELECT id FROM provisioner_jobs
                           WHERE started_at IS NULL AND canceled_at IS NULL
                           ORDER BY created_at, id LIMIT 1)
              RETURNING ",
            job_columns!()
        ))
        .bind(worker_id)
        .bind(stored_time(Utc::now()))
        .fetch_optional(&mut *writer)
        .await?;
        drop(writer);
        if let Some(row) = &row {
            self.job_changed(row.id);
        }
        Ok(row.map(Job::from))
    }

    async fn job(&self, id: Uuid) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM provisioner_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(Job::from).ok_or_else(|| job_not_found(id))
    }

    async fn append_job_logs(
        &self,
        job_id: Uuid,
        lines: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.writer().begin().await?;
        for (level, stage, output) in lines {
            sqlx::query(
                "INSERT INTO provisioner_job_logs (job_id, level, stage, output) VALUES ($1, $2, $3, $4)",
            )
            .bind(job_id)
            .bind(level)
            .bind(stage)
            .bind(output)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn complete_job(
        &self,
        job_id: Uuid,
        error: &str,
        error_code: &str,
    ) -> Result<Job, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let now = stored_time(Utc::now());
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET completed_at = $4, updated_at = $4, error = $2, error_code = $3,
                    started_at = COALESCE(started_at, $4)
              WHERE id = $1 AND completed_at IS NULL
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .bind(error)
        .bind(error_code)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or_else(|| job_not_running(job_id))?;
        // A successful delete build deletes the workspace.
        if row.status == JobStatus::Succeeded {
            sqlx::query(
                "UPDATE workspaces SET deleted = 1, updated_at = $2
                  WHERE id IN (SELECT workspace_id FROM workspace_builds
                                WHERE job_id = $1 AND transition = 'delete')",
            )
            .bind(job_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.job_changed(job_id);
        Ok(row.into())
    }

    async fn cancel_job(&self, job_id: Uuid) -> Result<Job, StoreError> {
        // A job nobody took yet is finished at once; a running one is asked to stop.
        let mut writer = self.db.writer().acquire().await?;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET canceled_at = COALESCE(canceled_at, $2), updated_at = $2,
                    completed_at = CASE WHEN started_at IS NULL THEN $2 ELSE completed_at END
              WHERE id = $1
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .bind(stored_time(Utc::now()))
        .fetch_optional(&mut *writer)
        .await?;
        drop(writer);
        let row = row.ok_or_else(|| job_not_found(job_id))?;
        self.job_changed(job_id);
        Ok(row.into())
    }

    async fn list_workspaces(
        &self,
        query: &WorkspaceListQuery,
    ) -> Result<Vec<WorkspaceListing>, StoreError> {
        let rows: Vec<WorkspaceListingRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_listing_columns!(),
            " WHERE NOT w.deleted AND w.organization_id IN ",
            ids_in!("$1"),
            " AND ($2 IS NULL OR w.owner_id = $2)
                AND ($3 IS NULL OR w.template_id = $3)
                AND w.name LIKE $4 ESCAPE '\\'
                AND ($5 IS NULL OR (w.created_at, w.id) < ($5, $6))
              ORDER BY w.created_at DESC, w.id DESC LIMIT $7"
        ))
        .bind(id_list(&query.organization_ids))
        .bind(query.owner_id)
        .bind(query.template_id)
        .bind(like_pattern(query.name_query.trim()))
        .bind(query.after.map(|(at, _)| stored_time(at)))
        .bind(query.after.map(|(_, id)| id))
        .bind(query.limit)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(WorkspaceListing::from).collect())
    }

    async fn workspace_listing(&self, id: Uuid) -> Result<Option<WorkspaceListing>, StoreError> {
        let row: Option<WorkspaceListingRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_listing_columns!(),
            " WHERE w.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(row.map(WorkspaceListing::from))
    }

    async fn job_logs(
        &self,
        job_id: Uuid,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<JobLog>, StoreError> {
        let rows: Vec<JobLogRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_log_columns!(),
            " FROM provisioner_job_logs WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(job_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(JobLog::from).collect())
    }
}
