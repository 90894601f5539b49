//! `chatd.v1.WorkspaceService`: listing, reading, creating, starting, stopping and deleting
//! workspaces, and streaming build logs. Reads are scoped to the caller: their own workspaces
//! (admins: every workspace of their organizations); anything else is NOT_FOUND, like a missing
//! workspace. Builds go through [`StoreBuilds`], the same front the chat tools use, so the
//! parameter rules live in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::workspace_service_server::{WorkspaceService, WorkspaceServiceServer};
use chatstore::StoreError;
use chatstore::identity::Caller;
use chatstore::prelude::*;
use chatstore::pubsub::{Pubsub, Subscription, Topic};
use chatstore::workspaces::{Build, JobStatus, WorkspaceListQuery, WorkspaceListing, valid_name};
use chattool::builds::{BuildRequestError, CreateRequest, WorkspaceBuilds as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::auth::{
    Revocation, StreamSlots, UntilRevoked, caller, not_found, parse_id, parse_optional_id,
    store_status, with_reason,
};
use crate::closing::{Closing, spawn_client_stream};
use crate::convert;
use crate::paging::{finish_page, page_size, parse_time_token, time_token};
use chatengine::builds::StoreBuilds;

/// Log lines per streamed batch.
const LOG_BATCH: i64 = 500;
/// Batches queued for a client before the stream waits (and, after the timeout, cuts it off).
const CLIENT_BUFFER: usize = 16;

/// Timing of the workspace service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkspacesConfig {
    /// `workspace.agent_inactive_disconnect_timeout` (30 s): when a silent agent counts as
    /// disconnected in the agents' connection status.
    pub agent_inactive_timeout: Duration,
    /// How often a followed build-log stream re-reads the logs: appending logs does not notify,
    /// only job changes do (1 s).
    pub log_poll_interval: Duration,
    /// A log stream client that takes no batch for this long is cut off (10 s).
    pub subscriber_timeout: Duration,
}

impl Default for WorkspacesConfig {
    fn default() -> Self {
        Self {
            agent_inactive_timeout: Duration::from_secs(30),
            log_poll_interval: Duration::from_secs(1),
            subscriber_timeout: Duration::from_secs(10),
        }
    }
}

/// The workspace service.
#[derive(Debug, Clone)]
pub(crate) struct Workspaces {
    store: Arc<dyn Database>,
    pubsub: Arc<dyn Pubsub>,
    provisioner: StoreBuilds,
    config: WorkspacesConfig,
    closing: Closing,
    slots: StreamSlots,
}

/// The responses of one `StreamBuildLogs` call.
pub(crate) type BuildLogStream = ReceiverStream<Result<pb::StreamBuildLogsResponse, Status>>;

fn workspace_not_found(id: Uuid) -> Status {
    not_found("workspace", id, "WORKSPACE_NOT_FOUND")
}

fn organization_not_found(id: Uuid) -> Status {
    not_found("organization", id, "ORGANIZATION_NOT_FOUND")
}

fn precondition(message: impl Into<String>, reason: &str) -> Status {
    with_reason(Code::FailedPrecondition, message, reason)
}

/// A refusal of the provisioner front as a status: its HTTP-like code, its message and every
/// field problem.
fn provision_status(err: BuildRequestError) -> Status {
    match err {
        BuildRequestError::Response(r) => {
            let mut message = r.message.clone();
            for v in &r.validations {
                message.push_str(&format!("; {}: {}", v.field, v.detail));
            }
            let (code, reason) = match r.status {
                404 => (Code::NotFound, "NOT_FOUND"),
                409 => (Code::AlreadyExists, "CONFLICT"),
                429 => (Code::ResourceExhausted, "QUOTA"),
                400 | 422 => (Code::InvalidArgument, "INVALID_INPUT"),
                _ => (Code::FailedPrecondition, "REFUSED"),
            };
            with_reason(code, message, reason)
        }
        BuildRequestError::Other(message) => {
            tracing::error!(error = %message, "a workspace build request failed");
            Status::internal(message)
        }
    }
}

