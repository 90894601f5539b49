//! The derived provisioner job status (spec/engine.md §8.6 "job_status rule"), row by row.

use super::support::*;

macro_rules! job_status_rows {
    ($($name:ident: started $started:literal, canceled $canceled:literal, completed $completed:literal, error $error:literal => $status:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let s = Seeded::new().await;
            let status: String = sqlx::query_scalar(
                "INSERT INTO provisioner_jobs (organization_id, type, started_at, canceled_at, completed_at, error)
                 VALUES ($1, 'workspace_build',
                         CASE WHEN $2 THEN now() END, CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END, $5)
                 RETURNING job_status::text",
            )
            .bind(s.org)
            .bind($started)
            .bind($canceled)
            .bind($completed)
            .bind($error)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(status, $status);
            s.finish().await;
        }
    )*};
}

job_status_rows! {
    completed_with_error_is_failed: started true, canceled false, completed true, error "boom" => "failed";
    completed_after_cancel_is_canceled: started true, canceled true, completed true, error "" => "canceled";
    completed_is_succeeded: started true, canceled false, completed true, error "" => "succeeded";
    error_before_completion_is_failed: started true, canceled false, completed false, error "boom" => "failed";
    cancel_requested_is_canceling: started true, canceled true, completed false, error "" => "canceling";
    not_started_is_pending: started false, canceled false, completed false, error "" => "pending";
    started_is_running: started true, canceled false, completed false, error "" => "running";
}

#[tokio::test]
async fn job_status_follows_updates() {
    let s = Seeded::new().await;
    let pool = s.pool();
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO provisioner_jobs (organization_id, type) VALUES ($1, 'workspace_build') RETURNING id",
    )
    .bind(s.org)
    .fetch_one(pool)
    .await
    .unwrap();
    let status = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT job_status::text FROM provisioner_jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(status().await, "pending");
    sqlx::query("UPDATE provisioner_jobs SET started_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(status().await, "running");
    sqlx::query("UPDATE provisioner_jobs SET completed_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(status().await, "succeeded");
    s.finish().await;
}
