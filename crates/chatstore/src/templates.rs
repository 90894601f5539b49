//! Templates and their immutable versions with parameters and presets (spec/engine.md §8.6,
//! spec/chattool.md §7).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreError;
use crate::types::NewestFirstCursor;

/// A template version to store (immutable once stored).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTemplateVersion {
    /// Organization.
    pub organization_id: Uuid,
    /// Template name; the template is created when new.
    pub template_name: String,
    /// Display name of a new template.
    pub display_name: String,
    /// Description of a new template.
    pub description: String,
    /// Version name.
    pub version_name: String,
    /// README (Markdown).
    pub readme: String,
    /// The agent is managed outside chatd.
    pub has_external_agent: bool,
    /// Manifest (startup script, agent settings).
    pub manifest: serde_json::Value,
    /// Files `[{path, content, mode}]`.
    pub files: serde_json::Value,
    /// Parameters.
    pub parameters: Vec<TemplateParameter>,
    /// Presets.
    pub presets: Vec<TemplatePreset>,
    /// Make this version active now.
    pub activate: bool,
    /// Who pushed it.
    pub created_by: Option<Uuid>,
}

/// A template parameter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateParameter {
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// `string`, `number`, `bool`, `list(string)`.
    pub kind: String,
    /// Mutable after creation.
    pub mutable: bool,
    /// Default; `None` = required.
    pub default_value: Option<String>,
    /// Options `[{name, value, description, icon}]`.
    pub options: serde_json::Value,
    /// Display order.
    pub display_order: i32,
    /// How a form shows it (e.g. `dropdown`).
    pub form_type: String,
    /// Only for one build.
    pub ephemeral: bool,
    /// Validation regular expression; empty = none.
    pub validation_regex: String,
    /// Smallest number accepted.
    pub validation_min: Option<i32>,
    /// Largest number accepted.
    pub validation_max: Option<i32>,
    /// Message shown when validation fails.
    pub validation_error: String,
}

/// A template (spec/engine.md §8.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Deleted.
    pub deleted: bool,
    /// Non-empty = deprecated (the text says why).
    pub deprecated: String,
    /// The active version.
    pub active_version_id: Option<Uuid>,
    /// Workspaces must build the active version.
    pub require_active_version: bool,
    /// Chats may create workspaces from it.
    pub chat_enabled: bool,
    /// Default workspace TTL, milliseconds; 0 = none.
    pub default_ttl_ms: i64,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Settings or active version last changed.
    pub updated_at: DateTime<Utc>,
}

/// A template in a listing, with the number of distinct owners of its live workspaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateListing {
    /// The template.
    pub template: Template,
    /// Distinct owners of its non-deleted workspaces.
    pub active_developers: i64,
}

/// An immutable template version with its parameters and presets.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    /// Id.
    pub id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Name.
    pub name: String,
    /// Description of the change, given at push time.
    pub message: String,
    /// README.
    pub readme: String,
    /// Import job.
    pub job_id: Uuid,
    /// The agent is managed outside chatd.
    pub has_external_agent: bool,
    /// Manifest.
    pub manifest: serde_json::Value,
    /// Files (`null` when read by [`TemplateStore::list_template_versions`]).
    pub files: serde_json::Value,
    /// Who pushed it.
    pub created_by: Option<Uuid>,
    /// Pushed.
    pub created_at: DateTime<Utc>,
    /// Parameters in display order.
    pub parameters: Vec<TemplateParameter>,
    /// Presets with their ids.
    pub presets: Vec<(Uuid, TemplatePreset)>,
}

/// Template settings an administrator changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateSettings {
    /// Require the active version.
    pub require_active_version: Option<bool>,
    /// Allow chats to use it.
    pub chat_enabled: Option<bool>,
    /// Deprecation message (empty = not deprecated).
    pub deprecated: Option<String>,
    /// Make this version active (must belong to the template).
    pub active_version_id: Option<Uuid>,
    /// Display name (empty = use the name).
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Default workspace TTL, milliseconds (0 = none).
    pub default_ttl_ms: Option<i64>,
}

/// A named set of parameter values of a template version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplatePreset {
    /// Name.
    pub name: String,
    /// Preselected.
    pub is_default: bool,
    /// Description.
    pub description: String,
    /// `(parameter, value)` pairs.
    pub parameters: Vec<(String, String)>,
}