/// Parameter values by name; a name given twice is refused.
fn parameter_values(values: &[pb::ParameterValue]) -> Result<BTreeMap<String, String>, Status> {
    let mut map = BTreeMap::new();
    for v in values {
        if v.name.is_empty() {
            return Err(Status::invalid_argument("a parameter value has no name"));
        }
        if map.insert(v.name.clone(), v.value.clone()).is_some() {
            return Err(Status::invalid_argument(format!(
                "parameter {:?} is given twice",
                v.name
            )));
        }
    }
    Ok(map)
}

impl Workspaces {
    /// The service over the store, its job notifications (for following build logs) and the
    /// provisioner front that records builds. Followed build logs end when `closing` fires.
    pub(crate) fn new(
        store: Arc<dyn Database>,
        pubsub: Arc<dyn Pubsub>,
        config: WorkspacesConfig,
        closing: Closing,
        slots: StreamSlots,
    ) -> Self {
        Self {
            provisioner: StoreBuilds::new(store.clone()),
            store,
            pubsub,
            config,
            closing,
            slots,
        }
    }

    /// The tonic server.
    pub(crate) fn into_server(self) -> WorkspaceServiceServer<Self> {
        WorkspaceServiceServer::new(self)
    }

    /// A workspace the caller may see (their own, or any in their organizations for an admin);
    /// deleted ones only with `deleted_ok`. Anything else is NOT_FOUND.
    async fn visible(
        &self,
        caller: &Caller,
        id: Uuid,
        deleted_ok: bool,
    ) -> Result<WorkspaceListing, Status> {
        let listing = self
            .store
            .workspace_listing(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| workspace_not_found(id))?;
        let w = &listing.workspace;
        let mine = w.owner_id == caller.user_id || caller.role == "admin";
        if mine && caller.organizations.contains(&w.organization_id) && (deleted_ok || !w.deleted) {
            Ok(listing)
        } else {
            Err(workspace_not_found(id))
        }
    }

    /// A build on the wire with its job and agents.
    async fn build_pb(&self, build: &Build) -> Result<pb::WorkspaceBuild, Status> {
        let job = self.store.job(build.job_id).await.map_err(store_status)?;
        let agents = self
            .store
            .build_agents(build.id)
            .await
            .map_err(store_status)?;
        let mut wire = Vec::with_capacity(agents.len());
        if !agents.is_empty() {
            let now = self.store.database_now().await.map_err(store_status)?;
            for agent in &agents {
                let external = self
                    .store
                    .agent_is_external(agent.id)
                    .await
                    .map_err(store_status)?;
                wire.push(convert::agent(
                    agent,
                    now,
                    self.config.agent_inactive_timeout,
                    external,
                ));
            }
        }
        Ok(convert::build(build, &job, wire))
    }

    /// A workspace on the wire with its latest build.
    async fn workspace_pb(&self, listing: &WorkspaceListing) -> Result<pb::Workspace, Status> {
        let latest = match self
            .store
            .latest_build(listing.workspace.id)
            .await
            .map_err(store_status)?
        {
            Some(build) => Some(self.build_pb(&build).await?),
            None => None,
        };
        Ok(convert::workspace(listing, latest))
    }

    /// A live workspace the caller may change, whose latest build is finished.
    async fn ready_for_build(
        &self,
        caller: &Caller,
        workspace_id: &str,
    ) -> Result<(WorkspaceListing, Option<Build>), Status> {
        let id = parse_id("workspace_id", workspace_id)?;
        let listing = self.visible(caller, id, false).await?;
        let latest = self.store.latest_build(id).await.map_err(store_status)?;
        if let Some(build) = &latest {
            let job = self.store.job(build.job_id).await.map_err(store_status)?;
            if !job.status.is_terminal() {
                return Err(precondition(
                    format!(
                        "the workspace's latest build (#{}) is still {:?}; wait for it to finish",
                        build.build_number, job.status
                    ),
                    "BUILD_IN_PROGRESS",
                ));
            }
        }
        Ok((listing, latest))
    }

