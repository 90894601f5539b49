//! Model configurations and their provider rows.

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::identity::organization_not_found;
use crate::models::*;
use crate::rows::{
    ModelConfigRow, RESOLVE_MODEL_CONFIG, ResolvedModelRow, SEED_MATCH, model_config_select,
};

async fn read_model_config(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ModelConfigRecord>, StoreError> {
    let row: Option<ModelConfigRow> = sqlx::query_as(concat!(
        model_config_select!(),
        " WHERE m.id = $1 AND NOT m.deleted"
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
    .map_err(|err| provider_check(err, kind))
}

/// Locks the organization's row, serialising default changes; NOT_FOUND when it does not exist.
async fn lock_organization(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    found.map(|_| ()).ok_or_else(|| organization_not_found(id))
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

pub(super) async fn add_model_config(
    pool: &PgPool,
    c: &NewModelConfig,
) -> Result<ModelConfigRecord, StoreError> {
    c.check()?;
    let mut tx = pool.begin().await?;
    lock_organization(&mut tx, c.organization_id).await?;
    let created = insert_model_config(&mut tx, c).await?;
    tx.commit().await?;
    Ok(created)
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
    let is_default = c.becomes_default(has_default);
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
        .ok_or_else(|| model_config_not_found(id))
}

pub(super) async fn seed_model_config(
    pool: &PgPool,
    c: &NewModelConfig,
) -> Result<Seeded, StoreError> {
    c.check()?;
    let mut tx = pool.begin().await?;
    // The organization's lock serialises seeders: replicas starting together add one row.
    lock_organization(&mut tx, c.organization_id).await?;
    let existing: Option<Uuid> = sqlx::query_scalar(SEED_MATCH)
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
        model_config_select!(),
        " WHERE m.organization_id = $1 AND NOT m.deleted AND (NOT $2 OR m.enabled)
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
    let mut tx = pool.begin().await?;
    let organization_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT organization_id FROM chat_model_configs WHERE id = $1 AND NOT deleted",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let organization_id = organization_id.ok_or_else(|| model_config_not_found(id))?;
    lock_organization(&mut tx, organization_id).await?;
    let current = existing_model_config(&mut tx, id).await?;
    let ModelConfigUpdate {
        next,
        provider_changed,
        takes_default,
    } = changes.apply_to(&current)?;
    if takes_default {
        clear_default(&mut tx, next.organization_id, id).await?;
    }
    if provider_changed {
        // Provider rows may be shared: the configuration gets its own copy with the changes.
        let provider_id =
            insert_provider(&mut tx, &next.provider, &next.api_key_ref, &next.base_url).await?;
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
    .bind(&next.model)
    .bind(&next.display_name)
    .bind(next.context_limit)
    .bind(next.compression_threshold)
    .bind(next.max_output_tokens)
    .bind(next.temperature)
    .bind(next.enabled)
    .bind(next.is_default)
    .bind(&next.options)
    .execute(&mut *tx)
    .await
    .map_err(model_config_check)?;
    let updated = existing_model_config(&mut tx, id).await?;
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
        return Err(model_config_not_found(id));
    }
    Ok(())
}

#[async_trait]
impl ModelStore for PgStore {
    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError> {
        let row: Option<ResolvedModelRow> = sqlx::query_as(RESOLVE_MODEL_CONFIG)
            .bind(organization_id)
            .bind(preferred)
            .fetch_optional(self.pool())
            .await?;
        row.map(ModelConfig::from)
            .ok_or(StoreError::NoDefaultModelConfig)
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
