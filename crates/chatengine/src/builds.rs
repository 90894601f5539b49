//! chatd's [`WorkspaceBuilds`]: the control plane's front for workspace builds. It checks a
//! request against the template version the build will use (presets, parameters and their
//! validation, immutable parameters, name collisions) and records the build in the store, where
//! the provisioner workers take it. The chat tools and the `WorkspaceService` use it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chatstore::StoreError;
use chatstore::prelude::*;
use chatstore::workspaces::{Build, Workspace, WorkspaceTransition};
use chattool::builds::{
    BuildRequestError, CreateRequest, FieldError, ResponseError, WorkspaceBuilds,
};
use provisioner::template::{Manifest, parameters_from_json, resolve_parameters};
use uuid::Uuid;

/// chatd's provisioner front: checks and records builds in the store, where the provisioner
/// workers take them.
#[derive(Debug, Clone)]
pub struct StoreBuilds {
    store: Arc<dyn Database>,
    max_workspaces: usize,
}

/// The most workspaces one user may have in one organization (deleted ones do not count).
pub const MAX_WORKSPACES_PER_USER: usize = 20;

/// `[{name, value}]`, the form builds store their parameters in.
fn stored(values: &BTreeMap<String, String>) -> serde_json::Value {
    values
        .iter()
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .collect()
}

fn parameter_problems(message: &str, problems: Vec<String>) -> BuildRequestError {
    BuildRequestError::Response(ResponseError {
        status: 400,
        message: message.to_owned(),
        detail: String::new(),
        validations: problems
            .into_iter()
            .map(|detail| FieldError {
                field: "parameters".into(),
                detail,
            })
            .collect(),
    })
}

impl StoreBuilds {
    /// A provisioner front over the store, allowing [`MAX_WORKSPACES_PER_USER`] workspaces per
    /// user and organization.
    pub fn new(store: Arc<dyn Database>) -> Self {
        Self {
            store,
            max_workspaces: MAX_WORKSPACES_PER_USER,
        }
    }

    /// The same front with another cap on each user's workspaces in an organization.
    pub fn with_max_workspaces(mut self, max: usize) -> Self {
        self.max_workspaces = max;
        self
    }

    /// Refuses a new workspace when the owner already has as many as the cap allows (429).
    async fn check_quota(&self, request: &CreateRequest) -> Result<(), BuildRequestError> {
        let cap = i64::try_from(self.max_workspaces).unwrap_or(i64::MAX);
        let owned = self
            .store
            .list_workspaces(&chatstore::workspaces::WorkspaceListQuery {
                organization_ids: vec![request.organization_id],
                owner_id: Some(request.owner_id),
                template_id: None,
                name_query: String::new(),
                after: None,
                limit: cap.saturating_add(1),
            })
            .await?;
        if owned.len() >= self.max_workspaces {
            return Err(BuildRequestError::Response(ResponseError {
                status: 429,
                message: format!(
                    "workspace quota reached: you have {} workspaces in this organization, the \
                     most allowed; delete one you no longer need",
                    owned.len()
                ),
                detail: String::new(),
                validations: Vec::new(),
            }));
        }
        Ok(())
    }

    async fn manifest(&self, version_id: Uuid) -> Result<Manifest, BuildRequestError> {
        let version = self.store.template_version(version_id).await?;
        Manifest::from_stored(&version.manifest).map_err(BuildRequestError::Other)
    }

    async fn latest(&self, workspace_id: Uuid) -> Result<Build, BuildRequestError> {
        self.store.latest_build(workspace_id).await?.ok_or_else(|| {
            BuildRequestError::Other(format!("workspace {workspace_id} has no build"))
        })
    }

    /// Requests a `delete` build of the owner's workspace (with the latest build's parameters);
    /// the workspace is marked deleted when the build succeeds. The chat tools cannot delete
    /// workspaces; `WorkspaceService.DeleteWorkspace` can.
    pub async fn delete_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Build, BuildRequestError> {
        self.transition(owner_id, workspace_id, WorkspaceTransition::Delete)
            .await
    }

    /// A stop or delete build of the owner's workspace with the latest build's parameters.
    async fn transition(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
    ) -> Result<Build, BuildRequestError> {
        self.owned(owner_id, workspace_id).await?;
        let latest = self.latest(workspace_id).await?;
        Ok(self
            .store
            .new_build(workspace_id, transition, Some(owner_id), latest.parameters)
            .await?)
    }

