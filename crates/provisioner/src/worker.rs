//! The provisioner: workers that take jobs from the store (`FOR UPDATE SKIP LOCKED`), run them
//! on a backend, and complete or fail them. Idle workers wake on job notifications, with a
//! slow safety-net poll; a running build watches its job for cancellation the same way.

use std::sync::Arc;
use std::time::Duration;

use chatstore::StoreError;
use chatstore::prelude::*;
use chatstore::pubsub::{Pubsub, Topic};
use chatstore::workspaces::{Job, WorkspaceTransition};
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::backend::{Backend, BuildError, BuildLogs, BuildRequest, Reconciled, codes};
use crate::template::{self, Manifest};

/// The provisioner's settings.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// Jobs run at once (2).
    pub workers: usize,
    /// This provisioner's id in `provisioner_jobs.worker_id`; keep it across restarts (the
    /// local backend stores it in the data dir) so jobs abandoned by a crash are recognised.
    pub worker_id: Uuid,
    /// Safety-net poll for new jobs and for cancellation when notifications are lost (5 s).
    pub poll_interval: Duration,
}

impl ProvisionerConfig {
    /// Defaults for a worker id.
    pub fn new(worker_id: Uuid) -> Self {
        Self {
            workers: 2,
            worker_id,
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// What went wrong outside of a job (jobs themselves fail into the store).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reconciliation failed.
    #[error("reconciling agents failed: {0}")]
    Reconcile(BuildError),
}

/// What [`Provisioner::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs this provisioner had taken before it restarted, failed with
    /// `PROVISIONER_RESTARTED`.
    pub failed_jobs: usize,
    /// The backend's reconciliation.
    pub agents: Reconciled,
}

/// The provisioner.
#[derive(Clone)]
pub struct Provisioner {
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    backend: Arc<dyn Backend>,
    config: ProvisionerConfig,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a job ended.
enum Outcome {
    Done,
    Failed(BuildError),
    Canceled,
}

impl Provisioner {
    /// A provisioner over a store, its notifications and a backend.
    pub fn new(
        store: Arc<dyn Database>,
        pubsub: Arc<dyn Pubsub>,
        backend: Arc<dyn Backend>,
        config: ProvisionerConfig,
    ) -> Self {
        Self {
            store,
            pubsub,
            backend,
            config,
        }
    }

    /// At start: fails the jobs this provisioner abandoned when it stopped, then reconciles the
    /// backend's agents with the latest builds.
    pub async fn recover(&self) -> Result<Recovered, ProvisionerError> {
        let mut recovered = Recovered::default();
        for job in self.store.jobs_in_progress(self.config.worker_id).await? {
            tracing::warn!(job = %job.id, kind = %job.kind, "failing a job abandoned by a restart");
            self.store
                .complete_job(
                    job.id,
                    "the provisioner restarted while this job was running; start the build again",
                    codes::PROVISIONER_RESTARTED,
                )
                .await?;
            recovered.failed_jobs += 1;
        }
        recovered.agents = self
            .backend
            .reconcile()
            .await
            .map_err(ProvisionerError::Reconcile)?;
        Ok(recovered)
    }

