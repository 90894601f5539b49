//! Creating, starting and stopping workspaces with the chat owner's authority
//! (spec/chattool.md §1 `WorkspaceProvisioner`), and [`StoreProvisioner`], chatd's own
//! implementation over the store: it checks parameters and presets against the template version
//! the build will use before it records the build, so the model gets a validation error at once
//! instead of a failed build later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstore::StoreError;
use chatstore::workspace::{Build, Workspace, WorkspaceStore, WorkspaceTransition};
use provisioner::template::{Manifest, parameters_from_json, resolve_parameters};
use serde::Serialize;
use uuid::Uuid;

/// One field's problem in a [`ResponseError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// The field (`name`, `parameters`, `preset_id`, …).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// A refusal by the control plane: an HTTP-like status, a message and per-field problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError {
    /// 400 (validation), 404, 409 (conflict), …
    pub status: u16,
    /// What went wrong.
    pub message: String,
    /// More detail; empty when none.
    pub detail: String,
    /// Per-field problems.
    pub validations: Vec<Validation>,
}

impl ResponseError {
    /// A 400 naming one field.
    pub fn invalid(message: impl Into<String>, field: &str, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            detail: String::new(),
            validations: vec![Validation {
                field: field.to_owned(),
                detail: detail.into(),
            }],
        }
    }

    /// Whether this is a 409 whose validations name `field`.
    pub fn is_conflict_on(&self, field: &str) -> bool {
        self.status == 409 && self.validations.iter().any(|v| v.field == field)
    }

    /// The §2.2 JSON of the error (`error`, `detail`?, `validations`?).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let message = if self.message.is_empty() {
            "request failed"
        } else {
            &self.message
        };
        out.insert("error".into(), message.into());
        if !self.detail.is_empty() {
            out.insert("detail".into(), self.detail.clone().into());
        }
        if !self.validations.is_empty() {
            out.insert(
                "validations".into(),
                serde_json::to_value(&self.validations).unwrap_or_default(),
            );
        }
        out
    }
}

/// Why a provisioner call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The control plane refused (returned to the model as JSON, §2.2).
    #[error("{}", .0.message)]
    Response(ResponseError),
    /// Anything else (returned as a text error).
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for ProvisionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput(message) => Self::Response(ResponseError {
                status: 400,
                message,
                detail: String::new(),
                validations: Vec::new(),
            }),
            other => Self::Other(other.to_string()),
        }
    }
}

/// What `create_workspace` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Organization of the chat.
    pub organization_id: Uuid,
    /// Owner of the chat (the new workspace's owner).
    pub owner_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Workspace name (already valid).
    pub name: String,
    /// Parameter values given by the model.
    pub parameters: BTreeMap<String, String>,
    /// A preset of the template's active version.
    pub preset_id: Option<Uuid>,
    /// Time to live; `None` = the template's default.
    pub ttl: Option<Duration>,
}

/// Creates, starts and stops workspaces with the chat owner's authority.
#[async_trait]
pub trait WorkspaceProvisioner: Send + Sync {
    /// Creates a workspace and its first (start) build.
    async fn create_workspace(
        &self,
        request: CreateRequest,
    ) -> Result<(Workspace, Build), ProvisionError>;
    /// Requests a start build; `parameters` change mutable parameters.
    async fn start_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
        parameters: BTreeMap<String, String>,
    ) -> Result<Build, ProvisionError>;
    /// Requests a stop build.
    async fn stop_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Build, ProvisionError>;
}

/// chatd's provisioner front: checks and records builds in the store, where the provisioner
/// workers take them.
#[derive(Clone)]
pub struct StoreProvisioner {
    store: Arc<dyn WorkspaceStore>,
}

impl std::fmt::Debug for StoreProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreProvisioner").finish_non_exhaustive()
    }
}

/// `[{name, value}]`, the form builds store their parameters in.
fn stored(values: &BTreeMap<String, String>) -> serde_json::Value {
    values
        .iter()
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .collect()
}

