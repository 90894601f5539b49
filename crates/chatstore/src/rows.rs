//! Row shapes that both SQL backends read the same way (sqlx's `FromRow` is generic over the
//! database), with the column lists that produce them.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::identity::{ApiToken, Organization};
use crate::models::{ModelConfig, ModelConfigRecord};

macro_rules! organization_columns {
    () => {
        "id, name, display_name, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct OrganizationRow {
    pub(crate) id: Uuid,
    name: String,
    display_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<OrganizationRow> for Organization {
    fn from(r: OrganizationRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            display_name: r.display_name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! token_columns {
    () => {
        "id, user_id, name, 'chatd_' || prefix AS prefix, created_at, expires_at, last_used_at, revoked_at"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct TokenRow {
    pub(crate) id: Uuid,
    user_id: Uuid,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A model configuration with its provider's settings: `m` is the configuration, `p` its
/// provider row.
macro_rules! model_config_select {
    () => {
        "SELECT m.id, m.organization_id, p.provider, m.model, m.display_name, p.base_url,
                p.api_key_ref, m.context_limit, m.compression_threshold, m.max_output_tokens,
                m.temperature, m.enabled, m.is_default, m.options, m.created_at, m.updated_at
           FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id"
    };
}

#[derive(Debug, FromRow)]
pub(crate) struct ModelConfigRow {
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

/// The configuration a turn uses (`$1` the organization, `$2` the preferred configuration or
/// NULL): the preferred one if it is usable, else the default. The same statement in both
/// dialects.
pub(crate) const RESOLVE_MODEL_CONFIG: &str = "
    SELECT m.id, m.organization_id, m.provider_id, p.provider, m.model, p.base_url, p.api_key_ref,
           m.context_limit, m.compression_threshold, m.options, m.is_default
      FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
     WHERE m.organization_id = $1 AND m.enabled AND NOT m.deleted AND p.enabled
       AND (m.id = $2 OR m.is_default)
     ORDER BY (m.id = $2) DESC NULLS LAST
     LIMIT 1";

/// The configuration a seed stands for (`$1` the organization, `$2` the provider kind, `$3` the
/// model, `$4` the base URL): the oldest non-deleted one with them. The same statement in both
/// dialects.
pub(crate) const SEED_MATCH: &str = "
    SELECT m.id FROM chat_model_configs m JOIN chat_providers p ON p.id = m.provider_id
     WHERE m.organization_id = $1 AND NOT m.deleted
       AND p.provider = $2 AND m.model = $3 AND p.base_url = $4
     ORDER BY m.created_at, m.id
     LIMIT 1";

#[derive(Debug, FromRow)]
pub(crate) struct ResolvedModelRow {
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

impl From<ResolvedModelRow> for ModelConfig {
    fn from(r: ResolvedModelRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.organization_id,
            provider_id: r.provider_id,
            provider: r.provider,
            model: r.model,
            base_url: r.base_url,
            api_key_ref: r.api_key_ref,
            context_limit: r.context_limit,
            compression_threshold: r.compression_threshold,
            options: r.options,
            is_default: r.is_default,
        }
    }
}

pub(crate) use {model_config_select, organization_columns, token_columns};
