//! The administration side of the store (spec/engine.md §8.7 and `chatd.v1.AdminService`):
//! organizations, users, API token metadata and model configurations as the admin API reads and
//! writes them. The methods are on [`crate::workspace::WorkspaceStore`]; this module holds their
//! values.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Human-friendly name; empty = use `name`.
    pub display_name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user with their memberships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Unique login name.
    pub username: String,
    /// Unique email address; empty for users created without one.
    pub email: String,
    /// Full name; may be empty.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// The organizations the user belongs to, oldest membership first.
    pub organization_ids: Vec<Uuid>,
    /// Suspended users cannot authenticate.
    pub suspended: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When one of the user's tokens last authenticated a call.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// Unique email address.
    pub email: String,
    /// Full name.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// Organizations to join; each must exist.
    pub organization_ids: Vec<Uuid>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserChanges {
    /// New email address.
    pub email: Option<String>,
    /// New full name.
    pub name: Option<String>,
    /// New role (`admin` or `member`).
    pub role: Option<String>,
    /// New memberships, replacing the old ones; each organization must exist.
    pub organization_ids: Option<Vec<Uuid>>,
    /// Suspend or reactivate.
    pub suspended: Option<bool>,
}

/// Which users [`crate::workspace::WorkspaceStore::list_users`] returns, by username.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserListQuery {
    /// Only members of this organization.
    pub organization_id: Option<Uuid>,
    /// Case-insensitive substring of username, email or name; empty = all.
    pub query: String,
    /// Include suspended users.
    pub include_suspended: bool,
    /// Only users whose username sorts after this one (the previous page's last).
    pub after_username: Option<String>,
    /// Most users to return.
    pub limit: i64,
}

/// The metadata of an API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Id.
    pub id: Uuid,
    /// The user it authenticates as.
    pub user_id: Uuid,
    /// Name, unique among the user's valid tokens.
    pub name: String,
    /// The public beginning of the token, `chatd_<prefix>`.
    pub prefix: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When it stops working; `None` = never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a call.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A position in a newest-first listing: `(created_at, id)` of the previous page's last row.
pub type NewestFirstCursor = (DateTime<Utc>, Uuid);

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
#[derive(Debug, Clone, PartialEq)]
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

/// What [`WorkspaceStore::seed_model_config`](crate::workspace::WorkspaceStore::seed_model_config)
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
