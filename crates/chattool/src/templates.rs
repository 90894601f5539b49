//! `list_templates` and `read_template` (spec/chattool.md §7, §2.4).
//!
//! | Tool | Arguments | Result fields |
//! |---|---|---|
//! | `list_templates` | `query`?, `page`? (10 per page) | `templates: [{id, name, display_name?, description?, active_developers?, organization_id}]`, `count`, `page`, `total_pages`, `total_count` |
//! | `read_template` | `template_id` | `template: {id, name, active_version_id, display_name?, description?, readme?}`, `parameters: [...]`, `parameters_note`, `presets`? |
//!
//! Templates are those of the chat's organization that are live (not deleted or deprecated) and
//! allowed for chats (the allow-list and `chat_enabled`).

use async_trait::async_trait;
use chatstore::templates::{Template, TemplateParameter};
use chatstore::workspaces::JobStatus;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::context::NO_DATABASE;
use crate::readme::{cut_chars, readme_text};
use crate::tool::TypedTool;
use crate::{ToolContext, ToolResult};

/// Templates per `list_templates` page.
pub const PAGE_SIZE: usize = 10;
/// Longest template description in a listing, in characters.
pub const DESCRIPTION_CHARS: usize = 200;
/// Longest parameter description in `read_template`, in characters.
pub const PARAMETER_DESCRIPTION_CHARS: usize = 300;
/// `parameters_note` while the active version's import has not succeeded.
pub const IMPORTING_NOTE: &str =
    "The template version is still importing; parameters may be incomplete. Try again shortly.";
/// `parameters_note` once the import succeeded.
pub const DEFAULTS_NOTE: &str =
    "Defaults shown are the values recorded when the template version was imported.";
/// The refusal of a template the chat may not use.
pub const NOT_ALLOWED: &str =
    "template not available for chat workspaces; use list_templates to find allowed templates";

/// Arguments of `list_templates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTemplatesArgs {
    /// Case-insensitive text to look for in template names.
    #[serde(default)]
    pub query: Option<String>,
    /// Page, from 1 (10 templates per page).
    #[serde(default)]
    pub page: Option<i64>,
}

/// Inserts `key` when `value` is not blank.
fn put_text(fields: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.trim().is_empty() {
        fields.insert(key.into(), value.into());
    }
}

/// `list_templates`.
#[derive(Debug, Default)]
pub struct ListTemplates;

#[async_trait]
impl TypedTool for ListTemplates {
    type Args = ListTemplatesArgs;
    const NAME: &'static str = "list_templates";
    const DESCRIPTION: &'static str = "List the templates this chat can create workspaces from, most used first, 10 per page. \
         Filter by name with query. Use read_template for a template's parameters and presets.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: ListTemplatesArgs,
    ) -> Result<ToolResult, ToolResult> {
        let store = ctx
            .store
            .as_ref()
            .ok_or_else(|| ToolResult::error(NO_DATABASE))?;
        let query = args.query.unwrap_or_default();
        let listing = store
            .list_templates(ctx.chat.organization_id, query.trim())
            .await
            .map_err(|e| ToolResult::error(e.to_string()))?;
        let allowed: Vec<_> = listing
            .into_iter()
            .filter(|l| ctx.settings.allows(&l.template))
            .collect();
        let page = usize::try_from(args.page.unwrap_or(1).max(1)).unwrap_or(1);
        let total_count = allowed.len();
        let templates: Vec<Value> = allowed
            .iter()
            .skip((page - 1).saturating_mul(PAGE_SIZE))
            .take(PAGE_SIZE)
            .map(|l| {
                let t = &l.template;
                let mut fields = Map::new();
                fields.insert("id".into(), t.id.to_string().into());
                fields.insert("name".into(), t.name.clone().into());
                put_text(&mut fields, "display_name", &t.display_name);
                put_text(
                    &mut fields,
                    "description",
                    &cut_chars(t.description.trim(), DESCRIPTION_CHARS),
                );
                if l.active_developers > 0 {
                    fields.insert("active_developers".into(), l.active_developers.into());
                }
                fields.insert(
                    "organization_id".into(),
                    t.organization_id.to_string().into(),
                );
                Value::Object(fields)
            })
            .collect();
        Ok(ToolResult::json(&json!({
            "count": templates.len(),
            "templates": templates,
            "page": page,
            "total_pages": total_count.div_ceil(PAGE_SIZE).max(1),
            "total_count": total_count,
        })))
    }
}

/// Arguments of `read_template`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadTemplateArgs {
    /// The template (a UUID from list_templates).
    #[serde(default)]
    pub template_id: String,
}

