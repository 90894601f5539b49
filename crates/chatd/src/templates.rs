//! `chatd.v1.TemplateService`: pushing template versions (a `template.toml` directory, see
//! `provisioner::template`), listing and reading templates and their versions, choosing the
//! active version and changing settings. Reads are scoped to the caller's organizations (a
//! template elsewhere is NOT_FOUND); changes need the admin role.

use std::sync::Arc;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::template_service_server::{TemplateService, TemplateServiceServer};
use chatstore::StoreError;
use chatstore::identity::Caller;
use chatstore::prelude::*;
use chatstore::templates::{Template, TemplateSettings, TemplateVersion};
use chatstore::workspaces::JobStatus;
use provisioner::template::{self, Manifest};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::auth::{
    caller, check_len, not_found, parse_id, parse_optional_id, require_admin, store_status,
    with_reason,
};
use crate::convert;
use crate::paging::{finish_page, page_size, parse_name_token, parse_time_token};

/// The template service over a workspace store.
#[derive(Debug, Clone)]
pub struct Templates {
    store: Arc<dyn Database>,
}

impl Templates {
    /// The service.
    pub fn new(store: Arc<dyn Database>) -> Self {
        Self { store }
    }

    /// The tonic server (template directories can be up to a few MiB).
    pub fn into_server(self) -> TemplateServiceServer<Self> {
        TemplateServiceServer::new(self)
            .max_decoding_message_size(template::MAX_TEMPLATE_BYTES + 1024 * 1024)
    }
}

/// Most characters of a template's display name and description.
const MAX_DISPLAY_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 4096;
const MAX_DEPRECATION_CHARS: usize = 1024;

fn template_not_found(id: Uuid) -> Status {
    not_found("template", id, "TEMPLATE_NOT_FOUND")
}

fn version_not_found(id: Uuid) -> Status {
    not_found("template version", id, "TEMPLATE_VERSION_NOT_FOUND")
}

impl Templates {
    /// A non-deleted template of one of the caller's organizations, or NOT_FOUND.
    async fn visible_template(&self, caller: &Caller, id: Uuid) -> Result<Template, Status> {
        match self.store.template(id).await {
            Ok(t) if !t.deleted && caller.organizations.contains(&t.organization_id) => Ok(t),
            // A missing template is `InvalidInput` in the workspace store.
            Ok(_) | Err(StoreError::InvalidInput(_)) => Err(template_not_found(id)),
            Err(other) => Err(store_status(other)),
        }
    }

    /// A version on the wire, with its import job and whether it is `template`'s active one.
    async fn version_pb(
        &self,
        template: &Template,
        version: &TemplateVersion,
    ) -> Result<pb::TemplateVersion, Status> {
        let manifest = Manifest::from_stored(&version.manifest).map_err(|e| {
            tracing::error!(version = %version.id, error = %e, "a stored template manifest does not parse");
            Status::internal(format!("template version {} is damaged", version.id))
        })?;
        let job = self.store.job(version.job_id).await.map_err(store_status)?;
        let active = template.active_version_id == Some(version.id);
        Ok(convert::template_version(version, &manifest, &job, active))
    }

    /// A template on the wire with its active developers.
    async fn template_pb(&self, template: &Template) -> Result<pb::Template, Status> {
        let developers = self
            .store
            .active_developers(template.id)
            .await
            .map_err(store_status)?;
        Ok(convert::template(template, developers))
    }
}

