//! Model configurations and their provider rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::models::*;
use crate::sql::is_check_violation;

macro_rules! model_config_columns {
    () => {
        "m.id, m.organization_id, p.provider, m.model, m.display_name,
    p.base_url, p.api_key_ref, m.context_limit, m.compression_threshold, m.max_output_tokens,
    m.temperature, m.enabled, m.is_default, m.options, m.created_at, m.updated_at"
    };
}

#[derive(Debug, FromRow)]
struct ModelConfigRow {
    id: Uuid,
    organization_id: Uuid,
    provider: String,
    model: String,
    display_name: String,
    base_url: String,
    api_key_ref: String,
    context_limit: i64,
    compression_threshold: i32,
    max_output_tokens: Option<i32>,
    temperature: Option<f64>,
    enabled: bool,
    is_default: bool,
    options: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ModelConfigRow> for ModelConfigRecord {
    fn from(r: ModelConfigRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            provider: r.provider,
            model: r.model,
            display_name: r.display_name,
            base_url: r.base_url,
            api_key_ref: r.api_key_ref,
            context_limit: r.context_limit,
            compression_threshold: r.compression_threshold,
            max_output_tokens: r.max_output_tokens,
            temperature: r.temperature,
            enabled: r.enabled,
            is_default: r.is_default,
            options: r.options,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

async fn read_model_config(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ModelConfigRecord>, StoreError> {
    let row: Option<ModelConfigRow> = sqlx::query_as(concat!(
        "SELECT ",
        model_config_columns!(),
        " FROM chat_model_configs m
           JOIN chat_providers p ON p.id = m.provider_id
          WHERE m.id = $1 AND NOT m.deleted"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(ModelConfigRecord::from))
}

/// Inserts a provider row; an unknown kind is invalid input.
async fn insert_provider(
    conn: &mut PgConnection,
    kind: &str,
    api_key_ref: &str,
    base_url: &str,
) -> Result<Uuid, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO chat_providers (provider, api_key_ref, base_url) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(kind)
    .bind(api_key_ref)
    .bind(base_url)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| {
        if is_check_violation(&err) {
            StoreError::InvalidInput(format!("unknown provider kind {kind:?}"))
        } else {
            StoreError::Query(err)
        }
    })
}

/// Locks the organization's row, serialising default changes; NOT_FOUND when it does not exist.
async fn lock_organization(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("organization {id} not found")))
}

/// Clears the organization's default (all but `keep`).
async fn clear_default(
    conn: &mut PgConnection,
    organization_id: Uuid,
    keep: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chat_model_configs SET is_default = false, updated_at = now()
          WHERE organization_id = $1 AND is_default AND id <> $2",
    )
    .bind(organization_id)
    .bind(keep)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn model_config_check(err: sqlx::Error) -> StoreError {
    if is_check_violation(&err) {
        StoreError::InvalidInput(
            "context_limit must be > 0, compression_threshold within 0..100, max_output_tokens \
             > 0 and temperature ≥ 0"
                .into(),
        )
    } else {
        StoreError::Query(err)
    }
}

pub(super) async fn add_model_config(
    pool: &PgPool,
    c: &NewModelConfig,
) -> Result<ModelConfigRecord, StoreError> {
    check_new_default(c)?;
    let mut tx = pool.begin().await?;
    lock_organization(&mut tx, c.organization_id).await?;
    let created = insert_model_config(&mut tx, c).await?;
    tx.commit().await?;
    Ok(created)
}

fn check_new_default(c: &NewModelConfig) -> Result<(), StoreError> {
    if c.is_default && !c.enabled {
        return Err(StoreError::InvalidInput(
            "a disabled model configuration cannot be the default".into(),
        ));
    }
    Ok(())
}

/// Inserts a configuration with its own provider row; the caller holds the organization's lock.
async fn insert_model_config(
    conn: &mut PgConnection,
    c: &NewModelConfig,
) -> Result<ModelConfigRecord, StoreError> {
    let has_default: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM chat_model_configs
                         WHERE organization_id = $1 AND is_default AND NOT deleted)",
    )
    .bind(c.organization_id)
    .fetch_one(&mut *conn)
    .await?;
    let is_default = c.enabled && (c.is_default || !has_default);
    let provider_id = insert_provider(conn, &c.provider, &c.api_key_ref, &c.base_url).await?;
    let id = Uuid::new_v4();
    if is_default {
        clear_default(conn, c.organization_id, id).await?;
    }
    sqlx::query(
        "INSERT INTO chat_model_configs
            (id, organization_id, provider_id, model, display_name, enabled, is_default, context_limit,
             compression_threshold, max_output_tokens, temperature, options)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(c.organization_id)
    .bind(provider_id)
    .bind(&c.model)
    .bind(&c.display_name)
    .bind(c.enabled)
    .bind(is_default)
    .bind(c.context_limit)
    .bind(c.compression_threshold)
    .bind(c.max_output_tokens)
    .bind(c.temperature)
    .bind(&c.options)
    .execute(&mut *conn)
    .await
    .map_err(model_config_check)?;
    existing_model_config(conn, id).await
}

/// A configuration that must exist (it was just found or written in this transaction).
async fn existing_model_config(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<ModelConfigRecord, StoreError> {
    read_model_config(conn, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("model configuration {id} not found")))
}

pub(super) async fn seed_model_config(
    pool: &PgPool,
    c: &NewModelConfig,
) -> Result<Seeded, StoreError> {
    check_new_default(c)?;
    let mut tx = pool.begin().await?;
    // The organization's lock serialises seeders: replicas starting together add one row.
    lock_organization(&mut tx, c.organization_id).await?;
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT m.id FROM chat_model_configs m
           JOIN chat_providers p ON p.id = m.provider_id
          WHERE m.organization_id = $1 AND NOT m.deleted
            AND p.provider = $2 AND m.model = $3 AND p.base_url = $4
          ORDER BY m.created_at, m.id
          LIMIT 1",
    )
    .bind(c.organization_id)
    .bind(&c.provider)
    .bind(&c.model)
    .bind(&c.base_url)
    .fetch_optional(&mut *tx)
    .await?;
    let seeded = match existing {
        None => Seeded::Created(insert_model_config(&mut tx, c).await?),
        Some(id) => {
            let current = existing_model_config(&mut tx, id).await?;
            if current.api_key_ref == c.api_key_ref {
                Seeded::Unchanged(current)
            } else {
                // Only the key reference follows the seed; everything else is the admins'.
                let provider_id =
                    insert_provider(&mut tx, &c.provider, &c.api_key_ref, &c.base_url).await?;
                sqlx::query(
                    "UPDATE chat_model_configs SET provider_id = $2, updated_at = now() WHERE id = $1",
                )
                .bind(id)
                .bind(provider_id)
                .execute(&mut *tx)
                .await?;
                Seeded::KeyChanged(existing_model_config(&mut tx, id).await?)
            }
        }
    };
    tx.commit().await?;
    Ok(seeded)
}

