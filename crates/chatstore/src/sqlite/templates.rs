//! Templates, versions, parameters and presets on SQLite; a push records its import job.
//! Version times come from the process clock ([`stored_time`]), so versions pushed within one
//! millisecond still list newest first.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::workspaces::insert_job;
use super::{SqliteStore, id_list, stored_time};
use crate::StoreError;
use crate::rows::{
    ParameterRow, PresetRow, TemplateCountRow, TemplateRow, VersionRow, parameter_columns,
    template_columns, version_columns,
};
use crate::sql::like_pattern;
use crate::templates::*;
use crate::types::NewestFirstCursor;
use crate::workspaces::NewJob;

/// Reads a template version with its parameters and presets (and its files when `files`) on
/// `conn`; `None` when it does not exist.
async fn read_template_version(
    conn: &mut SqliteConnection,
    id: Uuid,
    files: bool,
) -> Result<Option<TemplateVersion>, StoreError> {
    let row: Option<VersionRow> = sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        ", CASE WHEN $2 THEN files ELSE 'null' END AS files FROM template_versions WHERE id = $1"
    ))
    .bind(id)
    .bind(files)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(version) = row else {
        return Ok(None);
    };
    let parameters: Vec<ParameterRow> = sqlx::query_as(concat!(
        "SELECT ",
        parameter_columns!(),
        " FROM template_version_parameters WHERE template_version_id = $1
          ORDER BY display_order, name"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let preset_rows: Vec<PresetRow> = sqlx::query_as(
        "SELECT id, name, is_default, description FROM template_version_presets
          WHERE template_version_id = $1 ORDER BY name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut presets = Vec::with_capacity(preset_rows.len());
    for preset in preset_rows {
        let values: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM template_version_preset_parameters WHERE preset_id = $1
              ORDER BY name",
        )
        .bind(preset.id)
        .fetch_all(&mut *conn)
        .await?;
        presets.push(preset.into_preset(values));
    }
    Ok(Some(version.into_version(parameters, presets)))
}

