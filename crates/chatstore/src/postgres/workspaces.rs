//! Workspaces, builds and provisioner jobs. Job changes notify inside their transaction
//! (delivered on commit).

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::pubsub::{JobUpdate, Notification};
use crate::rows::{
    BuildRow, JobLogRow, JobRow, WorkspaceListingRow, WorkspaceRow, build_columns, job_columns,
    job_log_columns, workspace_columns,
};
use crate::sql::like_pattern;
use crate::workspaces::*;

async fn notify_job(conn: &mut PgConnection, job_id: Uuid) -> Result<(), StoreError> {
    super::store::notify(conn, &Notification::Job(JobUpdate { job_id })).await
}

pub(super) async fn insert_job(
    conn: &mut PgConnection,
    organization_id: Uuid,
    job: NewJob,
) -> Result<Uuid, StoreError> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO provisioner_jobs (organization_id, type, input) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(organization_id)
    .bind(job.kind())
    .bind(job.input())
    .fetch_one(&mut *conn)
    .await?;
    notify_job(conn, id).await?;
    Ok(id)
}

/// Inserts the next build of a workspace with its job.
async fn insert_build(
    conn: &mut PgConnection,
    workspace: &WorkspaceRow,
    transition: WorkspaceTransition,
    initiator_id: Option<Uuid>,
    parameters: serde_json::Value,
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
    let job_id = insert_job(conn, workspace.organization_id, job).await?;
    let row: BuildRow = sqlx::query_as(concat!(
        "INSERT INTO workspace_builds (id, workspace_id, build_number, transition, job_id, template_version_id,
                                       initiator_id, parameters)
         VALUES ($1, $2, COALESCE((SELECT max(build_number) FROM workspace_builds WHERE workspace_id = $2), 0) + 1,
                 $3, $4, $5, $6, $7)
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
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.into())
}