    async fn owned(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Workspace, BuildRequestError> {
        let workspace = self.store.workspace(workspace_id).await?;
        if workspace.owner_id != owner_id || workspace.deleted {
            return Err(BuildRequestError::Response(ResponseError {
                status: 404,
                message: format!("workspace {workspace_id} not found"),
                detail: String::new(),
                validations: Vec::new(),
            }));
        }
        Ok(workspace)
    }
}

#[async_trait]
impl WorkspaceBuilds for StoreBuilds {
    async fn create_workspace(
        &self,
        request: CreateRequest,
    ) -> Result<(Workspace, Build), BuildRequestError> {
        let template = self.store.template(request.template_id).await?;
        let version_id = template
            .active_version_id
            .ok_or_else(|| BuildRequestError::Other("the template has no active version".into()))?;
        let version = self.store.template_version(version_id).await?;
        let manifest =
            Manifest::from_stored(&version.manifest).map_err(BuildRequestError::Other)?;
        let mut given: Vec<(String, String)> = Vec::new();
        if let Some(preset_id) = request.preset_id {
            let Some((_, preset)) = version.presets.iter().find(|(id, _)| *id == preset_id) else {
                return Err(BuildRequestError::Response(ResponseError::invalid(
                    "invalid preset",
                    "preset_id",
                    format!("{preset_id} is not a preset of the template's active version"),
                )));
            };
            given.extend(preset.parameters.iter().cloned());
        }
        given.extend(request.parameters.clone());
        let values = resolve_parameters(&manifest, &given)
            .map_err(|problems| parameter_problems("invalid workspace parameters", problems))?;
        self.check_quota(&request).await?;
        let ttl_ms = match request.ttl {
            Some(ttl) => i64::try_from(ttl.as_millis()).ok(),
            None => (template.default_ttl_ms > 0).then_some(template.default_ttl_ms),
        };
        self.store
            .create_workspace(
                request.organization_id,
                request.owner_id,
                request.template_id,
                &request.name,
                stored(&values),
                ttl_ms,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(detail) => BuildRequestError::Response(ResponseError {
                    status: 409,
                    message: format!("workspace name {:?} is already in use", request.name),
                    detail: String::new(),
                    validations: vec![FieldError {
                        field: "name".into(),
                        detail,
                    }],
                }),
                other => other.into(),
            })
    }

    async fn start_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
        parameters: BTreeMap<String, String>,
    ) -> Result<Build, BuildRequestError> {
        let workspace = self.owned(owner_id, workspace_id).await?;
        let latest = self.latest(workspace_id).await?;
        let template = self.store.template(workspace.template_id).await?;
        let target = match template.active_version_id {
            Some(active) if template.require_active_version => active,
            _ => latest.template_version_id,
        };
        let manifest = self.manifest(target).await?;
        let previous =
            parameters_from_json(&latest.parameters).map_err(BuildRequestError::Other)?;
        let mut problems = Vec::new();
        for (name, value) in &parameters {
            // Only a value the workspace already has can be an immutable one's change.
            let changed = previous.iter().any(|(n, v)| n == name && v != value);
            if let Some(p) = manifest.parameters.iter().find(|p| &p.name == name)
                && !p.mutable
                && changed
            {
                problems.push(format!(
                    "parameter {name:?} is immutable and cannot be changed after creation"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(parameter_problems("invalid workspace parameters", problems));
        }
        // Earlier values carry over (ephemeral ones only live for one build); given ones win.
        let mut given: Vec<(String, String)> = previous
            .into_iter()
            .filter(|(name, _)| {
                manifest
                    .parameters
                    .iter()
                    .any(|p| &p.name == name && !p.ephemeral)
            })
            .collect();
        given.extend(parameters);
        let values = resolve_parameters(&manifest, &given).map_err(|problems| {
            if target == latest.template_version_id {
                parameter_problems("invalid workspace parameters", problems)
            } else {
                parameter_problems(
                    "the template requires its active version, and that version needs parameter values this workspace does not have: update the workspace manually, or call start_workspace again with values for the parameters listed (read_template shows them)",
                    problems,
                )
            }
        })?;
        Ok(self
            .store
            .new_build(
                workspace_id,
                WorkspaceTransition::Start,
                Some(owner_id),
                stored(&values),
            )
            .await?)
    }

    async fn stop_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Build, BuildRequestError> {
        self.transition(owner_id, workspace_id, WorkspaceTransition::Stop)
            .await
    }
}
