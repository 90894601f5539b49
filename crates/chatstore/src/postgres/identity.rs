//! Organizations, users, API tokens and authentication.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::PgStore;
use crate::StoreError;
use crate::identity::*;
use crate::rows::{OrganizationRow, TokenRow, organization_columns, token_columns};
use crate::sql::{is_check_violation, is_unique_violation, like_pattern};
use crate::types::NewestFirstCursor;

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
        "u.id, u.username, u.email, u.display_name AS name, u.role, u.suspended, u.custom_prompt,
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
    custom_prompt: String,
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
            custom_prompt: r.custom_prompt,
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
        return Err(organization_not_found(id));
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
                          custom_prompt = COALESCE($6, custom_prompt), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(changes.email.as_deref())
    .bind(changes.name.as_deref())
    .bind(changes.role.as_deref())
    .bind(changes.suspended)
    .bind(changes.custom_prompt.as_deref())
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
    let key = insert_api_key(&mut tx, user_id, name, lifetime).await?;
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

/// Inserts an API token for a user. Both parts of the token come from the OS's random source
/// (UUID v4); only a hash of the secret is stored.
pub(super) async fn insert_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    name: &str,
    lifetime: Option<Duration>,
) -> Result<NewApiKey, StoreError> {
    let (prefix, secret) = new_token_parts();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, name, prefix, secret_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(&prefix)
    .bind(token_hash(&secret))
    .bind(lifetime.map(|l| l.as_secs_f64()))
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::Conflict(format!("the user already has a valid token named {name:?}"))
        }
        _ => StoreError::Query(err),
    })?;
    Ok(NewApiKey {
        id,
        token: format!("chatd_{prefix}_{secret}"),
    })
}

#[async_trait]
impl IdentityStore for PgStore {
    async fn bootstrap_admin(
        &self,
        organization: &str,
        username: &str,
        lifetime: Option<Duration>,
    ) -> Result<Option<Bootstrapped>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // One bootstrap at a time across replicas; the second sees the first's user.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('chatd_bootstrap_admin'))")
            .execute(&mut *tx)
            .await?;
        let any_user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await?;
        if any_user {
            return Ok(None);
        }
        let organization_id: Uuid = sqlx::query_scalar(
            "INSERT INTO organizations (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(organization)
        .fetch_one(&mut *tx)
        .await?;
        let user_id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (username, role) VALUES ($1, 'admin') RETURNING id",
        )
        .bind(username)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2)")
            .bind(organization_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let key = insert_api_key(&mut tx, user_id, "bootstrap", lifetime).await?;
        tx.commit().await?;
        Ok(Some(Bootstrapped {
            organization_id,
            user_id,
            key,
        }))
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        let Some((prefix, secret)) = token.strip_prefix("chatd_").and_then(|t| t.split_once('_'))
        else {
            return Ok(None);
        };
        let row: Option<(Uuid, Uuid, String, Vec<u8>, Vec<Uuid>)> = sqlx::query_as(
            "SELECT k.id, u.id, u.role, k.secret_hash,
                    ARRAY(SELECT m.organization_id FROM organization_members m
                           WHERE m.user_id = u.id ORDER BY m.created_at, m.organization_id)
               FROM api_keys k JOIN users u ON u.id = k.user_id
              WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
                AND NOT u.suspended",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        let Some((key_id, user_id, role, hash, organizations)) = row else {
            return Ok(None);
        };
        if !same_hash(&hash, &token_hash(secret)) {
            return Ok(None);
        }
        // At most once a minute: a busy token does not write on every call.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
              WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
            .bind(key_id)
            .execute(self.pool())
            .await?;
        Ok(Some(Caller {
            user_id,
            role,
            key_id,
            organizations,
        }))
    }

    async fn revoke_api_key(&self, key_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1")
            .bind(key_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn username(&self, user_id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::InvalidInput(format!("user {user_id} not found")))
    }

    async fn add_organization(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError> {
        add_organization(self.pool(), name, display_name).await
    }

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        organization(self.pool(), id).await
    }

    async fn list_organizations(
        &self,
        only: Option<&[Uuid]>,
        after_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Organization>, StoreError> {
        list_organizations(self.pool(), only, after_name, limit).await
    }

    async fn add_user(&self, user: &NewUser) -> Result<User, StoreError> {
        add_user(self.pool(), user).await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        user(self.pool(), id).await
    }

    async fn list_users(&self, query: &UserListQuery) -> Result<Vec<User>, StoreError> {
        list_users(self.pool(), query).await
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> Result<User, StoreError> {
        update_user(self.pool(), id, changes).await
    }

    async fn issue_api_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<(NewApiKey, ApiToken), StoreError> {
        issue_api_token(self.pool(), user_id, name, lifetime).await
    }

    async fn api_token(&self, id: Uuid) -> Result<Option<ApiToken>, StoreError> {
        api_token(self.pool(), id).await
    }

    async fn list_api_tokens(
        &self,
        user_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError> {
        list_api_tokens(self.pool(), user_id, after, limit).await
    }
}