macro_rules! workspace_listing_columns {
    () => {
        "w.id, w.owner_id, w.organization_id, w.template_id, w.name, w.deleted, w.ttl_ms, w.created_at,
         GREATEST(w.updated_at, (SELECT max(b.created_at) FROM workspace_builds b WHERE b.workspace_id = w.id))
             AS updated_at,
         u.username AS owner_name, t.name AS template_name
           FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id"
    };
}

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn create_workspace(
        &self,
        organization_id: Uuid,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
        parameters: serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<(Workspace, Build), StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: WorkspaceRow = sqlx::query_as(concat!(
            "INSERT INTO workspaces (owner_id, organization_id, template_id, name, ttl_ms, control_plane_secret)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING ",
            workspace_columns!()
        ))
        .bind(owner_id)
        .bind(organization_id)
        .bind(template_id)
        .bind(name)
        .bind(ttl_ms)
        .bind(new_control_plane_secret())
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| workspace_insert_error(err, name))?;
        let build = insert_build(
            conn,
            &row,
            WorkspaceTransition::Start,
            Some(owner_id),
            parameters,
        )
        .await?;
        tx.commit().await?;
        Ok((row.into(), build))
    }

    async fn new_build(
        &self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Option<Uuid>,
        parameters: serde_json::Value,
    ) -> Result<Build, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<WorkspaceRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_columns!(),
            " FROM workspaces WHERE id = $1 AND NOT deleted FOR UPDATE"
        ))
        .bind(workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| workspace_not_found(workspace_id))?;
        let busy: Option<JobStatus> = sqlx::query_scalar(
            "SELECT j.job_status FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
              WHERE b.workspace_id = $1 ORDER BY b.build_number DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
        ensure_latest_build_finished(busy)?;
        let build = insert_build(conn, &row, transition, initiator_id, parameters).await?;
        if transition == WorkspaceTransition::Delete {
            sqlx::query("UPDATE workspaces SET updated_at = now() WHERE id = $1")
                .bind(workspace_id)
                .execute(&mut *conn)
                .await?;
        }
        tx.commit().await?;
        Ok(build)
    }

    async fn latest_build(&self, workspace_id: Uuid) -> Result<Option<Build>, StoreError> {
        let row: Option<BuildRow> = sqlx::query_as(concat!(
            "SELECT ",
            build_columns!(),
            " FROM workspace_builds WHERE workspace_id = $1 ORDER BY build_number DESC LIMIT 1"
        ))
        .bind(workspace_id)
        .fetch_optional(self.pool())
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
        .fetch_optional(self.pool())
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
        .fetch_optional(self.pool())
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
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    async fn acquire_job(&self, worker_id: Uuid) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs SET started_at = now(), updated_at = now(), worker_id = $1
              WHERE id = (SELECT id FROM provisioner_jobs
                           WHERE started_at IS NULL AND canceled_at IS NULL
                           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING ",
            job_columns!()
        ))
        .bind(worker_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = &row {
            notify_job(conn, row.id).await?;
        }
        tx.commit().await?;
        Ok(row.map(Job::from))
    }

    async fn job(&self, id: Uuid) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM provisioner_jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(Job::from).ok_or_else(|| job_not_found(id))
    }

    async fn append_job_logs(
        &self,
        job_id: Uuid,
        lines: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        let levels: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        let stages: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
        let outputs: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
        sqlx::query(
            "INSERT INTO provisioner_job_logs (job_id, level, stage, output)
             SELECT $1, l, s, o FROM unnest($2::text[], $3::text[], $4::text[]) AS t(l, s, o)",
        )
        .bind(job_id)
        .bind(&levels)
        .bind(&stages)
        .bind(&outputs)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn complete_job(
        &self,
        job_id: Uuid,
        error: &str,
        error_code: &str,
    ) -> Result<Job, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET completed_at = now(), updated_at = now(), error = $2, error_code = $3,
                    started_at = COALESCE(started_at, now())
              WHERE id = $1 AND completed_at IS NULL
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .bind(error)
        .bind(error_code)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| job_not_running(job_id))?;
        // A successful delete build deletes the workspace.
        if row.status == JobStatus::Succeeded {
            sqlx::query(
                "UPDATE workspaces w SET deleted = true, updated_at = now()
                   FROM workspace_builds b
                  WHERE b.job_id = $1 AND b.transition = 'delete' AND w.id = b.workspace_id",
            )
            .bind(job_id)
            .execute(&mut *conn)
            .await?;
        }
        notify_job(conn, job_id).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn cancel_job(&self, job_id: Uuid) -> Result<Job, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        // A job nobody took yet is finished at once; a running one is asked to stop.
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE provisioner_jobs
                SET canceled_at = COALESCE(canceled_at, now()), updated_at = now(),
                    completed_at = CASE WHEN started_at IS NULL THEN now() ELSE completed_at END
              WHERE id = $1
              RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or_else(|| job_not_found(job_id))?;
        notify_job(conn, job_id).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn list_workspaces(
        &self,
        query: &WorkspaceListQuery,
    ) -> Result<Vec<WorkspaceListing>, StoreError> {
        let rows: Vec<WorkspaceListingRow> = sqlx::query_as(concat!(
            "SELECT ",
            workspace_listing_columns!(),
            " WHERE NOT w.deleted AND w.organization_id = ANY($1)
                AND ($2::uuid IS NULL OR w.owner_id = $2)
                AND ($3::uuid IS NULL OR w.template_id = $3)
                AND w.name ILIKE $4
                AND ($5::timestamptz IS NULL OR (w.created_at, w.id) < ($5, $6))
              ORDER BY w.created_at DESC, w.id DESC LIMIT $7"
        ))
        .bind(&query.organization_ids)
        .bind(query.owner_id)
        .bind(query.template_id)
        .bind(like_pattern(query.name_query.trim()))
        .bind(query.after.map(|(at, _)| at))
        .bind(query.after.map(|(_, id)| id))
        .bind(query.limit)
        .fetch_all(self.pool())
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
        .fetch_optional(self.pool())
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
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(JobLog::from).collect())
    }
}
