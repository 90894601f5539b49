//! Model configurations (spec/engine.md §8.7): what administrators create and seed, and the one
//! a turn resolves.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreError;
use crate::sql::is_check_violation;

/// A model configuration (spec/engine.md §8.7).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Provider row.
    pub provider_id: Uuid,
    /// Provider kind (`anthropic`, `openai`, `openai-compat`, ...).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Provider base URL; empty = the provider's default.
    pub base_url: String,
    /// Where the API key comes from (`env:NAME`, `file:PATH`).
    pub api_key_ref: String,
    /// Context window, tokens.
    pub context_limit: i64,
    /// Auto-compaction threshold, percent (100 disables).
    pub compression_threshold: i32,
    /// Most output tokens per call; `None` = the client's default.
    pub max_output_tokens: Option<i32>,
    /// Sampling temperature; `None` = the provider's default.
    pub temperature: Option<f64>,
    /// Provider options (`reasoning_effort`, `thinking`, anything the provider's body takes).
    pub options: serde_json::Value,
    /// The organization's default.
    pub is_default: bool,
}

/// A model configuration as administrators see it, with its provider settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfigRecord {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub organization_id: Uuid,
    /// Provider kind (`anthropic`, `openai`, `openai-compat`, ...).
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Name shown to users; empty = use `model`.
    pub display_name: String,
    /// Provider base URL; empty = the provider's public endpoint.
    pub base_url: String,
    /// Where the API key comes from (`env:NAME`, `file:PATH`); empty = no key.
    pub api_key_ref: String,
    /// Context window, tokens.
    pub context_limit: i64,
    /// Auto-compaction threshold, percent (100 disables).
    pub compression_threshold: i32,
    /// Most output tokens per call; `None` = the provider's default.
    pub max_output_tokens: Option<i32>,
    /// Sampling temperature; `None` = the provider's default.
    pub temperature: Option<f64>,
    /// Can be chosen for new turns.
    pub enabled: bool,
    /// The organization's default.
    pub is_default: bool,
    /// Provider options.
    pub options: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A model configuration to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewModelConfig {
    /// Organization.
    pub organization_id: Uuid,
    /// Provider kind.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Name shown to users.
    pub display_name: String,
    /// Provider base URL.
    pub base_url: String,
    /// API key reference.
    pub api_key_ref: String,
    /// Context window, tokens (> 0).
    pub context_limit: i64,
    /// Auto-compaction threshold, percent (0..=100).
    pub compression_threshold: i32,
    /// Most output tokens per call.
    pub max_output_tokens: Option<i32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Can be chosen.
    pub enabled: bool,
    /// Make it the organization's default (the first enabled configuration becomes the default
    /// regardless).
    pub is_default: bool,
    /// Provider options.
    pub options: serde_json::Value,
}

/// What [`ModelStore::seed_model_config`]
/// did.
#[derive(Debug, Clone, PartialEq)]
pub enum Seeded {
    /// No configuration had the seed's provider, model and base URL: this one was added.
    Created(ModelConfigRecord),
    /// One had them, with another API key reference, which now is the seed's.
    KeyChanged(ModelConfigRecord),
    /// One had them and the same key reference: nothing changed.
    Unchanged(ModelConfigRecord),
}

impl Seeded {
    /// The configuration, whatever happened to it.
    pub fn record(&self) -> &ModelConfigRecord {
        match self {
            Self::Created(r) | Self::KeyChanged(r) | Self::Unchanged(r) => r,
        }
    }
}

/// Changes to a model configuration; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfigChanges {
    /// New provider kind.
    pub provider: Option<String>,
    /// New model id.
    pub model: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New base URL.
    pub base_url: Option<String>,
    /// New API key reference.
    pub api_key_ref: Option<String>,
    /// New context window.
    pub context_limit: Option<i64>,
    /// New auto-compaction threshold.
    pub compression_threshold: Option<i32>,
    /// New output limit: `Some(None)` resets it to the provider's default.
    pub max_output_tokens: Option<Option<i32>>,
    /// New temperature: `Some(None)` resets it to the provider's default.
    pub temperature: Option<Option<f64>>,
    /// Enable or disable (disabling the default clears `is_default`).
    pub enabled: Option<bool>,
    /// Make it the default (must be enabled) or leave the organization without one.
    pub is_default: Option<bool>,
    /// New provider options.
    pub options: Option<serde_json::Value>,
}

/// A model configuration that does not exist or is deleted.
pub(crate) fn model_config_not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("model configuration {id} not found"))
}

/// What the CHECK constraints of a configuration row refuse.
const MODEL_CONFIG_LIMITS: &str = "context_limit must be > 0, compression_threshold within 0..100, \
     max_output_tokens > 0 and temperature ≥ 0";

/// A configuration write that broke a CHECK constraint, as invalid input.
pub(crate) fn model_config_check(err: sqlx::Error) -> StoreError {
    if is_check_violation(&err) {
        StoreError::InvalidInput(MODEL_CONFIG_LIMITS.into())
    } else {
        StoreError::Query(err)
    }
}

/// A provider row insert that broke its CHECK constraint: the kind is unknown.
pub(crate) fn provider_check(err: sqlx::Error, kind: &str) -> StoreError {
    if is_check_violation(&err) {
        StoreError::InvalidInput(format!("unknown provider kind {kind:?}"))
    } else {
        StoreError::Query(err)
    }
}

/// Refuses a temperature that is not a number, as the CHECK does a negative one: PostgreSQL's
/// CHECK would let NaN through (it sorts NaN above every number) and SQLite would store it as
/// NULL, so neither may see it.
fn check_temperature(temperature: Option<f64>) -> Result<(), StoreError> {
    if temperature.is_some_and(f64::is_nan) {
        return Err(StoreError::InvalidInput(MODEL_CONFIG_LIMITS.into()));
    }
    Ok(())
}