    /// Runs the workers until `stop` turns true; each finishes its current job first.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let workers: Vec<_> = (0..self.config.workers.max(1))
            .map(|_| tokio::spawn(self.clone().worker(stop.clone())))
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    async fn worker(self, mut stop: watch::Receiver<bool>) {
        // Subscribe before the first look at the queue, so no job slips between the two.
        let mut jobs = self.pubsub.subscribe(Topic::Jobs);
        loop {
            if *stop.borrow() {
                return;
            }
            match self.store.acquire_job(self.config.worker_id).await {
                Ok(Some(job)) => {
                    self.run_job(job).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot take a job"),
            }
            tokio::select! {
                _ = jobs.recv() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Runs one job that this provisioner has taken, and completes it.
    pub async fn run_job(&self, job: Job) {
        let span = tracing::info_span!("job", id = %job.id, kind = %job.kind);
        self.run_job_in_span(job).instrument(span).await;
    }

    async fn run_job_in_span(&self, job: Job) {
        let logs = BuildLogs::new(self.store.clone(), job.id);
        let outcome = tokio::select! {
            outcome = self.execute(&job, &logs) => outcome,
            () = self.canceled(job.id) => Outcome::Canceled,
        };
        let (error, code) = match &outcome {
            Outcome::Done => {
                logs.line("info", "done", "the job succeeded").await;
                (String::new(), String::new())
            }
            Outcome::Failed(e) => {
                logs.line("error", "done", e.message.clone()).await;
                (e.message.clone(), e.code.clone())
            }
            Outcome::Canceled => {
                self.undo_canceled_start(&job, &logs).await;
                logs.line("warn", "done", "the job was canceled").await;
                (String::new(), String::new())
            }
        };
        logs.flush().await;
        match self.store.complete_job(job.id, &error, &code).await {
            Ok(done) => tracing::info!(status = ?done.status, "job finished"),
            Err(e) => tracing::error!(error = %e, "cannot complete the job"),
        }
    }

    /// Resolves once the job is asked to cancel.
    async fn canceled(&self, job_id: Uuid) {
        let mut updates = self.pubsub.subscribe(Topic::Job(job_id));
        loop {
            if let Ok(job) = self.store.job(job_id).await
                && job.canceled_at.is_some()
            {
                return;
            }
            tokio::select! {
                _ = updates.recv() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    async fn execute(&self, job: &Job, logs: &BuildLogs) -> Outcome {
        let result = match job.kind.as_str() {
            "workspace_build" => self.build(job, logs).await,
            "template_version_import" => self.import(job, logs).await,
            other => Err(BuildError::new(
                codes::BACKEND_FAILED,
                format!("unknown job type {other:?}"),
            )),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn import(&self, job: &Job, logs: &BuildLogs) -> Result<(), BuildError> {
        let version_id = input_id(job, "template_version_id")?;
        let version = self
            .store
            .template_version(version_id)
            .await
            .map_err(store_error)?;
        let manifest = Manifest::from_stored(&version.manifest)
            .map_err(|e| BuildError::new(codes::INVALID_TEMPLATE, e))?;
        let problems = manifest.problems();
        if !problems.is_empty() {
            return Err(BuildError::new(
                codes::INVALID_TEMPLATE,
                problems.join("; "),
            ));
        }
        let files = template::files_from_stored(&version.files)
            .map_err(|e| BuildError::new(codes::INVALID_TEMPLATE, e))?;
        logs.line(
            "info",
            "import",
            format!(
                "template version {version_id}: {} parameters, {} presets, {} files",
                manifest.parameters.len(),
                manifest.presets.len(),
                files.len()
            ),
        )
        .await;
        Ok(())
    }

    async fn build(&self, job: &Job, logs: &BuildLogs) -> Result<(), BuildError> {
        let request = self.request(job).await?;
        logs.line(
            "info",
            "prepare",
            format!(
                "{:?} build #{} of workspace {} ({})",
                request.build.transition,
                request.build.build_number,
                request.workspace.name,
                request.workspace.id
            ),
        )
        .await;
        match request.build.transition {
            WorkspaceTransition::Start => self.backend.start(&request, logs).await,
            WorkspaceTransition::Stop => self.backend.stop(&request, logs).await,
            WorkspaceTransition::Delete => self.backend.delete(&request, logs).await,
        }
    }

    /// A start build canceled midway may already have started its agent: stop it.
    async fn undo_canceled_start(&self, job: &Job, logs: &BuildLogs) {
        if job.kind != "workspace_build" {
            return;
        }
        match self.request(job).await {
            Ok(request) if request.build.transition == WorkspaceTransition::Start => {
                logs.line(
                    "warn",
                    "cancel",
                    "undoing the canceled start: stopping its agent",
                )
                .await;
                if let Err(e) = self.backend.stop(&request, logs).await {
                    logs.line("warn", "cancel", format!("cleaning up: {e}"))
                        .await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                logs.line("warn", "cancel", format!("cleaning up: {e}"))
                    .await
            }
        }
    }

    /// Everything the backend needs for a build job.
    async fn request(&self, job: &Job) -> Result<BuildRequest, BuildError> {
        let build_id = input_id(job, "build_id")?;
        let build = self.store.build(build_id).await.map_err(store_error)?;
        let workspace = self
            .store
            .workspace(build.workspace_id)
            .await
            .map_err(store_error)?;
        let version = self
            .store
            .template_version(build.template_version_id)
            .await
            .map_err(store_error)?;
        let manifest = Manifest::from_stored(&version.manifest)
            .map_err(|e| BuildError::new(codes::INVALID_TEMPLATE, e))?;
        let files = template::files_from_stored(&version.files)
            .map_err(|e| BuildError::new(codes::INVALID_TEMPLATE, e))?;
        let parameters = if build.transition == WorkspaceTransition::Start {
            let given = template::parameters_from_json(&build.parameters)
                .map_err(|e| BuildError::new(codes::INVALID_PARAMETERS, e))?;
            template::resolve_parameters(&manifest, &given).map_err(|problems| {
                BuildError::new(codes::INVALID_PARAMETERS, problems.join("; "))
            })?
        } else {
            Default::default()
        };
        Ok(BuildRequest {
            job: job.clone(),
            build,
            workspace,
            manifest,
            files,
            parameters,
        })
    }
}

fn input_id(job: &Job, key: &str) -> Result<Uuid, BuildError> {
    job.input
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            BuildError::new(
                codes::BACKEND_FAILED,
                format!("the job's input has no valid {key}"),
            )
        })
}

fn store_error(e: StoreError) -> BuildError {
    BuildError::new(codes::BACKEND_FAILED, format!("store: {e}"))
}
