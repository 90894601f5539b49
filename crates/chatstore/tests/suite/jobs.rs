//! The derived provisioner job status (spec/engine.md §8.6 "job_status rule"), row by row, on
//! PostgreSQL and (`…_on_sqlite`) on a fresh embedded database.

use chatstore::prelude::*;
use chatstore::workspaces::JobStatus;
use uuid::Uuid;

use super::support::*;
use super::workspace::version;

macro_rules! job_status_rows {
    ($($name:ident, $on_sqlite:ident: started $started:literal, canceled $canceled:literal, completed $completed:literal, error $error:literal => $status:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let s = Seeded::new().await;
            job_status_row_on(&s.store(), s.org, [$started, $canceled, $completed], $error, $status).await;
            s.finish().await;
        }

        #[tokio::test]
        async fn $on_sqlite() {
            let s = SqliteSeeded::new().await;
            job_status_row_on(&s.store, s.org, [$started, $canceled, $completed], $error, $status).await;
        }
    )*};
}

/// A job written with the given times set (`[started, canceled, completed]`) and error reads
/// back with `status`.
async fn job_status_row_on(
    store: &(impl WorkspaceStore + Raw + ?Sized),
    org: Uuid,
    [started, canceled, completed]: [bool; 3],
    error: &str,
    status: &str,
) {
    let id = store
        .raw_job(org, started, canceled, completed, error)
        .await;
    assert_eq!(store.job(id).await.unwrap().status.as_str(), status);
}

job_status_rows! {
    completed_with_error_is_failed, completed_with_error_is_failed_on_sqlite: started true, canceled false, completed true, error "boom" => "failed";
    completed_after_cancel_is_canceled, completed_after_cancel_is_canceled_on_sqlite: started true, canceled true, completed true, error "" => "canceled";
    completed_is_succeeded, completed_is_succeeded_on_sqlite: started true, canceled false, completed true, error "" => "succeeded";
    error_before_completion_is_failed, error_before_completion_is_failed_on_sqlite: started true, canceled false, completed false, error "boom" => "failed";
    cancel_requested_is_canceling, cancel_requested_is_canceling_on_sqlite: started true, canceled true, completed false, error "" => "canceling";
    not_started_is_pending, not_started_is_pending_on_sqlite: started false, canceled false, completed false, error "" => "pending";
    started_is_running, started_is_running_on_sqlite: started true, canceled false, completed false, error "" => "running";
}

both_backends!(job_status_follows_updates, job_status_follows_updates_on_sqlite => job_status_follows_updates_on(org, user));

async fn job_status_follows_updates_on(
    store: &(impl TemplateStore + WorkspaceStore + ?Sized),
    org: Uuid,
    user: Uuid,
) {
    let id = store
        .push_template_version(version(org, user, "shell", false))
        .await
        .unwrap()
        .job_id;
    let status = || async { store.job(id).await.unwrap().status };
    assert_eq!(status().await, JobStatus::Pending);
    let taken = store.acquire_job(Uuid::new_v4()).await.unwrap().unwrap();
    assert_eq!((taken.id, taken.status), (id, JobStatus::Running));
    assert_eq!(status().await, JobStatus::Running);
    store.complete_job(id, "", "").await.unwrap();
    assert_eq!(status().await, JobStatus::Succeeded);
}