/// One parameter as `read_template` shows it.
fn parameter_json(p: &TemplateParameter) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), p.name.clone().into());
    fields.insert("type".into(), p.kind.clone().into());
    fields.insert("required".into(), p.default_value.is_none().into());
    fields.insert("mutable".into(), p.mutable.into());
    put_text(&mut fields, "display_name", &p.display_name);
    put_text(
        &mut fields,
        "description",
        &cut_chars(p.description.trim(), PARAMETER_DESCRIPTION_CHARS),
    );
    if let Some(default) = &p.default_value {
        fields.insert("default".into(), default.clone().into());
    }
    if p.ephemeral {
        fields.insert("ephemeral".into(), true.into());
    }
    put_text(&mut fields, "form_type", &p.form_type);
    if let Some(options) = p.options.as_array().filter(|o| !o.is_empty()) {
        let options: Vec<Value> = options
            .iter()
            .map(|o| {
                let mut option = Map::new();
                for key in ["name", "value"] {
                    option.insert(key.into(), o.get(key).cloned().unwrap_or_else(|| "".into()));
                }
                for key in ["description", "icon"] {
                    if let Some(text) = o.get(key).and_then(Value::as_str) {
                        put_text(&mut option, key, text);
                    }
                }
                Value::Object(option)
            })
            .collect();
        fields.insert("options".into(), options.into());
    }
    put_text(&mut fields, "validation_regex", &p.validation_regex);
    if let Some(min) = p.validation_min {
        fields.insert("validation_min".into(), min.into());
    }
    if let Some(max) = p.validation_max {
        fields.insert("validation_max".into(), max.into());
    }
    put_text(&mut fields, "error", &p.validation_error);
    Value::Object(fields)
}

/// `read_template`.
#[derive(Debug, Default)]
pub struct ReadTemplate;

impl ReadTemplate {
    /// The template if the chat may see it: `template not found` otherwise.
    async fn visible(ctx: &ToolContext, id: Uuid) -> Result<Template, ToolResult> {
        let store = ctx
            .store
            .as_ref()
            .ok_or_else(|| ToolResult::error(NO_DATABASE))?;
        let not_found = || ToolResult::error("template not found");
        let template = store.template(id).await.map_err(|_| not_found())?;
        if template.deleted || template.organization_id != ctx.chat.organization_id {
            return Err(not_found());
        }
        if !ctx.settings.allows(&template) {
            return Err(ToolResult::error(NOT_ALLOWED));
        }
        Ok(template)
    }
}

#[async_trait]
impl TypedTool for ReadTemplate {
    type Args = ReadTemplateArgs;
    const NAME: &'static str = "read_template";
    const DESCRIPTION: &'static str = "Read a template: its README, the parameters a workspace needs (type, default, options, \
         validation) and its presets. Call it before create_workspace.";

    async fn run(
        &self,
        ctx: &ToolContext,
        args: ReadTemplateArgs,
    ) -> Result<ToolResult, ToolResult> {
        let text = args.template_id.trim();
        if text.is_empty() {
            return Err(ToolResult::error("template_id is required"));
        }
        let id = Uuid::parse_str(text)
            .map_err(|e| ToolResult::error(format!("invalid template_id: {e}")))?;
        let template = Self::visible(ctx, id).await?;
        let store = ctx
            .store
            .as_ref()
            .ok_or_else(|| ToolResult::error(NO_DATABASE))?;
        let mut summary = Map::new();
        summary.insert("id".into(), template.id.to_string().into());
        summary.insert("name".into(), template.name.clone().into());
        summary.insert(
            "active_version_id".into(),
            template
                .active_version_id
                .map_or(Value::Null, |v| v.to_string().into()),
        );
        put_text(&mut summary, "display_name", &template.display_name);
        put_text(&mut summary, "description", template.description.trim());
        let mut result = Map::new();
        let version = match template.active_version_id {
            Some(v) => Some(
                store
                    .template_version(v)
                    .await
                    .map_err(|e| ToolResult::error(e.to_string()))?,
            ),
            None => None,
        };
        let imported = match &version {
            Some(v) => store
                .job(v.job_id)
                .await
                .is_ok_and(|j| j.status == JobStatus::Succeeded),
            None => false,
        };
        if let Some(v) = &version {
            put_text(&mut summary, "readme", &readme_text(&v.readme));
        }
        result.insert("template".into(), Value::Object(summary));
        let parameters: Vec<Value> = version
            .iter()
            .flat_map(|v| v.parameters.iter().map(parameter_json))
            .collect();
        result.insert("parameters".into(), parameters.into());
        result.insert(
            "parameters_note".into(),
            if imported {
                DEFAULTS_NOTE
            } else {
                IMPORTING_NOTE
            }
            .into(),
        );
        let presets: Vec<Value> = version
            .iter()
            .flat_map(|v| v.presets.iter())
            .map(|(id, p)| {
                let mut fields = Map::new();
                fields.insert("id".into(), id.to_string().into());
                fields.insert("name".into(), p.name.clone().into());
                fields.insert("default".into(), p.is_default.into());
                put_text(&mut fields, "description", &p.description);
                fields.insert(
                    "parameters".into(),
                    p.parameters
                        .iter()
                        .map(|(name, value)| json!({"name": name, "value": value}))
                        .collect::<Vec<_>>()
                        .into(),
                );
                Value::Object(fields)
            })
            .collect();
        if !presets.is_empty() {
            result.insert("presets".into(), presets.into());
        }
        Ok(ToolResult::json(&Value::Object(result)))
    }
}