    /// A stop (or, with `delete`, a delete) build of a workspace the caller may change, on
    /// behalf of its owner.
    async fn stop_or_delete(
        &self,
        caller: &Caller,
        workspace_id: &str,
        delete: bool,
    ) -> Result<Response<pb::WorkspaceBuild>, Status> {
        let (listing, _) = self.ready_for_build(caller, workspace_id).await?;
        let w = &listing.workspace;
        let build = if delete {
            self.provisioner.delete_workspace(w.owner_id, w.id).await
        } else {
            self.provisioner.stop_workspace(w.owner_id, w.id).await
        }
        .map_err(provision_status)?;
        Ok(Response::new(self.build_pb(&build).await?))
    }
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    async fn list_workspaces(
        &self,
        request: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = parse_time_token(&r.page_token)?;
        let organization_ids = match parse_optional_id("organization_id", Some(&r.organization_id))?
        {
            Some(id) if caller.organizations.contains(&id) => vec![id],
            Some(id) => return Err(organization_not_found(id)),
            None => caller.organizations.clone(),
        };
        let owner_id = match parse_optional_id("owner_id", Some(&r.owner_id))? {
            Some(id) if caller.role != "admin" && id != caller.user_id => {
                // A member naming another user gets an empty page.
                return Ok(Response::new(pb::ListWorkspacesResponse::default()));
            }
            Some(id) => Some(id),
            None if caller.role == "admin" => None,
            None => Some(caller.user_id),
        };
        let query = WorkspaceListQuery {
            organization_ids,
            owner_id,
            template_id: parse_optional_id("template_id", Some(&r.template_id))?,
            name_query: r.query,
            after,
            limit: limit + 1,
        };
        let rows = self
            .store
            .list_workspaces(&query)
            .await
            .map_err(store_status)?;
        let (rows, next_page_token) = finish_page(rows, limit, |l| {
            time_token(l.workspace.created_at, l.workspace.id)
        });
        let mut workspaces = Vec::with_capacity(rows.len());
        for listing in &rows {
            workspaces.push(self.workspace_pb(listing).await?);
        }
        Ok(Response::new(pb::ListWorkspacesResponse {
            workspaces,
            next_page_token,
        }))
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let id = parse_id("workspace_id", &request.get_ref().workspace_id)?;
        let listing = self.visible(&caller, id, true).await?;
        Ok(Response::new(self.workspace_pb(&listing).await?))
    }

    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let r = request.into_inner();
        let organization_id = parse_id("organization_id", &r.organization_id)?;
        if !caller.organizations.contains(&organization_id) {
            return Err(organization_not_found(organization_id));
        }
        let template_id = parse_id("template_id", &r.template_id)?;
        let parameters = parameter_values(&r.parameters)?;
        let preset_id = parse_optional_id("preset_id", r.preset_id.as_deref())?;
        let ttl = r
            .ttl
            .map(|ttl| {
                Duration::try_from(ttl)
                    .map_err(|_| Status::invalid_argument("ttl must not be negative"))
            })
            .transpose()?;
        if !r.name.is_empty() && !valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "name {:?} is invalid: use 1–32 ASCII letters and digits, in runs separated by \
                 single hyphens",
                r.name
            )));
        }
        let template_not_found = || {
            with_reason(
                Code::NotFound,
                format!("template {template_id} not found in organization {organization_id}"),
                "TEMPLATE_NOT_FOUND",
            )
        };
        let template = match self.store.template(template_id).await {
            Ok(t) if !t.deleted && t.organization_id == organization_id => t,
            Ok(_) | Err(StoreError::InvalidInput(_)) => return Err(template_not_found()),
            Err(other) => return Err(store_status(other)),
        };
        if !template.deprecated.is_empty() {
            return Err(precondition(
                format!(
                    "template {} is deprecated: {}",
                    template.name, template.deprecated
                ),
                "TEMPLATE_DEPRECATED",
            ));
        }
        let version_id = template.active_version_id.ok_or_else(|| {
            precondition(
                format!("template {} has no active version", template.name),
                "NO_ACTIVE_VERSION",
            )
        })?;
        let version = self
            .store
            .template_version(version_id)
            .await
            .map_err(store_status)?;
        let import = self.store.job(version.job_id).await.map_err(store_status)?;
        if import.status != JobStatus::Succeeded {
            return Err(precondition(
                format!(
                    "the active version of template {} is not imported (its import job is {:?})",
                    template.name, import.status
                ),
                "VERSION_NOT_IMPORTED",
            ));
        }
        if version.has_external_agent {
            return Err(precondition(
                format!(
                    "template {} has externally managed agents, which the API cannot create yet",
                    template.name
                ),
                "EXTERNAL_AGENT_UNSUPPORTED",
            ));
        }
        let name = if r.name.is_empty() {
            chattool::lifecycle::generate_name(&template.name)
        } else {
            r.name
        };
        let (workspace, _) = self
            .provisioner
            .create_workspace(CreateRequest {
                organization_id,
                owner_id: caller.user_id,
                template_id,
                name,
                parameters,
                preset_id,
                ttl,
            })
            .await
            .map_err(provision_status)?;
        let listing = self.visible(&caller, workspace.id, true).await?;
        Ok(Response::new(self.workspace_pb(&listing).await?))
    }

    async fn start_workspace(
        &self,
        request: Request<pb::StartWorkspaceRequest>,
    ) -> Result<Response<pb::WorkspaceBuild>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let r = request.into_inner();
        let parameters = parameter_values(&r.parameters)?;
        let requested_version =
            parse_optional_id("template_version_id", r.template_version_id.as_deref())?;
        let (listing, latest) = self.ready_for_build(&caller, &r.workspace_id).await?;
        let w = &listing.workspace;
        if let Some(requested) = requested_version {
            // The store builds the latest build's version (or the active one when the template
            // requires it); choosing another one is not supported yet.
            let template = self
                .store
                .template(w.template_id)
                .await
                .map_err(store_status)?;
            let built = match template.active_version_id {
                Some(active) if template.require_active_version => Some(active),
                _ => latest.as_ref().map(|b| b.template_version_id),
            };
            if built != Some(requested) {
                return Err(Status::unimplemented(
                    "starting a workspace with another template version is not supported yet; \
                     leave template_version_id unset",
                ));
            }
        }
        let build = self
            .provisioner
            .start_workspace(w.owner_id, w.id, parameters)
            .await
            .map_err(provision_status)?;
        Ok(Response::new(self.build_pb(&build).await?))
    }

    async fn stop_workspace(
        &self,
        request: Request<pb::StopWorkspaceRequest>,
    ) -> Result<Response<pb::WorkspaceBuild>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let id = request.into_inner().workspace_id;
        self.stop_or_delete(&caller, &id, false).await
    }

    async fn delete_workspace(
        &self,
        request: Request<pb::DeleteWorkspaceRequest>,
    ) -> Result<Response<pb::WorkspaceBuild>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let id = request.into_inner().workspace_id;
        self.stop_or_delete(&caller, &id, true).await
    }

    type StreamBuildLogsStream = UntilRevoked<BuildLogStream>;

    async fn stream_build_logs(
        &self,
        request: Request<pb::StreamBuildLogsRequest>,
    ) -> Result<Response<Self::StreamBuildLogsStream>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let slot = self.slots.take(caller.user_id)?;
        let revocation = Revocation::of(self.store.clone(), &request, slot, |_| true)?;
        let r = request.into_inner();
        let build_id = parse_id("build_id", &r.build_id)?;
        if r.after_id < 0 {
            return Err(Status::invalid_argument("after_id must not be negative"));
        }
        let build_not_found = || not_found("build", build_id, "BUILD_NOT_FOUND");
        let build = match self.store.build(build_id).await {
            Ok(build) => build,
            // A missing build is `InvalidInput` in the workspace store.
            Err(StoreError::InvalidInput(_)) => return Err(build_not_found()),
            Err(other) => return Err(store_status(other)),
        };
        self.visible(&caller, build.workspace_id, true)
            .await
            .map_err(|_| build_not_found())?;
        // Subscribe before the first read, so a completion between the two is not missed.
        let updates = self.pubsub.subscribe(Topic::Job(build.job_id));
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let follower = LogFollower {
            store: self.store.clone(),
            job_id: build.job_id,
            after_id: r.after_id,
            follow: r.follow,
            config: self.config,
            tx: tx.clone(),
        };
        spawn_client_stream("build_logs", &self.closing, tx, follower.run(updates));
        Ok(Response::new(revocation.guard(ReceiverStream::new(rx))))
    }
}