#[tonic::async_trait]
impl TemplateService for Templates {
    async fn push_template_version(
        &self,
        request: Request<pb::PushTemplateVersionRequest>,
    ) -> Result<Response<pb::PushTemplateVersionResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        require_admin(&caller, "pushing templates")?;
        let r = request.into_inner();
        let organization_id = parse_id("organization_id", &r.organization_id)?;
        if !caller.organizations.contains(&organization_id) {
            return Err(not_found(
                "organization",
                organization_id,
                "ORGANIZATION_NOT_FOUND",
            ));
        }
        let invalid = |e: template::TemplateError| Status::invalid_argument(e.to_string());
        let files = template::files_from_proto(&r.files).map_err(invalid)?;
        // Without a manifest, the directory came as it is: its template.toml is among the files.
        let (manifest, files) = match &r.manifest {
            Some(wire) => (Manifest::from_proto(wire).map_err(invalid)?, files),
            None => {
                let dir = template::TemplateDir::from_files(files).map_err(invalid)?;
                (dir.manifest, dir.files)
            }
        };
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
        Ok(Response::new(pb::PushTemplateVersionResponse {
            template: Some(self.template_pb(&template).await?),
            version: Some(self.version_pb(&template, &version).await?),
            template_created: pushed.template_created,
        }))
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = parse_name_token(&r.page_token)?;
        let organizations = match parse_optional_id("organization_id", Some(&r.organization_id))? {
            Some(id) if caller.organizations.contains(&id) => vec![id],
            Some(id) => {
                return Err(not_found("organization", id, "ORGANIZATION_NOT_FOUND"));
            }
            None => caller.organizations.clone(),
        };
        let rows = self
            .store
            .list_organization_templates(&organizations, &r.query, after, limit + 1)
            .await
            .map_err(store_status)?;
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            crate::paging::name_token(&last.template.name, last.template.id)
        });
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: rows
                .iter()
                .map(|l| convert::template(&l.template, l.active_developers))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_template(
        &self,
        request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let id = parse_id("template_id", &request.get_ref().template_id)?;
        let template = self.visible_template(&caller, id).await?;
        let active_version = match template.active_version_id {
            Some(version_id) => {
                let version = self
                    .store
                    .template_version(version_id)
                    .await
                    .map_err(store_status)?;
                Some(self.version_pb(&template, &version).await?)
            }
            None => None,
        };
        Ok(Response::new(pb::GetTemplateResponse {
            template: Some(self.template_pb(&template).await?),
            active_version,
        }))
    }

    async fn get_template_version(
        &self,
        request: Request<pb::GetTemplateVersionRequest>,
    ) -> Result<Response<pb::TemplateVersion>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let id = parse_id(
            "template_version_id",
            &request.get_ref().template_version_id,
        )?;
        let version = match self.store.template_version(id).await {
            Ok(v) => v,
            Err(StoreError::InvalidInput(_)) => return Err(version_not_found(id)),
            Err(other) => return Err(store_status(other)),
        };
        let template = self
            .visible_template(&caller, version.template_id)
            .await
            .map_err(|_| version_not_found(id))?;
        Ok(Response::new(self.version_pb(&template, &version).await?))
    }

    async fn list_template_versions(
        &self,
        request: Request<pb::ListTemplateVersionsRequest>,
    ) -> Result<Response<pb::ListTemplateVersionsResponse>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        let r = request.into_inner();
        let id = parse_id("template_id", &r.template_id)?;
        let limit = page_size(r.page_size)?;
        let after = parse_time_token(&r.page_token)?;
        let template = self.visible_template(&caller, id).await?;
        let versions = self
            .store
            .list_template_versions(id, after, limit + 1)
            .await
            .map_err(store_status)?;
        let (versions, next_page_token) = finish_page(versions, limit, |last| {
            crate::paging::time_token(last.created_at, last.id)
        });
        let mut template_versions = Vec::with_capacity(versions.len());
        for version in &versions {
            template_versions.push(self.version_pb(&template, version).await?);
        }
        Ok(Response::new(pb::ListTemplateVersionsResponse {
            template_versions,
            next_page_token,
        }))
    }

    async fn set_active_template_version(
        &self,
        request: Request<pb::SetActiveTemplateVersionRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        require_admin(&caller, "choosing a template's active version")?;
        let r = request.into_inner();
        let id = parse_id("template_id", &r.template_id)?;
        let version_id = parse_id("template_version_id", &r.template_version_id)?;
        let template = self.visible_template(&caller, id).await?;
        let version = match self.store.template_version(version_id).await {
            Ok(v) => v,
            Err(StoreError::InvalidInput(_)) => return Err(version_not_found(version_id)),
            Err(other) => return Err(store_status(other)),
        };
        if version.template_id != template.id {
            return Err(with_reason(
                Code::FailedPrecondition,
                format!("version {version_id} is not a version of template {id}"),
                "VERSION_OF_ANOTHER_TEMPLATE",
            ));
        }
        let job = self.store.job(version.job_id).await.map_err(store_status)?;
        if job.status != JobStatus::Succeeded {
            return Err(with_reason(
                Code::FailedPrecondition,
                format!(
                    "version {version_id} cannot be activated: its import job is {:?}, not succeeded",
                    job.status
                ),
                "VERSION_NOT_IMPORTED",
            ));
        }
        let updated = self
            .store
            .update_template(
                id,
                TemplateSettings {
                    active_version_id: Some(version_id),
                    ..TemplateSettings::default()
                },
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(self.template_pb(&updated).await?))
    }

    async fn update_template(
        &self,
        request: Request<pb::UpdateTemplateRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        let caller = caller(self.store.as_ref(), &request).await?;
        require_admin(&caller, "changing templates")?;
        let r = request.into_inner();
        let id = parse_id("template_id", &r.template_id)?;
        if let Some(name) = &r.display_name {
            check_len("display_name", name, MAX_DISPLAY_NAME_CHARS)?;
        }
        if let Some(description) = &r.description {
            check_len("description", description, MAX_DESCRIPTION_CHARS)?;
        }
        if let Some(message) = &r.deprecation_message {
            check_len("deprecation_message", message, MAX_DEPRECATION_CHARS)?;
        }
        let default_ttl_ms = r
            .default_ttl
            .map(|ttl| {
                std::time::Duration::try_from(ttl)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .ok_or_else(|| Status::invalid_argument("default_ttl must not be negative"))
            })
            .transpose()?;
        self.visible_template(&caller, id).await?;
        let updated = if r.delete {
            self.store.delete_template(id).await
        } else {
            self.store
                .update_template(
                    id,
                    TemplateSettings {
                        require_active_version: r.require_active_version,
                        chat_enabled: r.chat_enabled,
                        deprecated: r.deprecation_message.map(|m| m.trim().to_owned()),
                        active_version_id: None,
                        display_name: r.display_name.map(|n| n.trim().to_owned()),
                        description: r.description,
                        default_ttl_ms,
                    },
                )
                .await
        }
        .map_err(store_status)?;
        Ok(Response::new(self.template_pb(&updated).await?))
    }
}
