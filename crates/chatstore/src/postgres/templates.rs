//! Templates, versions, parameters and presets; a push records its import job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::PgStore;
use super::workspaces::insert_job;
use crate::StoreError;
use crate::sql::like_pattern;
use crate::templates::*;
use crate::types::NewestFirstCursor;

macro_rules! template_columns {
    () => {
        "id, organization_id, name, display_name, description, deleted, deprecated, active_version_id,
         require_active_version, chat_enabled, default_ttl_ms, created_by, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
struct TemplateRow {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    display_name: String,
    description: String,
    deleted: bool,
    deprecated: String,
    active_version_id: Option<Uuid>,
    require_active_version: bool,
    chat_enabled: bool,
    default_ttl_ms: i64,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(r: TemplateRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            name: r.name,
            display_name: r.display_name,
            description: r.description,
            deleted: r.deleted,
            deprecated: r.deprecated,
            active_version_id: r.active_version_id,
            require_active_version: r.require_active_version,
            chat_enabled: r.chat_enabled,
            default_ttl_ms: r.default_ttl_ms,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, FromRow)]
struct ParameterRow {
    name: String,
    display_name: String,
    description: String,
    kind: String,
    mutable: bool,
    default_value: Option<String>,
    options: serde_json::Value,
    display_order: i32,
    form_type: String,
    ephemeral: bool,
    validation_regex: String,
    validation_min: Option<i32>,
    validation_max: Option<i32>,
    validation_error: String,
}

#[derive(Debug, FromRow)]
struct TemplateCountRow {
    #[sqlx(flatten)]
    template: TemplateRow,
    active_developers: i64,
}

#[derive(Debug, FromRow)]
struct VersionRow {
    id: Uuid,
    template_id: Uuid,
    name: String,
    message: String,
    readme: String,
    job_id: Uuid,
    has_external_agent: bool,
    manifest: serde_json::Value,
    files: serde_json::Value,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
}

/// Reads a template version with its parameters and presets (and its files when `files`) on
/// `conn`; `None` when it does not exist.
async fn read_template_version(
    conn: &mut PgConnection,
    id: Uuid,
    files: bool,
) -> Result<Option<TemplateVersion>, StoreError> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT id, template_id, name, message, readme, job_id, has_external_agent, manifest,
                    CASE WHEN $2 THEN files ELSE 'null'::jsonb END AS files, created_by, created_at
               FROM template_versions WHERE id = $1",
    )
    .bind(id)
    .bind(files)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(v) = row else {
        return Ok(None);
    };
    let parameters: Vec<ParameterRow> = sqlx::query_as(
            "SELECT name, display_name, description, type AS kind, mutable, default_value, options, display_order,
                    form_type, ephemeral, validation_regex, validation_min, validation_max, validation_error
               FROM template_version_parameters WHERE template_version_id = $1 ORDER BY display_order, name",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let preset_rows: Vec<(Uuid, String, bool, String)> = sqlx::query_as(
        "SELECT id, name, is_default, description FROM template_version_presets
              WHERE template_version_id = $1 ORDER BY name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut presets = Vec::new();
    for (preset_id, preset_name, is_default, description) in preset_rows {
        let values: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, value FROM template_version_preset_parameters WHERE preset_id = $1 ORDER BY name",
            )
            .bind(preset_id)
            .fetch_all(&mut *conn)
            .await?;
        presets.push((
            preset_id,
            TemplatePreset {
                name: preset_name,
                is_default,
                description,
                parameters: values,
            },
        ));
    }
    Ok(Some(TemplateVersion {
        id: v.id,
        template_id: v.template_id,
        name: v.name,
        message: v.message,
        readme: v.readme,
        job_id: v.job_id,
        has_external_agent: v.has_external_agent,
        manifest: v.manifest,
        files: v.files,
        created_by: v.created_by,
        created_at: v.created_at,
        parameters: parameters
            .into_iter()
            .map(|p| TemplateParameter {
                name: p.name,
                display_name: p.display_name,
                description: p.description,
                kind: p.kind,
                mutable: p.mutable,
                default_value: p.default_value,
                options: p.options,
                display_order: p.display_order,
                form_type: p.form_type,
                ephemeral: p.ephemeral,
                validation_regex: p.validation_regex,
                validation_min: p.validation_min,
                validation_max: p.validation_max,
                validation_error: p.validation_error,
            })
            .collect(),
        presets,
    }))
}