/// Ids of a pushed template version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedVersion {
    /// The template.
    pub template_id: Uuid,
    /// The version.
    pub version_id: Uuid,
    /// Its import job.
    pub job_id: Uuid,
    /// The push created the template.
    pub template_created: bool,
}

impl NewTemplateVersion {
    /// Whether the pushed version becomes the template's active one: the first version of a
    /// template is active at once, later ones when asked.
    pub(crate) fn activates(&self, template_has_active: bool) -> bool {
        self.activate || !template_has_active
    }
}

/// The listing of [`TemplateStore::list_templates`]: each template with its count of active
/// developers, by that count descending, then name, then id. Counting is an ornament of the
/// listing: when it failed, every count is 0.
pub(crate) fn by_active_developers(
    templates: Vec<Template>,
    counts: Result<Vec<(Uuid, i64)>, impl std::fmt::Display>,
) -> Vec<TemplateListing> {
    let counts: std::collections::HashMap<Uuid, i64> = counts
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "counting active developers failed; listing without counts");
            Vec::new()
        })
        .into_iter()
        .collect();
    let mut listing: Vec<TemplateListing> = templates
        .into_iter()
        .map(|template| TemplateListing {
            active_developers: counts.get(&template.id).copied().unwrap_or(0),
            template,
        })
        .collect();
    listing.sort_by(|a, b| {
        b.active_developers
            .cmp(&a.active_developers)
            .then_with(|| a.template.name.cmp(&b.template.name))
            .then_with(|| a.template.id.cmp(&b.template.id))
    });
    listing
}

/// A template that a read or a change names does not exist.
pub(crate) fn template_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("template {id} not found"))
}

/// A template version that a read names does not exist.
pub(crate) fn version_not_found(id: Uuid) -> StoreError {
    StoreError::InvalidInput(format!("template version {id} not found"))
}

/// A version made active that belongs to another template (or to none).
pub(crate) fn not_a_version_of(version: Uuid, template: Uuid) -> StoreError {
    StoreError::InvalidInput(format!(
        "version {version} is not a version of template {template}"
    ))
}

/// The template to delete does not exist.
pub(crate) fn no_template_to_delete(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("template {id} not found"))
}

/// The template to delete is used by `in_use` live workspaces.
pub(crate) fn template_in_use(id: Uuid, in_use: i64) -> StoreError {
    StoreError::Precondition(format!(
        "template {id} is used by {in_use} workspace(s); delete them first"
    ))
}

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores a template version (creating the template when new) with its import job.
    async fn push_template_version(
        &self,
        version: NewTemplateVersion,
    ) -> Result<PushedVersion, StoreError>;
    /// Reads a template.
    async fn template(&self, id: Uuid) -> Result<Template, StoreError>;
    /// The organization's live templates (not deleted, not deprecated) whose name contains
    /// `name_query` (case-insensitive; empty = all), each with its active developers, ordered by
    /// active developers descending, then name, then id. When counting fails the counts are 0.
    async fn list_templates(
        &self,
        organization_id: Uuid,
        name_query: &str,
    ) -> Result<Vec<TemplateListing>, StoreError>;
    /// Reads a template version with its parameters and presets.
    async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, StoreError>;
    /// Changes template settings.
    async fn update_template(
        &self,
        id: Uuid,
        settings: TemplateSettings,
    ) -> Result<Template, StoreError>;
    /// The non-deleted templates of `organization_ids` (deprecated ones included) whose name
    /// contains `name_query` (case-insensitive), by name then id, after `after` (the previous
    /// page's last name and id), each with its active developers.
    async fn list_organization_templates(
        &self,
        organization_ids: &[Uuid],
        name_query: &str,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TemplateListing>, StoreError>;
    /// Distinct owners of the template's non-deleted workspaces.
    async fn active_developers(&self, template_id: Uuid) -> Result<i64, StoreError>;
    /// A template's versions, newest first, after `after`, each with its parameters and presets
    /// but without its files (`files` is `null`).
    async fn list_template_versions(
        &self,
        template_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>, StoreError>;
    /// Soft-deletes a template, freeing its name. [`StoreError::Precondition`] while
    /// non-deleted workspaces use it; [`StoreError::NotFound`] when it does not exist.
    async fn delete_template(&self, id: Uuid) -> Result<Template, StoreError>;
}
