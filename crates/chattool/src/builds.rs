//! Requesting workspace builds — create, start and stop a workspace with the chat owner's
//! authority ([`WorkspaceBuilds`], the spec's `WorkspaceProvisioner` of spec/chattool.md §1) —
//! and the control plane's refusals ([`ResponseError`]). The tools only ask; the builds run in
//! the `provisioner` crate's workers. chatd's implementation over the store is
//! `chatengine::builds::StoreBuilds` (where template manifests are understood); tests may bring
//! their own.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chatstore::StoreError;
use chatstore::workspaces::{Build, Workspace};
use serde::Serialize;
use uuid::Uuid;

/// One field's problem in a [`ResponseError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
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
    pub validations: Vec<FieldError>,
}

impl ResponseError {
    /// A 400 naming one field.
    pub fn invalid(message: impl Into<String>, field: &str, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            detail: String::new(),
            validations: vec![FieldError {
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
pub enum BuildRequestError {
    /// The control plane refused (returned to the model as JSON, §2.2).
    #[error("{}", .0.message)]
    Response(ResponseError),
    /// Anything else (returned as a text error).
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for BuildRequestError {
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
pub trait WorkspaceBuilds: Send + Sync {
    /// Creates a workspace and its first (start) build.
    async fn create_workspace(
        &self,
        request: CreateRequest,
    ) -> Result<(Workspace, Build), BuildRequestError>;
    /// Requests a start build; `parameters` change mutable parameters.
    async fn start_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
        parameters: BTreeMap<String, String>,
    ) -> Result<Build, BuildRequestError>;
    /// Requests a stop build.
    async fn stop_workspace(
        &self,
        owner_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Build, BuildRequestError>;
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
            validations: vec![FieldError {
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
