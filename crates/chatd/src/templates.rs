//! `chatd.v1.TemplateService`: pushing template versions (a `template.toml` directory, see
//! `provisioner::template`). The remaining RPCs (listing, reading, settings) arrive with the
//! rest of the API and answer UNIMPLEMENTED until then.

use std::sync::Arc;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::template_service_server::{TemplateService, TemplateServiceServer};
use chatstore::workspace::{Job, Template, TemplateVersion, WorkspaceStore};
use provisioner::template::{self, Manifest};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{caller, store_status};
use crate::convert::timestamp;

/// The template service over a workspace store.
#[derive(Clone)]
pub struct Templates {
    store: Arc<dyn WorkspaceStore>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// The service.
    pub fn new(store: Arc<dyn WorkspaceStore>) -> Self {
        Self { store }
    }

    /// The tonic server (template directories can be up to a few MiB).
    pub fn into_server(self) -> TemplateServiceServer<Self> {
        TemplateServiceServer::new(self)
            .max_decoding_message_size(template::MAX_TEMPLATE_BYTES + 1024 * 1024)
    }
}

fn template_pb(t: &Template) -> pb::Template {
    pb::Template {
        id: t.id.to_string(),
        organization_id: t.organization_id.to_string(),
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        active_version_id: t
            .active_version_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        deprecation_message: t.deprecated.clone(),
        require_active_version: t.require_active_version,
        chat_enabled: t.chat_enabled,
        deleted: t.deleted,
        default_ttl: u64::try_from(t.default_ttl_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .and_then(|ms| std::time::Duration::from_millis(ms).try_into().ok()),
        ..Default::default()
    }
}

fn job_pb(j: &Job) -> pb::ProvisionerJob {
    use chatstore::workspace::JobStatus as S;
    pb::ProvisionerJob {
        id: j.id.to_string(),
        r#type: match j.kind.as_str() {
            "workspace_build" => pb::ProvisionerJobType::WorkspaceBuild,
            "template_version_import" => pb::ProvisionerJobType::TemplateVersionImport,
            _ => pb::ProvisionerJobType::Unspecified,
        }
        .into(),
        status: match j.status {
            S::Pending => pb::ProvisionerJobStatus::Pending,
            S::Running => pb::ProvisionerJobStatus::Running,
            S::Succeeded => pb::ProvisionerJobStatus::Succeeded,
            S::Canceling => pb::ProvisionerJobStatus::Canceling,
            S::Canceled => pb::ProvisionerJobStatus::Canceled,
            S::Failed => pb::ProvisionerJobStatus::Failed,
            S::Unknown => pb::ProvisionerJobStatus::Unknown,
        }
        .into(),
        created_at: Some(timestamp(j.created_at)),
        started_at: j.started_at.map(timestamp),
        canceled_at: j.canceled_at.map(timestamp),
        completed_at: j.completed_at.map(timestamp),
        error: j.error.clone(),
        error_code: j.error_code.clone(),
    }
}

fn version_pb(
    v: &TemplateVersion,
    manifest: &Manifest,
    job: &Job,
    active: bool,
) -> pb::TemplateVersion {
    let wire = manifest.to_proto();
    pb::TemplateVersion {
        id: v.id.to_string(),
        template_id: v.template_id.to_string(),
        name: v.name.clone(),
        readme: v.readme.clone(),
        has_external_agent: v.has_external_agent,
        agent: wire.agent,
        parameters: wire.parameters,
        presets: v
            .presets
            .iter()
            .zip(wire.presets)
            .map(|((id, _), preset)| pb::TemplatePreset {
                id: id.to_string(),
                ..preset
            })
            .collect(),
        job: Some(job_pb(job)),
        active,
        ..Default::default()
    }
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "only PushTemplateVersion is served so far; listing and reading templates come with the chat API",
    ))
}

#[tonic::async_trait]
impl TemplateService for Templates {
    async fn push_template_version(
        &self,
        request: Request<pb::PushTemplateVersionRequest>,
    ) -> Result<Response<pb::PushTemplateVersionResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        if caller.role != "admin" {
            return Err(Status::permission_denied(
                "pushing templates needs an admin token",
            ));
        }
        let r = request.into_inner();
        let organization_id = Uuid::parse_str(&r.organization_id).map_err(|_| {
            Status::invalid_argument(format!(
                "organization_id {:?} is not a UUID",
                r.organization_id
            ))
        })?;
        let wire = r
            .manifest
            .ok_or_else(|| Status::invalid_argument("manifest is required"))?;
        let manifest =
            Manifest::from_proto(&wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let files = template::files_from_proto(&r.files)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let version_name = if r.version_name.is_empty() {
            format!("v-{}", &Uuid::new_v4().simple().to_string()[..8])
        } else {
            r.version_name
        };
        let pushed = self
            .store
            .push_template_version(template::new_version(
                organization_id,
                &manifest,
                &files,
                &version_name,
                r.activate,
                Some(caller.user_id),
            ))
            .await
            .map_err(store_status)?;
        let template = self
            .store
            .template(pushed.template_id)
            .await
            .map_err(store_status)?;
        let version = self
            .store
            .template_version(pushed.version_id)
            .await
            .map_err(store_status)?;
        let job = self.store.job(pushed.job_id).await.map_err(store_status)?;
        let active = template.active_version_id == Some(version.id);
        Ok(Response::new(pb::PushTemplateVersionResponse {
            template: Some(template_pb(&template)),
            version: Some(version_pb(&version, &manifest, &job, active)),
            template_created: pushed.template_created,
        }))
    }

    async fn list_templates(
        &self,
        _request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        unimplemented()
    }

    async fn get_template(
        &self,
        _request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        unimplemented()
    }

    async fn get_template_version(
        &self,
        _request: Request<pb::GetTemplateVersionRequest>,
    ) -> Result<Response<pb::TemplateVersion>, Status> {
        unimplemented()
    }

    async fn list_template_versions(
        &self,
        _request: Request<pb::ListTemplateVersionsRequest>,
    ) -> Result<Response<pb::ListTemplateVersionsResponse>, Status> {
        unimplemented()
    }

    async fn set_active_template_version(
        &self,
        _request: Request<pb::SetActiveTemplateVersionRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        unimplemented()
    }

    async fn update_template(
        &self,
        _request: Request<pb::UpdateTemplateRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        unimplemented()
    }
}
