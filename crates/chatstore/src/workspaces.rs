//! Workspaces, their builds and the provisioner jobs that run builds and template imports
//! (spec/engine.md §8.6).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StoreError;
use crate::names::stored_names;
use crate::sql::is_unique_violation;

/// Derived provisioner job status (spec/engine.md §8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Finished without error.
    Succeeded,
    /// Cancellation requested, not finished.
    Canceling,
    /// Cancelled and finished.
    Canceled,
    /// Failed.
    Failed,
    /// Unknown.
    Unknown,
}

stored_names!(JobStatus {
    Pending => "pending",
    Running => "running",
    Succeeded => "succeeded",
    Canceling => "canceling",
    Canceled => "canceled",
    Failed => "failed",
    Unknown => "unknown",
});

impl JobStatus {
    /// `succeeded`, `canceled` or `failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled | Self::Failed)
    }
}

/// A workspace transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceTransition {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Delete.
    Delete,
}

stored_names!(WorkspaceTransition { Start => "start", Stop => "stop", Delete => "delete" });

/// A provisioner job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// `template_version_import` or `workspace_build`.
    pub kind: String,
    /// What the backend needs (e.g. the build id).
    pub input: serde_json::Value,
    /// The provisioner worker that took it.
    pub worker_id: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Taken by a worker.
    pub started_at: Option<DateTime<Utc>>,
    /// Cancellation requested.
    pub canceled_at: Option<DateTime<Utc>>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Failure text; empty when none.
    pub error: String,
    /// Machine-readable failure code (e.g. `INSUFFICIENT_QUOTA`); empty when none.
    pub error_code: String,
    /// Derived status.
    pub status: JobStatus,
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Name (unique per owner among undeleted workspaces).
    pub name: String,
    /// Deleted.
    pub deleted: bool,
    /// Time to live, milliseconds.
    pub ttl_ms: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A build of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Id.
    pub id: Uuid,
    /// Workspace.
    pub workspace_id: Uuid,
    /// 1, 2, ... (latest = highest).
    pub build_number: i32,
    /// What it does.
    pub transition: WorkspaceTransition,
    /// The job that runs it.
    pub job_id: Uuid,
    /// The template version built.
    pub template_version_id: Uuid,
    /// Who asked.
    pub initiator_id: Option<Uuid>,
    /// Parameter values `[{name, value}]`.
    pub parameters: serde_json::Value,
    /// Why it was requested: `initiator`, `chat` or `autostop`.
    pub reason: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A workspace as listings show it: with its owner's and template's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceListing {
    /// The workspace.
    pub workspace: Workspace,
    /// The owner's username.
    pub owner_name: String,
    /// The template's name.
    pub template_name: String,
    /// When the workspace or its builds last changed.
    pub updated_at: DateTime<Utc>,
}

/// Which workspaces [`WorkspaceStore::list_workspaces`] returns, newest first. Deleted
/// workspaces are never listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkspaceListQuery {
    /// Only workspaces of these organizations (an empty list matches nothing).
    pub organization_ids: Vec<Uuid>,
    /// Only this owner's workspaces.
    pub owner_id: Option<Uuid>,
    /// Only workspaces built from this template.
    pub template_id: Option<Uuid>,
    /// Case-insensitive substring of the name; empty = all.
    pub name_query: String,
    /// Only workspaces after this position (the previous page's last).
    pub after: Option<crate::types::NewestFirstCursor>,
    /// Most workspaces to return.
    pub limit: i64,
}

/// One line of a provisioner job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLog {
    /// Id, increasing within the job.
    pub id: i64,
    /// When the line was written.
    pub created_at: DateTime<Utc>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The build step.
    pub stage: String,
    /// The text.
    pub output: String,
}

/// Whether `name` is a valid template or workspace name: 1–32 ASCII letters and digits in runs
/// separated by single hyphens (no leading, trailing or doubled hyphen).
///
/// ```
/// use chatstore::workspaces::valid_name;
/// assert!(valid_name("fun-dashboard-1a2b"));
/// assert!(!valid_name("-x") && !valid_name("a--b") && !valid_name("") && !valid_name(&"a".repeat(33)));
/// ```
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .split('-')
            .all(|run| !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A provisioner job to create: its type and its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewJob {
    /// Imports a pushed template version.
    Import {
        /// The version.
        version_id: Uuid,
    },
    /// Runs a workspace build.
    Build {
        /// The build.
        build_id: Uuid,
        /// Its workspace.
        workspace_id: Uuid,
        /// What it does.
        transition: WorkspaceTransition,
    },
}

impl NewJob {
    /// The stored job type.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Import { .. } => "template_version_import",
            Self::Build { .. } => "workspace_build",
        }
    }

    /// The job's input: what the provisioner backend needs.
    pub(crate) fn input(self) -> serde_json::Value {
        match self {
            Self::Import { version_id } => serde_json::json!({"template_version_id": version_id}),
            Self::Build {
                build_id,
                workspace_id,
                transition,
            } => serde_json::json!({
                "build_id": build_id,
                "workspace_id": workspace_id,
                "transition": transition,
            }),
        }
    }
}