impl NewModelConfig {
    /// Refuses what no backend stores: a disabled default, a temperature that is not a number.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.is_default && !self.enabled {
            return Err(StoreError::InvalidInput(
                "a disabled model configuration cannot be the default".into(),
            ));
        }
        check_temperature(self.temperature)
    }

    /// Whether it becomes the organization's default: when asked, or as the organization's only
    /// one; never while disabled.
    pub(crate) fn becomes_default(&self, organization_has_default: bool) -> bool {
        self.enabled && (self.is_default || !organization_has_default)
    }
}

/// What [`ModelStore::update_model_config`] writes.
#[derive(Debug)]
pub(crate) struct ModelConfigUpdate {
    /// The configuration with the changes applied (its times are the old ones).
    pub(crate) next: ModelConfigRecord,
    /// A provider setting is given: the configuration gets a provider row of its own.
    pub(crate) provider_changed: bool,
    /// It becomes the default: the organization's current default stops being it.
    pub(crate) takes_default: bool,
}

impl ModelConfigChanges {
    /// The changes applied to `current`. Disabling the default clears `is_default`; making a
    /// disabled configuration the default is [`StoreError::Precondition`].
    pub(crate) fn apply_to(
        &self,
        current: &ModelConfigRecord,
    ) -> Result<ModelConfigUpdate, StoreError> {
        let enabled = self.enabled.unwrap_or(current.enabled);
        let is_default = match self.is_default {
            Some(true) if !enabled => {
                return Err(StoreError::Precondition(format!(
                    "model configuration {} is disabled; enable it to make it the default",
                    current.id
                )));
            }
            Some(wanted) => wanted,
            None => current.is_default && enabled,
        };
        let temperature = self.temperature.unwrap_or(current.temperature);
        check_temperature(temperature)?;
        let provider_changed =
            self.provider.is_some() || self.base_url.is_some() || self.api_key_ref.is_some();
        let pick = |new: &Option<String>, old: &String| new.clone().unwrap_or_else(|| old.clone());
        let next = ModelConfigRecord {
            provider: pick(&self.provider, &current.provider),
            model: pick(&self.model, &current.model),
            display_name: pick(&self.display_name, &current.display_name),
            base_url: pick(&self.base_url, &current.base_url),
            api_key_ref: pick(&self.api_key_ref, &current.api_key_ref),
            context_limit: self.context_limit.unwrap_or(current.context_limit),
            compression_threshold: self
                .compression_threshold
                .unwrap_or(current.compression_threshold),
            max_output_tokens: self.max_output_tokens.unwrap_or(current.max_output_tokens),
            temperature,
            enabled,
            is_default,
            options: self
                .options
                .clone()
                .unwrap_or_else(|| current.options.clone()),
            ..current.clone()
        };
        Ok(ModelConfigUpdate {
            takes_default: is_default && !current.is_default,
            provider_changed,
            next,
        })
    }
}

#[async_trait]
pub trait ModelStore: Send + Sync {
    /// The configuration a turn uses (spec/engine.md §12.2): `preferred` if it belongs to the
    /// organization and is enabled and not deleted, else the organization's default, else
    /// [`StoreError::NoDefaultModelConfig`].
    async fn resolve_model_config(
        &self,
        organization_id: Uuid,
        preferred: Option<Uuid>,
    ) -> Result<ModelConfig, StoreError>;
    /// Creates a model configuration with its own provider row. It becomes the organization's
    /// default when asked, or when it is enabled and the organization has none; the previous
    /// default stops being it in the same transaction. An unknown organization is
    /// [`StoreError::NotFound`]; a disabled default or an unknown provider kind
    /// [`StoreError::InvalidInput`].
    async fn add_model_config(
        &self,
        config: &NewModelConfig,
    ) -> Result<ModelConfigRecord, StoreError>;
    /// Makes sure the organization has a configuration with `config`'s provider, model and base
    /// URL (how operators seed models from the daemon's configuration). A missing one is added
    /// as by [`add_model_config`](Self::add_model_config); an existing one only takes the API
    /// key reference (its other settings are the administrators'). Seeders of one organization
    /// run one at a time, so replicas starting together add one configuration, not two. An
    /// unknown organization is [`StoreError::NotFound`].
    async fn seed_model_config(&self, config: &NewModelConfig) -> Result<Seeded, StoreError>;
    /// Reads a non-deleted model configuration; `None` when there is none.
    async fn model_config(&self, id: Uuid) -> Result<Option<ModelConfigRecord>, StoreError>;
    /// An organization's non-deleted model configurations (only enabled ones with
    /// `enabled_only`): the default first, then by display name (the model when it has none),
    /// then id; skipping `offset`.
    async fn list_model_configs(
        &self,
        organization_id: Uuid,
        enabled_only: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<ModelConfigRecord>, StoreError>;
    /// Changes a model configuration. Provider settings are copied to a new provider row (rows
    /// may be shared). Disabling the default clears `is_default`; making a disabled
    /// configuration the default is [`StoreError::Precondition`]; a missing or deleted one
    /// [`StoreError::NotFound`].
    async fn update_model_config(
        &self,
        id: Uuid,
        changes: &ModelConfigChanges,
    ) -> Result<ModelConfigRecord, StoreError>;
    /// Soft-deletes a model configuration (a deleted default leaves the organization without
    /// one); a missing or already deleted one is [`StoreError::NotFound`].
    async fn delete_model_config(&self, id: Uuid) -> Result<(), StoreError>;
}