#[async_trait]
impl TemplateStore for PgStore {
    async fn push_template_version(
        &self,
        v: NewTemplateVersion,
    ) -> Result<PushedVersion, StoreError> {
        let mut tx = self.pool().begin().await?;
        let conn: &mut PgConnection = &mut tx;
        let existing: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, active_version_id FROM templates
              WHERE organization_id = $1 AND lower(name) = lower($2) AND NOT deleted FOR UPDATE",
        )
        .bind(v.organization_id)
        .bind(&v.template_name)
        .fetch_optional(&mut *conn)
        .await?;
        let template_created = existing.is_none();
        let (template_id, had_active) = match existing {
            Some((id, active)) => (id, active.is_some()),
            None => {
                let id: Uuid = sqlx::query_scalar(
                    "INSERT INTO templates (organization_id, name, display_name, description, created_by)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(v.organization_id)
                .bind(&v.template_name)
                .bind(&v.display_name)
                .bind(&v.description)
                .bind(v.created_by)
                .fetch_one(&mut *conn)
                .await?;
                (id, false)
            }
        };
        let version_id = Uuid::new_v4();
        let job_id = insert_job(
            conn,
            v.organization_id,
            "template_version_import",
            serde_json::json!({"template_version_id": version_id}),
        )
        .await?;
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, name, readme, job_id, has_external_agent, manifest, files, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(version_id)
        .bind(template_id)
        .bind(&v.version_name)
        .bind(&v.readme)
        .bind(job_id)
        .bind(v.has_external_agent)
        .bind(&v.manifest)
        .bind(&v.files)
        .bind(v.created_by)
        .execute(&mut *conn)
        .await?;
        for p in &v.parameters {
            sqlx::query(
                "INSERT INTO template_version_parameters
                    (template_version_id, name, display_name, description, type, mutable, default_value, options,
                     display_order, form_type, ephemeral, validation_regex, validation_min, validation_max,
                     validation_error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(version_id)
            .bind(&p.name)
            .bind(&p.display_name)
            .bind(&p.description)
            .bind(&p.kind)
            .bind(p.mutable)
            .bind(&p.default_value)
            .bind(&p.options)
            .bind(p.display_order)
            .bind(&p.form_type)
            .bind(p.ephemeral)
            .bind(&p.validation_regex)
            .bind(p.validation_min)
            .bind(p.validation_max)
            .bind(&p.validation_error)
            .execute(&mut *conn)
            .await?;
        }
        for preset_spec in &v.presets {
            let preset: Uuid = sqlx::query_scalar(
                "INSERT INTO template_version_presets (template_version_id, name, is_default, description)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(version_id)
            .bind(&preset_spec.name)
            .bind(preset_spec.is_default)
            .bind(&preset_spec.description)
            .fetch_one(&mut *conn)
            .await?;
            for (param, value) in &preset_spec.parameters {
                sqlx::query("INSERT INTO template_version_preset_parameters (preset_id, name, value) VALUES ($1, $2, $3)")
                    .bind(preset)
                    .bind(param)
                    .bind(value)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        // The first version of a template is active at once; later ones when asked.
        if v.activate || !had_active {
            sqlx::query(
                "UPDATE templates SET active_version_id = $2, updated_at = now() WHERE id = $1",
            )
            .bind(template_id)
            .bind(version_id)
            .execute(&mut *conn)
            .await?;
        }
        tx.commit().await?;
        Ok(PushedVersion {
            template_id,
            version_id,
            job_id,
            template_created,
        })
    }

    async fn template(&self, id: Uuid) -> Result<Template, StoreError> {
        let row: Option<TemplateRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            " FROM templates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(Template::from)
            .ok_or_else(|| StoreError::InvalidInput(format!("template {id} not found")))
    }

    async fn list_templates(
        &self,
        organization_id: Uuid,
        name_query: &str,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let pattern = like_pattern(name_query);
        let rows: Vec<TemplateRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            " FROM templates
              WHERE organization_id = $1 AND NOT deleted AND deprecated = '' AND name ILIKE $2"
        ))
        .bind(organization_id)
        .bind(pattern)
        .fetch_all(self.pool())
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        // Counting is an ornament of the listing: when it fails, every count is 0.
        let counts: std::collections::HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT template_id, count(DISTINCT owner_id) FROM workspaces
              WHERE template_id = ANY($1) AND NOT deleted GROUP BY template_id",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "counting active developers failed; listing without counts");
            Vec::new()
        })
        .into_iter()
        .collect();
        let mut listing: Vec<TemplateListing> = rows
            .into_iter()
            .map(|r| TemplateListing {
                active_developers: counts.get(&r.id).copied().unwrap_or(0),
                template: r.into(),
            })
            .collect();
        listing.sort_by(|a, b| {
            b.active_developers
                .cmp(&a.active_developers)
                .then_with(|| a.template.name.cmp(&b.template.name))
                .then_with(|| a.template.id.cmp(&b.template.id))
        });
        Ok(listing)
    }

    async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let version = read_template_version(&mut tx, id, true).await?;
        tx.commit().await?;
        version.ok_or_else(|| StoreError::InvalidInput(format!("template version {id} not found")))
    }

