//! The administration queries of `PgStore` (organizations, users, token metadata, model
//! configurations); `WorkspaceStore for PgStore` delegates to these functions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;
use crate::admin::{
    ApiToken, ModelConfigChanges, ModelConfigRecord, NewModelConfig, NewUser, NewestFirstCursor,
    Organization, Seeded, User, UserChanges, UserListQuery,
};
use crate::workspace::NewApiKey;

/// `%query%` for `ILIKE … ESCAPE '\'`, with the query's own wildcards escaped.
pub(super) fn like_pattern(query: &str) -> String {
    format!(
        "%{}%",
        query
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Whether `err` is a violation of a unique index.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Whether `err` is a violated CHECK constraint.
fn is_check_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23514"))
}

macro_rules! organization_columns {
    () => {
        "id, name, display_name, created_at, updated_at"
    };
}

#[derive(Debug, FromRow)]
struct OrganizationRow {
    id: Uuid,
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

pub(super) async fn add_organization(
    pool: &PgPool,
    name: &str,
    display_name: &str,
) -> Result<Organization, StoreError> {
    let row: OrganizationRow = sqlx::query_as(concat!(
        "INSERT INTO organizations (name, display_name) VALUES ($1, $2) RETURNING ",
        organization_columns!()
    ))
    .bind(name)
    .bind(display_name)
    .fetch_one(pool)
    .await
    .map_err(|err| {
        if is_unique_violation(&err) {
            StoreError::Conflict(format!("an organization named {name:?} already exists"))
        } else {
            StoreError::Query(err)
        }
    })?;
    Ok(row.into())
}

pub(super) async fn organization(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<Organization>, StoreError> {
    let row: Option<OrganizationRow> = sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organizations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Organization::from))
}

pub(super) async fn list_organizations(
    pool: &PgPool,
    only: Option<&[Uuid]>,
    after_name: Option<&str>,
    limit: i64,
) -> Result<Vec<Organization>, StoreError> {
    let rows: Vec<OrganizationRow> = sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organizations
          WHERE ($1::uuid[] IS NULL OR id = ANY($1)) AND ($2::text IS NULL OR name > $2)
          ORDER BY name, id LIMIT $3"
    ))
    .bind(only)
    .bind(after_name)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Organization::from).collect())
}

macro_rules! user_columns {
    () => {
        "u.id, u.username, u.email, u.display_name AS name, u.role, u.suspended,
    u.created_at, u.updated_at,
    ARRAY(SELECT m.organization_id FROM organization_members m
           WHERE m.user_id = u.id ORDER BY m.created_at, m.organization_id) AS organization_ids,
    (SELECT max(k.last_used_at) FROM api_keys k WHERE k.user_id = u.id) AS last_seen_at"
    };
}

#[derive(Debug, FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    email: String,
    name: String,
    role: String,
    suspended: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    organization_ids: Vec<Uuid>,
    last_seen_at: Option<DateTime<Utc>>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            email: r.email,
            name: r.name,
            role: r.role,
            organization_ids: r.organization_ids,
            suspended: r.suspended,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
        }
    }
}

async fn read_user(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u WHERE u.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(User::from))
}

/// Replaces a user's memberships; every organization must exist.
async fn set_memberships(
    conn: &mut PgConnection,
    user_id: Uuid,
    organization_ids: &[Uuid],
) -> Result<(), StoreError> {
    let missing: Option<Uuid> = sqlx::query_scalar(
        "SELECT o FROM unnest($1::uuid[]) AS o
          WHERE NOT EXISTS (SELECT 1 FROM organizations WHERE id = o) LIMIT 1",
    )
    .bind(organization_ids)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = missing {
        return Err(StoreError::NotFound(format!("organization {id} not found")));
    }
    sqlx::query(
        "DELETE FROM organization_members WHERE user_id = $1 AND NOT (organization_id = ANY($2))",
    )
    .bind(user_id)
    .bind(organization_ids)
    .execute(&mut *conn)
    .await?;
    // Kept memberships keep their age; new ones join in the order given.
    for organization_id in organization_ids {
        sqlx::query(
            "INSERT INTO organization_members (organization_id, user_id, created_at)
             VALUES ($1, $2, clock_timestamp())
             ON CONFLICT DO NOTHING",
        )
        .bind(organization_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A unique violation on `users` as the field it is about.
fn user_conflict(err: sqlx::Error, username: &str, email: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            if db.constraint() == Some("users_email_idx") {
                StoreError::Conflict(format!("the email address {email:?} is already in use"))
            } else {
                StoreError::Conflict(format!("the username {username:?} is already in use"))
            }
        }
        _ if is_check_violation(&err) => StoreError::InvalidInput("invalid user role".into()),
        _ => StoreError::Query(err),
    }
}

pub(super) async fn add_user(pool: &PgPool, user: &NewUser) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (username, email, display_name, role) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&user.username)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.role)
    .fetch_one(&mut *tx)
    .await
    .map_err(|err| user_conflict(err, &user.username, &user.email))?;
    set_memberships(&mut tx, id, &user.organization_ids).await?;
    let created = read_user(&mut tx, id).await?;
    tx.commit().await?;
    created.ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))
}

