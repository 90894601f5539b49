//! Identity: organizations, users with their memberships, API tokens and who a token belongs to
//! (spec/engine.md §8.7, `chatd.v1.AdminService`), and the first start's admin bootstrap.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreError;
use crate::types::NewestFirstCursor;

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
    /// The user's own instructions for the model (empty = none).
    pub custom_prompt: String,
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
    /// New instructions for the model (empty clears them).
    pub custom_prompt: Option<String>,
}

/// Which users [`IdentityStore::list_users`] returns, by username.
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

/// A freshly created API token. The plaintext is shown once; only a hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key's id.
    pub id: Uuid,
    /// `chatd_<prefix>_<secret>`: give it to the user, then forget it.
    pub token: String,
}

/// What [`IdentityStore::bootstrap_admin`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The organization.
    pub organization_id: Uuid,
    /// The admin.
    pub user_id: Uuid,
    /// The admin's token.
    pub key: NewApiKey,
}

/// Who an API token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: Uuid,
    /// `admin` or `member`.
    pub role: String,
    /// The key used.
    pub key_id: Uuid,
    /// The organizations the user belongs to, oldest membership first.
    pub organizations: Vec<Uuid>,
}

/// An organization that does not exist.
pub(crate) fn organization_not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("organization {id} not found"))
}

/// The hash stored for a token or secret (SHA-256).
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// A new token's public prefix and secret, from the OS's random source (UUID v4); the token is
/// `chatd_<prefix>_<secret>`.
pub(crate) fn new_token_parts() -> (String, String) {
    let prefix = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    (prefix, secret)
}

/// Compares without an early exit, so the time taken says nothing about where they differ.
pub(crate) fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// First start: on a database without any user, creates the organization, an admin user in
    /// it and an API token for them (valid for `lifetime`, or for good with `None`), atomically
    /// and once across concurrent callers. `None` when a user already exists.
    async fn bootstrap_admin(
        &self,
        organization: &str,
        username: &str,
        lifetime: Option<Duration>,
    ) -> Result<Option<Bootstrapped>, StoreError>;
    /// The caller a token belongs to; `None` for an unknown, revoked or expired token or a
    /// suspended user.
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError>;
    /// Revokes a token.
    async fn revoke_api_key(&self, key_id: Uuid) -> Result<(), StoreError>;
    /// A user's username.
    async fn username(&self, user_id: Uuid) -> Result<String, StoreError>;
    /// Creates an organization; a name in use is [`StoreError::Conflict`].
    async fn add_organization(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError>;
    /// Reads an organization; `None` when it does not exist.
    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError>;
    /// Organizations by name, then id: all of them, or only those in `only`; after the name
    /// `after_name` (the previous page's last).
    async fn list_organizations(
        &self,
        only: Option<&[Uuid]>,
        after_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Organization>, StoreError>;
    /// Creates a user with memberships in one transaction. A username or email in use is
    /// [`StoreError::Conflict`]; an unknown organization is [`StoreError::NotFound`].
    async fn add_user(&self, user: &NewUser) -> Result<User, StoreError>;
    /// Reads a user with their memberships; `None` when they do not exist.
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// Users by username.
    async fn list_users(&self, query: &UserListQuery) -> Result<Vec<User>, StoreError>;
    /// Changes a user (memberships are replaced when given) in one transaction. An unknown user
    /// or organization is [`StoreError::NotFound`]; an email in use is [`StoreError::Conflict`].
    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> Result<User, StoreError>;
    /// Creates a named API token for a user and returns its plaintext (once) with its metadata.
    /// A name used by another of the user's valid tokens is [`StoreError::Conflict`]; an
    /// unknown user is [`StoreError::NotFound`].
    async fn issue_api_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<(NewApiKey, ApiToken), StoreError>;
    /// A token's metadata (revoked ones too); `None` when it does not exist.
    async fn api_token(&self, id: Uuid) -> Result<Option<ApiToken>, StoreError>;
    /// A user's non-revoked tokens, newest first, after `after`.
    async fn list_api_tokens(
        &self,
        user_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError>;
}