    async fn update_template(
        &self,
        id: Uuid,
        settings: TemplateSettings,
    ) -> Result<Template, StoreError> {
        if let Some(version) = settings.active_version_id {
            let belongs: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM template_versions WHERE id = $1 AND template_id = $2)",
            )
            .bind(version)
            .bind(id)
            .fetch_one(self.pool())
            .await?;
            if !belongs {
                return Err(StoreError::InvalidInput(format!(
                    "version {version} is not a version of template {id}"
                )));
            }
        }
        let row: Option<TemplateRow> = sqlx::query_as(concat!(
            "UPDATE templates
                SET require_active_version = COALESCE($2, require_active_version),
                    chat_enabled = COALESCE($3, chat_enabled),
                    deprecated = COALESCE($4, deprecated),
                    active_version_id = COALESCE($5, active_version_id),
                    display_name = COALESCE($6, display_name),
                    description = COALESCE($7, description),
                    default_ttl_ms = COALESCE($8, default_ttl_ms),
                    updated_at = now()
              WHERE id = $1
              RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .bind(settings.require_active_version)
        .bind(settings.chat_enabled)
        .bind(&settings.deprecated)
        .bind(settings.active_version_id)
        .bind(&settings.display_name)
        .bind(&settings.description)
        .bind(settings.default_ttl_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(Template::from)
            .ok_or_else(|| StoreError::InvalidInput(format!("template {id} not found")))
    }

    async fn list_organization_templates(
        &self,
        organization_ids: &[Uuid],
        name_query: &str,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let (after_name, after_id) = after.unzip();
        let rows: Vec<(TemplateRow, i64)> = sqlx::query_as::<_, TemplateCountRow>(concat!(
            "SELECT ",
            template_columns!(),
            ", (SELECT count(DISTINCT w.owner_id) FROM workspaces w
                 WHERE w.template_id = t.id AND NOT w.deleted) AS active_developers
               FROM templates t
              WHERE organization_id = ANY($1) AND NOT deleted AND name ILIKE $2
                AND ($3::text IS NULL OR (name, id) > ($3, $4))
              ORDER BY name, id LIMIT $5"
        ))
        .bind(organization_ids)
        .bind(like_pattern(name_query.trim()))
        .bind(after_name)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(|r| (r.template, r.active_developers))
        .collect();
        Ok(rows
            .into_iter()
            .map(|(template, active_developers)| TemplateListing {
                template: template.into(),
                active_developers,
            })
            .collect())
    }

    async fn active_developers(&self, template_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(DISTINCT owner_id) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(template_id)
        .fetch_one(self.pool())
        .await?)
    }

    async fn list_template_versions(
        &self,
        template_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM template_versions
              WHERE template_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
              ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(template_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut versions = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(version) = read_template_version(&mut tx, id, false).await? {
                versions.push(version);
            }
        }
        tx.commit().await?;
        Ok(versions)
    }

    async fn delete_template(&self, id: Uuid) -> Result<Template, StoreError> {
        let mut tx = self.pool().begin().await?;
        let found: Option<bool> =
            sqlx::query_scalar("SELECT deleted FROM templates WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("template {id} not found")));
        }
        let in_use: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if in_use > 0 {
            return Err(StoreError::Precondition(format!(
                "template {id} is used by {in_use} workspace(s); delete them first"
            )));
        }
        let row: TemplateRow = sqlx::query_as(concat!(
            "UPDATE templates SET deleted = true, updated_at = now() WHERE id = $1 RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }
}