pub(super) async fn user(pool: &PgPool, id: Uuid) -> Result<Option<User>, StoreError> {
    let mut conn = pool.acquire().await?;
    read_user(&mut conn, id).await
}

pub(super) async fn list_users(
    pool: &PgPool,
    query: &UserListQuery,
) -> Result<Vec<User>, StoreError> {
    let rows: Vec<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u
          WHERE ($1::uuid IS NULL OR EXISTS (SELECT 1 FROM organization_members m
                                              WHERE m.user_id = u.id AND m.organization_id = $1))
            AND ($2 OR NOT u.suspended)
            AND (u.username ILIKE $3 OR u.email ILIKE $3 OR u.display_name ILIKE $3)
            AND ($4::text IS NULL OR u.username > $4)
          ORDER BY u.username LIMIT $5"
    ))
    .bind(query.organization_id)
    .bind(query.include_suspended)
    .bind(like_pattern(query.query.trim()))
    .bind(query.after_username.as_deref())
    .bind(query.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(User::from).collect())
}

pub(super) async fn update_user(
    pool: &PgPool,
    id: Uuid,
    changes: &UserChanges,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    let username: Option<String> =
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let username = username.ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))?;
    sqlx::query(
        "UPDATE users SET email = COALESCE($2, email), display_name = COALESCE($3, display_name),
                          role = COALESCE($4, role), suspended = COALESCE($5, suspended),
                          updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(changes.email.as_deref())
    .bind(changes.name.as_deref())
    .bind(changes.role.as_deref())
    .bind(changes.suspended)
    .execute(&mut *tx)
    .await
    .map_err(|err| user_conflict(err, &username, changes.email.as_deref().unwrap_or_default()))?;
    if let Some(organization_ids) = &changes.organization_ids {
        set_memberships(&mut tx, id, organization_ids).await?;
    }
    let updated = read_user(&mut tx, id).await?;
    tx.commit().await?;
    updated.ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))
}

macro_rules! token_columns {
    () => {
        "id, user_id, name, 'chatd_' || prefix AS prefix, created_at, expires_at, last_used_at, revoked_at"
    };
}

#[derive(Debug, FromRow)]
struct TokenRow {
    id: Uuid,
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

pub(super) async fn issue_api_token(
    pool: &PgPool,
    user_id: Uuid,
    name: &str,
    lifetime: Option<Duration>,
) -> Result<(NewApiKey, ApiToken), StoreError> {
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(StoreError::NotFound(format!("user {user_id} not found")));
    }
    let key = super::workspace::insert_api_key(&mut tx, user_id, name, lifetime).await?;
    let row: TokenRow = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_keys WHERE id = $1"
    ))
    .bind(key.id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((key, row.into()))
}

pub(super) async fn api_token(pool: &PgPool, id: Uuid) -> Result<Option<ApiToken>, StoreError> {
    let row: Option<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ApiToken::from))
}

pub(super) async fn list_api_tokens(
    pool: &PgPool,
    user_id: Uuid,
    after: Option<NewestFirstCursor>,
    limit: i64,
) -> Result<Vec<ApiToken>, StoreError> {
    let rows: Vec<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_keys
          WHERE user_id = $1 AND revoked_at IS NULL
            AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(user_id)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(ApiToken::from).collect())
}

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

pub(super) async fn create_provider(
    pool: &PgPool,
    kind: &str,
    api_key_ref: &str,
    base_url: &str,
) -> Result<Uuid, StoreError> {
    let mut conn = pool.acquire().await?;
    insert_provider(&mut conn, kind, api_key_ref, base_url).await
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