/// Stores a version's parameters and presets.
async fn insert_parameters_and_presets(
    conn: &mut SqliteConnection,
    version_id: Uuid,
    v: &NewTemplateVersion,
) -> Result<(), StoreError> {
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
    for preset in &v.presets {
        let preset_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO template_version_presets (id, template_version_id, name, is_default, description)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(preset_id)
        .bind(version_id)
        .bind(&preset.name)
        .bind(preset.is_default)
        .bind(&preset.description)
        .execute(&mut *conn)
        .await?;
        for (name, value) in &preset.parameters {
            sqlx::query(
                "INSERT INTO template_version_preset_parameters (preset_id, name, value)
                 VALUES ($1, $2, $3)",
            )
            .bind(preset_id)
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn push_template_version(
        &self,
        v: NewTemplateVersion,
    ) -> Result<PushedVersion, StoreError> {
        // Write transactions run one at a time: a concurrent push of the same new template
        // finds this one's template.
        let mut tx = self.db.writer().begin().await?;
        let existing: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, active_version_id FROM templates
              WHERE organization_id = $1 AND lower(name) = lower($2) AND NOT deleted",
        )
        .bind(v.organization_id)
        .bind(&v.template_name)
        .fetch_optional(&mut *tx)
        .await?;
        let template_created = existing.is_none();
        let (template_id, had_active) = match existing {
            Some((id, active)) => (id, active.is_some()),
            None => {
                let id = Uuid::new_v4();
                sqlx::query(
                    "INSERT INTO templates (id, organization_id, name, display_name, description, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(v.organization_id)
                .bind(&v.template_name)
                .bind(&v.display_name)
                .bind(&v.description)
                .bind(v.created_by)
                .execute(&mut *tx)
                .await?;
                (id, false)
            }
        };
        let now = stored_time(Utc::now());
        let version_id = Uuid::new_v4();
        let job_id = insert_job(
            &mut tx,
            v.organization_id,
            NewJob::Import { version_id },
            &now,
        )
        .await?;
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, name, readme, job_id, has_external_agent, manifest,
                                            files, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        insert_parameters_and_presets(&mut tx, version_id, &v).await?;
        if v.activates(had_active) {
            sqlx::query(concat!(
                "UPDATE templates SET active_version_id = $2, updated_at = ",
                now!(),
                " WHERE id = $1"
            ))
            .bind(template_id)
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.job_changed(job_id);
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
        .fetch_optional(self.db.reader())
        .await?;
        row.map(Template::from)
            .ok_or_else(|| template_not_found(id))
    }

    async fn list_templates(
        &self,
        organization_id: Uuid,
        name_query: &str,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let rows: Vec<TemplateRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            " FROM templates
              WHERE organization_id = $1 AND NOT deleted AND deprecated = ''
                AND name LIKE $2 ESCAPE '\\'"
        ))
        .bind(organization_id)
        .bind(like_pattern(name_query))
        .fetch_all(self.db.reader())
        .await?;
        let templates: Vec<Template> = rows.into_iter().map(Template::from).collect();
        let ids: Vec<Uuid> = templates.iter().map(|t| t.id).collect();
        let counts = sqlx::query_as::<_, (Uuid, i64)>(concat!(
            "SELECT template_id, count(DISTINCT owner_id) FROM workspaces
              WHERE template_id IN ",
            ids_in!("$1"),
            " AND NOT deleted GROUP BY template_id"
        ))
        .bind(id_list(&ids))
        .fetch_all(self.db.reader())
        .await;
        Ok(by_active_developers(templates, counts))
    }

    async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, StoreError> {
        // One read transaction: the version, its parameters and presets from one snapshot.
        let mut tx = self.db.reader().begin().await?;
        let version = read_template_version(&mut tx, id, true).await?;
        tx.commit().await?;
        version.ok_or_else(|| version_not_found(id))
    }

    async fn update_template(
        &self,
        id: Uuid,
        settings: TemplateSettings,
    ) -> Result<Template, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        if let Some(version) = settings.active_version_id {
            let belongs: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM template_versions WHERE id = $1 AND template_id = $2)",
            )
            .bind(version)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if !belongs {
                return Err(not_a_version_of(version, id));
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
                    updated_at = ",
            now!(),
            " WHERE id = $1
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
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(Template::from)
            .ok_or_else(|| template_not_found(id))
    }

    async fn list_organization_templates(
        &self,
        organization_ids: &[Uuid],
        name_query: &str,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TemplateListing>, StoreError> {
        let (after_name, after_id) = after.unzip();
        let rows: Vec<TemplateCountRow> = sqlx::query_as(concat!(
            "SELECT ",
            template_columns!(),
            ", (SELECT count(DISTINCT w.owner_id) FROM workspaces w
                 WHERE w.template_id = t.id AND NOT w.deleted) AS active_developers
               FROM templates t
              WHERE organization_id IN ",
            ids_in!("$1"),
            " AND NOT deleted AND name LIKE $2 ESCAPE '\\'
                AND ($3 IS NULL OR (name, id) > ($3, $4))
              ORDER BY name, id LIMIT $5"
        ))
        .bind(id_list(organization_ids))
        .bind(like_pattern(name_query.trim()))
        .bind(after_name)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(TemplateListing::from).collect())
    }

    async fn active_developers(&self, template_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(DISTINCT owner_id) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(template_id)
        .fetch_one(self.db.reader())
        .await?)
    }

    async fn list_template_versions(
        &self,
        template_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<TemplateVersion>, StoreError> {
        let mut tx = self.db.reader().begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM template_versions
              WHERE template_id = $1 AND ($2 IS NULL OR (created_at, id) < ($2, $3))
              ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(template_id)
        .bind(after.map(|(at, _)| stored_time(at)))
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
        let mut tx = self.db.writer().begin().await?;
        let found: Option<bool> = sqlx::query_scalar("SELECT deleted FROM templates WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(no_template_to_delete(id));
        }
        let in_use: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE template_id = $1 AND NOT deleted",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if in_use > 0 {
            return Err(template_in_use(id, in_use));
        }
        let row: TemplateRow = sqlx::query_as(concat!(
            "UPDATE templates SET deleted = 1, updated_at = ",
            now!(),
            " WHERE id = $1 RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }
}