/// One `StreamBuildLogs` call: sends the job's logs in batches, and with `follow` keeps going
/// until the job is terminal.
struct LogFollower {
    store: Arc<dyn Database>,
    job_id: Uuid,
    after_id: i64,
    follow: bool,
    config: WorkspacesConfig,
    tx: mpsc::Sender<Result<pb::StreamBuildLogsResponse, Status>>,
}

impl LogFollower {
    async fn run(mut self, mut updates: Subscription) {
        if let Err(status) = self.serve(&mut updates).await {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    /// `Ok` when the stream ended (done, or the client went away).
    async fn serve(&mut self, updates: &mut Subscription) -> Result<(), Status> {
        let mut sent_any = false;
        loop {
            // The status first: when it is terminal, the logs read after it are complete (a job
            // writes its logs before it finishes).
            let status = self
                .store
                .job(self.job_id)
                .await
                .map_err(store_status)?
                .status;
            loop {
                let logs = self
                    .store
                    .job_logs(self.job_id, self.after_id, LOG_BATCH)
                    .await
                    .map_err(store_status)?;
                let Some(last) = logs.last() else { break };
                self.after_id = last.id;
                let full = i64::try_from(logs.len()).unwrap_or(i64::MAX) >= LOG_BATCH;
                if !self.send(&logs, status).await {
                    return Ok(());
                }
                sent_any = true;
                if !full {
                    break;
                }
            }
            if !self.follow {
                if !sent_any {
                    self.send(&[], status).await;
                }
                return Ok(());
            }
            if status.is_terminal() {
                self.send(&[], status).await;
                return Ok(());
            }
            // Appending logs does not notify, so poll; a job change wakes the loop at once.
            tokio::select! {
                update = updates.recv() => {
                    if update.is_none() {
                        tokio::time::sleep(self.config.log_poll_interval).await;
                    }
                }
                () = tokio::time::sleep(self.config.log_poll_interval) => {}
                () = self.tx.closed() => return Ok(()),
            }
        }
    }

    /// Sends one batch; false when the client is gone or too slow.
    async fn send(&self, logs: &[chatstore::workspaces::JobLog], status: JobStatus) -> bool {
        let response = pb::StreamBuildLogsResponse {
            logs: logs.iter().map(convert::build_log).collect(),
            job_status: convert::job_status(status).into(),
        };
        crate::stream::deliver(&self.tx, response, self.config.subscriber_timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chattool::builds::{FieldError, ResponseError};

    #[test]
    fn parameters_given_twice_are_refused() {
        let value = |name: &str, value: &str| pb::ParameterValue {
            name: name.into(),
            value: value.into(),
        };
        let map = parameter_values(&[value("a", "1"), value("b", "2")]).unwrap();
        assert_eq!(map.len(), 2);
        assert!(parameter_values(&[value("a", "1"), value("a", "2")]).is_err());
        assert!(parameter_values(&[value("", "1")]).is_err());
    }

    #[test]
    fn provisioner_refusals_keep_their_meaning() {
        let refusal = |status| {
            provision_status(BuildRequestError::Response(ResponseError {
                status,
                message: "invalid workspace parameters".into(),
                detail: String::new(),
                validations: vec![FieldError {
                    field: "parameters".into(),
                    detail: "region is required".into(),
                }],
            }))
        };
        let invalid = refusal(400);
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(
            invalid.message(),
            "invalid workspace parameters; parameters: region is required"
        );
        assert_eq!(refusal(404).code(), Code::NotFound);
        assert_eq!(refusal(409).code(), Code::AlreadyExists);
        assert_eq!(
            provision_status(BuildRequestError::Other("boom".into())).code(),
            Code::Internal
        );
    }
}