/// A new workspace's control-plane secret (what chatd presents to its agent), from the OS's
/// random source.
pub(crate) fn new_control_plane_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The template version a new build uses: the active one for a workspace's first build (no
/// `latest`) and for a start of a template that requires the active version; otherwise the
/// latest build's version (a stop or a restart builds what the workspace runs).
pub(crate) fn build_version(
    latest: Option<Uuid>,
    active: Option<Uuid>,
    require_active: bool,
    transition: WorkspaceTransition,
) -> Result<Uuid, StoreError> {
    let wants_active = transition == WorkspaceTransition::Start && require_active;
    match (latest, active) {
        (Some(latest), _) if !wants_active => Ok(latest),
        (_, Some(active)) => Ok(active),
        (Some(latest), None) => Ok(latest),
        (None, None) => Err(StoreError::InvalidInput(
            "the template has no active version".into(),
        )),
    }
}

/// Refuses a new build while the status of the latest build's job is not final.
pub(crate) fn ensure_latest_build_finished(status: Option<JobStatus>) -> Result<(), StoreError> {
    match status {
        Some(status) if !status.is_terminal() => Err(StoreError::InvalidInput(format!(
            "the workspace's latest build is still {status:?}; wait for it to finish"
        ))),
        _ => Ok(()),
    }
}

/// A failed workspace insert: a taken name is a [`StoreError::Conflict`].
pub(crate) fn workspace_insert_error(err: sqlx::Error, name: &str) -> StoreError {
    if is_unique_violation(&err) {
        StoreError::Conflict(format!("a workspace named {name:?} already exists"))
    } else {
        StoreError::Query(err)
    }
}

/// A workspace that a read or a build names does not exist (or, for a build, is deleted).
pub(crate) fn workspace_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("workspace {id} not found"))
}

/// A build that a read names does not exist.
pub(crate) fn build_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("workspace build {id} not found"))
}

/// A job that a read or a cancellation names does not exist.
pub(crate) fn job_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("provisioner job {id} not found"))
}

/// The job to complete does not exist or is already finished.
pub(crate) fn job_not_running(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("provisioner job {id} is not running"))
}

#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace, its first (start) build and the build's job in one transaction.
    async fn create_workspace(
        &self,
        organization_id: Uuid,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
        parameters: serde_json::Value,
        ttl_ms: Option<i64>,
    ) -> Result<(Workspace, Build), StoreError>;
    /// Starts a new build (start/stop/delete) of a workspace with its job; refused while the
    /// latest build's job is not finished. The build uses the latest build's template version,
    /// except a start of a template that requires the active version, which moves to it.
    async fn new_build(
        &self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Option<Uuid>,
        parameters: serde_json::Value,
    ) -> Result<Build, StoreError>;
    /// The workspace's latest build.
    async fn latest_build(&self, workspace_id: Uuid) -> Result<Option<Build>, StoreError>;
    /// Reads a build.
    async fn build(&self, build_id: Uuid) -> Result<Build, StoreError>;
    /// Reads a workspace (deleted ones too).
    async fn workspace(&self, workspace_id: Uuid) -> Result<Workspace, StoreError>;
    /// Jobs a worker took and has not finished (after a crash: the ones it abandoned).
    async fn jobs_in_progress(&self, worker_id: Uuid) -> Result<Vec<Job>, StoreError>;
    /// Takes the oldest pending job (`FOR UPDATE SKIP LOCKED`), marking it started.
    async fn acquire_job(&self, worker_id: Uuid) -> Result<Option<Job>, StoreError>;
    /// Reads a job.
    async fn job(&self, id: Uuid) -> Result<Job, StoreError>;
    /// Appends build log lines `(level, stage, output)`.
    async fn append_job_logs(
        &self,
        job_id: Uuid,
        lines: &[(String, String, String)],
    ) -> Result<(), StoreError>;
    /// Finishes a job: `error` empty = success; `error_code` e.g. `INSUFFICIENT_QUOTA`. A
    /// successful delete build marks its workspace deleted.
    async fn complete_job(
        &self,
        job_id: Uuid,
        error: &str,
        error_code: &str,
    ) -> Result<Job, StoreError>;
    /// Requests cancellation of a job.
    async fn cancel_job(&self, job_id: Uuid) -> Result<Job, StoreError>;
    /// Workspaces with their owner's and template's names, newest first.
    async fn list_workspaces(
        &self,
        query: &WorkspaceListQuery,
    ) -> Result<Vec<WorkspaceListing>, StoreError>;
    /// One workspace (deleted ones too) with its owner's and template's names; `None` when it
    /// does not exist.
    async fn workspace_listing(&self, id: Uuid) -> Result<Option<WorkspaceListing>, StoreError>;
    /// A job's log lines with an id above `after_id`, in id order, at most `limit`.
    async fn job_logs(
        &self,
        job_id: Uuid,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<JobLog>, StoreError>;
}
