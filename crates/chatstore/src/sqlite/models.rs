//! Model configurations and their provider rows on SQLite.
//!
//! Write transactions run one at a time, so a write transaction is the organization's lock that
//! PostgreSQL takes with `FOR UPDATE`: seeders and default changes of one organization never
//! interleave. Every row a call writes is stamped with one time from the process clock, taken
//! once the transaction holds the writer, as PostgreSQL stamps them with its transaction's time:
//! a seed finds the oldest matching configuration by creation time, and a configuration is never
//! changed before it was created.
//! Listings order by display name in Rust, because SQLite's `lower` folds ASCII only.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::identity::require_organization;
use super::{SqliteStore, stored_time};
use crate::StoreError;
use crate::models::*;
use crate::rows::{
    ModelConfigRow, RESOLVE_MODEL_CONFIG, ResolvedModelRow, SEED_MATCH, model_config_select,
};

async fn read_model_config(
    conn: &mut SqliteConnection,
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

/// A configuration that must exist (it was just found or written in this transaction).
async fn existing_model_config(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<ModelConfigRecord, StoreError> {
    read_model_config(conn, id)
        .await?
        .ok_or_else(|| model_config_not_found(id))
}

/// Inserts a provider row (a version 4 id, as PostgreSQL's `gen_random_uuid`); an unknown kind
/// is invalid input.
async fn insert_provider(
    conn: &mut SqliteConnection,
    kind: &str,
    api_key_ref: &str,
    base_url: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO chat_providers (id, provider, api_key_ref, base_url) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(kind)
    .bind(api_key_ref)
    .bind(base_url)
    .execute(&mut *conn)
    .await
    .map_err(|err| provider_check(err, kind))?;
    Ok(id)
}

/// Clears the organization's default (all but `keep`).
async fn clear_default(
    conn: &mut SqliteConnection,
    organization_id: Uuid,
    keep: Uuid,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chat_model_configs SET is_default = false, updated_at = $3
          WHERE organization_id = $1 AND is_default AND id <> $2",
    )
    .bind(organization_id)
    .bind(keep)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a configuration with its own provider row, in a write transaction that found the
/// organization.
async fn insert_model_config(
    conn: &mut SqliteConnection,
    c: &NewModelConfig,
    at: &str,
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
        clear_default(conn, c.organization_id, id, at).await?;
    }
    sqlx::query(
        "INSERT INTO chat_model_configs
            (id, organization_id, provider_id, model, display_name, enabled, is_default, context_limit,
             compression_threshold, max_output_tokens, temperature, options, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
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
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(model_config_check)?;
    existing_model_config(conn, id).await
}

#[async_trait]
impl ModelStore for SqliteStore {
    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError> {
        let row: Option<ResolvedModelRow> = sqlx::query_as(RESOLVE_MODEL_CONFIG)
            .bind(organization_id)
            .bind(preferred)
            .fetch_optional(self.db.reader())
            .await?;
        row.map(ModelConfig::from)
            .ok_or(StoreError::NoDefaultModelConfig)
    }

    async fn add_model_config(
        &self,
        config: &NewModelConfig,
    ) -> Result<ModelConfigRecord, StoreError> {
        config.check()?;
        let mut tx = self.db.writer().begin().await?;
        let at = stored_time(Utc::now());
        require_organization(&mut tx, config.organization_id).await?;
        let created = insert_model_config(&mut tx, config, &at).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn seed_model_config(&self, config: &NewModelConfig) -> Result<Seeded, StoreError> {
        config.check()?;
        // Seeders run one at a time (write transactions do): replicas starting together add
        // one row.
        let mut tx = self.db.writer().begin().await?;
        let at = stored_time(Utc::now());
        require_organization(&mut tx, config.organization_id).await?;
        let existing: Option<Uuid> = sqlx::query_scalar(SEED_MATCH)
            .bind(config.organization_id)
            .bind(&config.provider)
            .bind(&config.model)
            .bind(&config.base_url)
            .fetch_optional(&mut *tx)
            .await?;
        let seeded = match existing {
            None => Seeded::Created(insert_model_config(&mut tx, config, &at).await?),
            Some(id) => {
                let current = existing_model_config(&mut tx, id).await?;
                if current.api_key_ref == config.api_key_ref {
                    Seeded::Unchanged(current)
                } else {
                    // Only the key reference follows the seed; everything else is the admins'.
                    let provider_id = insert_provider(
                        &mut tx,
                        &config.provider,
                        &config.api_key_ref,
                        &config.base_url,
                    )
                    .await?;
                    sqlx::query(
                        "UPDATE chat_model_configs SET provider_id = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(provider_id)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                    Seeded::KeyChanged(existing_model_config(&mut tx, id).await?)
                }
            }
        };
        tx.commit().await?;
        Ok(seeded)
    }

    async fn model_config(&self, id: Uuid) -> Result<Option<ModelConfigRecord>, StoreError> {
        let mut conn = self.db.reader().acquire().await?;
        read_model_config(&mut conn, id).await
    }

    async fn list_model_configs(
        &self,
        organization_id: Uuid,
        enabled_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ModelConfigRecord>, StoreError> {
        // An organization has a handful of configurations: ordered here, where display names
        // fold to lower case beyond ASCII as PostgreSQL's `lower` does.
        let rows: Vec<ModelConfigRow> = sqlx::query_as(concat!(
            model_config_select!(),
            " WHERE m.organization_id = $1 AND NOT m.deleted AND (NOT $2 OR m.enabled)"
        ))
        .bind(organization_id)
        .bind(enabled_only)
        .fetch_all(self.db.reader())
        .await?;
        let mut configs: Vec<ModelConfigRecord> =
            rows.into_iter().map(ModelConfigRecord::from).collect();
        configs.sort_by_cached_key(|c| {
            let name = if c.display_name.is_empty() {
                &c.model
            } else {
                &c.display_name
            };
            (!c.is_default, name.to_lowercase(), c.id)
        });
        Ok(configs
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(0))
            .take(usize::try_from(limit).unwrap_or(0))
            .collect())
    }

    async fn update_model_config(
        &self,
        id: Uuid,
        changes: &ModelConfigChanges,
    ) -> Result<ModelConfigRecord, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let at = stored_time(Utc::now());
        let current = existing_model_config(&mut tx, id).await?;
        let ModelConfigUpdate {
            next,
            provider_changed,
            takes_default,
        } = changes.apply_to(&current)?;
        if takes_default {
            clear_default(&mut tx, next.organization_id, id, &at).await?;
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
                    options = $10, updated_at = $11
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
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(model_config_check)?;
        let updated = existing_model_config(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_model_config(&self, id: Uuid) -> Result<(), StoreError> {
        let deleted = sqlx::query(
            "UPDATE chat_model_configs SET deleted = true, is_default = false, updated_at = $2
              WHERE id = $1 AND NOT deleted",
        )
        .bind(id)
        .bind(stored_time(Utc::now()))
        .execute(self.db.writer())
        .await?
        .rows_affected();
        if deleted == 0 {
            return Err(model_config_not_found(id));
        }
        Ok(())
    }
}