pub(super) async fn model_config(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<ModelConfigRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    read_model_config(&mut conn, id).await
}

pub(super) async fn list_model_configs(
    pool: &PgPool,
    organization_id: Uuid,
    enabled_only: bool,
    offset: i64,
    limit: i64,
) -> Result<Vec<ModelConfigRecord>, StoreError> {
    let rows: Vec<ModelConfigRow> = sqlx::query_as(concat!(
        "SELECT ",
        model_config_columns!(),
        " FROM chat_model_configs m
           JOIN chat_providers p ON p.id = m.provider_id
          WHERE m.organization_id = $1 AND NOT m.deleted AND (NOT $2 OR m.enabled)
          ORDER BY m.is_default DESC, lower(COALESCE(NULLIF(m.display_name, ''), m.model)), m.id
         OFFSET $3 LIMIT $4"
    ))
    .bind(organization_id)
    .bind(enabled_only)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(ModelConfigRecord::from).collect())
}

pub(super) async fn update_model_config(
    pool: &PgPool,
    id: Uuid,
    changes: &ModelConfigChanges,
) -> Result<ModelConfigRecord, StoreError> {
    let not_found = || StoreError::NotFound(format!("model configuration {id} not found"));
    let mut tx = pool.begin().await?;
    let organization_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT organization_id FROM chat_model_configs WHERE id = $1 AND NOT deleted",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    lock_organization(&mut tx, organization_id.ok_or_else(not_found)?).await?;
    let current = read_model_config(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    let enabled = changes.enabled.unwrap_or(current.enabled);
    let is_default = match changes.is_default {
        Some(true) if !enabled => {
            return Err(StoreError::Precondition(format!(
                "model configuration {id} is disabled; enable it to make it the default"
            )));
        }
        Some(wanted) => wanted,
        None => current.is_default && enabled,
    };
    if is_default && !current.is_default {
        clear_default(&mut tx, current.organization_id, id).await?;
    }
    let provider_changed = [
        changes.provider.as_ref(),
        changes.base_url.as_ref(),
        changes.api_key_ref.as_ref(),
    ]
    .iter()
    .any(Option::is_some);
    if provider_changed {
        // Provider rows may be shared: the configuration gets its own copy with the changes.
        let provider_id = insert_provider(
            &mut tx,
            changes.provider.as_deref().unwrap_or(&current.provider),
            changes
                .api_key_ref
                .as_deref()
                .unwrap_or(&current.api_key_ref),
            changes.base_url.as_deref().unwrap_or(&current.base_url),
        )
        .await?;
        sqlx::query("UPDATE chat_model_configs SET provider_id = $2 WHERE id = $1")
            .bind(id)
            .bind(provider_id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE chat_model_configs
            SET model = $2, display_name = $3, context_limit = $4, compression_threshold = $5,
                max_output_tokens = $6, temperature = $7, enabled = $8, is_default = $9,
                options = $10, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(changes.model.as_deref().unwrap_or(&current.model))
    .bind(
        changes
            .display_name
            .as_deref()
            .unwrap_or(&current.display_name),
    )
    .bind(changes.context_limit.unwrap_or(current.context_limit))
    .bind(
        changes
            .compression_threshold
            .unwrap_or(current.compression_threshold),
    )
    .bind(
        changes
            .max_output_tokens
            .unwrap_or(current.max_output_tokens),
    )
    .bind(changes.temperature.unwrap_or(current.temperature))
    .bind(enabled)
    .bind(is_default)
    .bind(changes.options.as_ref().unwrap_or(&current.options))
    .execute(&mut *tx)
    .await
    .map_err(model_config_check)?;
    let updated = read_model_config(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    tx.commit().await?;
    Ok(updated)
}

pub(super) async fn delete_model_config(pool: &PgPool, id: Uuid) -> Result<(), StoreError> {
    let deleted = sqlx::query(
        "UPDATE chat_model_configs SET deleted = true, is_default = false, updated_at = now()
          WHERE id = $1 AND NOT deleted",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound(format!(
            "model configuration {id} not found"
        )));
    }
    Ok(())
}

#[derive(Debug, FromRow)]
struct ResolvedModelRow {
    id: Uuid,
    organization_id: Uuid,
    provider_id: Uuid,
    provider: String,
    model: String,
    base_url: String,
    api_key_ref: String,
    context_limit: i64,
    compression_threshold: i32,
    options: serde_json::Value,
    is_default: bool,
}

#[async_trait]
impl ModelStore for PgStore {
    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError> {
        let row: Option<ResolvedModelRow> = sqlx::query_as(
            "SELECT m.id, m.organization_id, m.provider_id, p.provider, m.model, p.base_url, p.api_key_ref,
                    m.context_limit, m.compression_threshold, m.options, m.is_default
               FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
              WHERE m.organization_id = $1 AND m.enabled AND NOT m.deleted AND p.enabled
                AND (m.id = $2 OR m.is_default)
              ORDER BY (m.id = $2) DESC NULLS LAST
              LIMIT 1",
        )
        .bind(organization_id)
        .bind(preferred)
        .fetch_optional(self.pool())
        .await?;
        let row = row.ok_or(StoreError::NoDefaultModelConfig)?;
        Ok(ModelConfig {
            id: row.id,
            organization_id: row.organization_id,
            provider_id: row.provider_id,
            provider: row.provider,
            model: row.model,
            base_url: row.base_url,
            api_key_ref: row.api_key_ref,
            context_limit: row.context_limit,
            compression_threshold: row.compression_threshold,
            options: row.options,
            is_default: row.is_default,
        })
    }

    async fn add_model_config(
        &self,
        config: &NewModelConfig,
    ) -> Result<ModelConfigRecord, StoreError> {
        add_model_config(self.pool(), config).await
    }

    async fn seed_model_config(&self, config: &NewModelConfig) -> Result<Seeded, StoreError> {
        seed_model_config(self.pool(), config).await
    }

    async fn model_config(&self, id: Uuid) -> Result<Option<ModelConfigRecord>, StoreError> {
        model_config(self.pool(), id).await
    }

    async fn list_model_configs(
        &self,
        organization_id: Uuid,
        enabled_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ModelConfigRecord>, StoreError> {
        list_model_configs(self.pool(), organization_id, enabled_only, offset, limit).await
    }

    async fn update_model_config(
        &self,
        id: Uuid,
        changes: &ModelConfigChanges,
    ) -> Result<ModelConfigRecord, StoreError> {
        update_model_config(self.pool(), id, changes).await
    }

    async fn delete_model_config(&self, id: Uuid) -> Result<(), StoreError> {
        delete_model_config(self.pool(), id).await
    }
}