fn parameter_problems(message: &str, problems: Vec<String>) -> ProvisionError {
    ProvisionError::Response(ResponseError {
        status: 400,
        message: message.to_owned(),
        detail: String::new(),
        validations: problems
            .into_iter()
            .map(|detail| Validation {
                field: "parameters".into(),
                detail,
            })
            .collect(),
    })
}

impl StoreProvisioner {
    /// A provisioner front over the store.
    pub fn new(store: Arc<dyn WorkspaceStore>) -> Self {
        Self { store }
    }

    async fn manifest(&self, version_id: Uuid) -> Result<Manifest, ProvisionError> {
        let version = self.store.template_version(version_id).await?;
        Manifest::from_stored(&version.manifest).map_err(ProvisionError::Other)
    }

    async fn latest(&self, workspace_id: Uuid) -> Result<Build, ProvisionError> {
        self.store
            .latest_build(workspace_id)
            .await?
            .ok_or_else(|| ProvisionError::Other(format!("workspace {workspace_id} has no build")))
    }

    async fn owned(&self, owner_id: Uuid, workspace_id: Uuid) -> Result<Workspace, ProvisionError> {
        let workspace = self.store.workspace(workspace_id).await?;
        if workspace.owner_id != owner_id || workspace.deleted {
            return Err(ProvisionError::Response(ResponseError {
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
impl WorkspaceProvisioner for StoreProvisioner {
    async fn create_workspace(
        &self,
        request: CreateRequest,
    ) -> Result<(Workspace, Build), ProvisionError> {
        let template = self.store.template(request.template_id).await?;
        let version_id = template
            .active_version_id
            .ok_or_else(|| ProvisionError::Other("the template has no active version".into()))?;
        let version = self.store.template_version(version_id).await?;
        let manifest = Manifest::from_stored(&version.manifest).map_err(ProvisionError::Other)?;
        let mut given: Vec<(String, String)> = Vec::new();
        if let Some(preset_id) = request.preset_id {
            let Some((_, preset)) = version.presets.iter().find(|(id, _)| *id == preset_id) else {
                return Err(ProvisionError::Response(ResponseError::invalid(
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
                StoreError::Conflict(detail) => ProvisionError::Response(ResponseError {
                    status: 409,
                    message: format!("workspace name {:?} is already in use", request.name),
                    detail: String::new(),
                    validations: vec![Validation {
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
    ) -> Result<Build, ProvisionError> {
        let workspace = self.owned(owner_id, workspace_id).await?;
        let latest = self.latest(workspace_id).await?;
        let template = self.store.template(workspace.template_id).await?;
        let target = match template.active_version_id {
            Some(active) if template.require_active_version => active,
            _ => latest.template_version_id,
        };
        let manifest = self.manifest(target).await?;
        let previous = parameters_from_json(&latest.parameters).map_err(ProvisionError::Other)?;
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
    ) -> Result<Build, ProvisionError> {
        self.owned(owner_id, workspace_id).await?;
        let latest = self.latest(workspace_id).await?;
        Ok(self
            .store
            .new_build(
                workspace_id,
                WorkspaceTransition::Stop,
                Some(owner_id),
                latest.parameters,
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_errors_become_the_spec_json() {
        let e = ResponseError {
            status: 409,
            message: String::new(),
            detail: "taken".into(),
            validations: vec![Validation {
                field: "name".into(),
                detail: "in use".into(),
            }],
        };
        assert!(e.is_conflict_on("name"));
        assert!(!e.is_conflict_on("parameters"));
        assert_eq!(
            serde_json::Value::Object(e.to_json()),
            serde_json::json!({"error": "request failed", "detail": "taken",
                               "validations": [{"field": "name", "detail": "in use"}]})
        );
        let plain = ResponseError::invalid("bad", "preset_id", "x");
        assert_eq!(plain.to_json()["error"], "bad");
        assert!(!plain.to_json().contains_key("detail"));
    }
}
