//! Organizations, users, API tokens and authentication on SQLite. Memberships are read with a
//! query of their own (SQLite has no arrays) in insertion order, which is the order they were
//! given in: kept memberships keep their place when a user's organizations are replaced.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};
use uuid::Uuid;

use super::{SqliteStore, ago, later, stored_time};
use crate::StoreError;
use crate::identity::{
    ApiToken, Bootstrapped, Caller, IdentityStore, NewApiKey, NewUser, Organization, User,
    UserChanges, UserListQuery, new_token_parts, organization_not_found, same_hash, token_hash,
};
use crate::rows::{OrganizationRow, TokenRow, organization_columns, token_columns};
use crate::sql::{is_check_violation, is_unique_violation, like_pattern};
use crate::types::NewestFirstCursor;

macro_rules! user_columns {
    () => {
        "u.id, u.username, u.email, u.display_name AS name, u.role, u.suspended, u.custom_prompt, u.created_at,
         u.updated_at, (SELECT max(k.last_used_at) FROM api_keys k WHERE k.user_id = u.id) AS last_seen_at"
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
    last_seen_at: Option<DateTime<Utc>>,
}

impl UserRow {
    fn into_user(self, organization_ids: Vec<Uuid>) -> User {
        User {
            id: self.id,
            username: self.username,
            email: self.email,
            name: self.name,
            role: self.role,
            organization_ids,
            suspended: self.suspended,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_seen_at: self.last_seen_at,
            custom_prompt: self.custom_prompt,
        }
    }
}

/// A user's organizations, oldest membership first.
async fn memberships(conn: &mut SqliteConnection, user_id: Uuid) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT organization_id FROM organization_members WHERE user_id = $1 ORDER BY rowid",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?)
}

async fn read_user(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u WHERE u.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => {
            let organizations = memberships(conn, id).await?;
            Ok(Some(row.into_user(organizations)))
        }
        None => Ok(None),
    }
}

/// NOT_FOUND when the organization does not exist.
pub(super) async fn require_organization(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<(), StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(organization_not_found(id));
    }
    Ok(())
}

/// Replaces a user's memberships; every organization must exist.
async fn set_memberships(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    organization_ids: &[Uuid],
) -> Result<(), StoreError> {
    for id in organization_ids {
        require_organization(conn, *id).await?;
    }
    for kept in memberships(conn, user_id).await? {
        if !organization_ids.contains(&kept) {
            sqlx::query(
                "DELETE FROM organization_members WHERE user_id = $1 AND organization_id = $2",
            )
            .bind(user_id)
            .bind(kept)
            .execute(&mut *conn)
            .await?;
        }
    }
    for organization_id in organization_ids {
        sqlx::query(
            "INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2)
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
    if is_unique_violation(&err) {
        if err.to_string().contains("email") {
            StoreError::Conflict(format!("the email address {email:?} is already in use"))
        } else {
            StoreError::Conflict(format!("the username {username:?} is already in use"))
        }
    } else if is_check_violation(&err) {
        StoreError::InvalidInput("invalid user role".into())
    } else {
        StoreError::Query(err)
    }
}

/// Inserts an API token for a user. Both parts of the token come from the OS's random source
/// (UUID v4); only a hash of the secret is stored.
async fn insert_api_key(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    name: &str,
    lifetime: Option<Duration>,
) -> Result<NewApiKey, StoreError> {
    let (prefix, secret) = new_token_parts();
    let id = Uuid::new_v4();
    sqlx::query(concat!(
        "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, ",
        now_shifted!("$7"),
        ")"
    ))
    .bind(id)
    .bind(user_id)
    .bind(name)
    .bind(&prefix)
    .bind(token_hash(&secret))
    .bind(stored_time(Utc::now()))
    .bind(lifetime.map(later))
    .execute(&mut *conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err) {
            StoreError::Conflict(format!("the user already has a valid token named {name:?}"))
        } else {
            StoreError::Query(err)
        }
    })?;
    Ok(NewApiKey {
        id,
        token: format!("chatd_{prefix}_{secret}"),
    })
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn bootstrap_admin(
        &self,
        organization: &str,
        username: &str,
        lifetime: Option<Duration>,
    ) -> Result<Option<Bootstrapped>, StoreError> {
        // Write transactions run one at a time: a second bootstrap sees the first's user.
        let mut tx = self.db.writer().begin().await?;
        let any_user: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await?;
        if any_user {
            return Ok(None);
        }
        let organization_id: Uuid = sqlx::query_scalar(
            "INSERT INTO organizations (name, id) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        )
        .bind(organization)
        .bind(Uuid::new_v4())
        .fetch_one(&mut *tx)
        .await?;
        let user_id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (username, role, id) VALUES ($1, 'admin', $2) RETURNING id",
        )
        .bind(username)
        .bind(Uuid::new_v4())
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
        let mut conn = self.db.reader().acquire().await?;
        let row: Option<(Uuid, Uuid, String, Vec<u8>)> = sqlx::query_as(concat!(
            "SELECT k.id, u.id, u.role, k.secret_hash
               FROM api_keys k JOIN users u ON u.id = k.user_id
              WHERE k.prefix = $1 AND k.revoked_at IS NULL
                AND (k.expires_at IS NULL OR k.expires_at > ",
            now!(),
            ") AND NOT u.suspended"
        ))
        .bind(prefix)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((key_id, user_id, role, hash)) = row else {
            return Ok(None);
        };
        if !same_hash(&hash, &token_hash(secret)) {
            return Ok(None);
        }
        let organizations = memberships(&mut conn, user_id).await?;
        drop(conn);
        // At most once a minute: a busy token does not write on every call.
        sqlx::query(concat!(
            "UPDATE api_keys SET last_used_at = ",
            now!(),
            " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < ",
            now_shifted!("$2"),
            ")"
        ))
        .bind(key_id)
        .bind(ago(Duration::from_secs(60)))
        .execute(self.db.writer())
        .await?;
        Ok(Some(Caller {
            user_id,
            role,
            key_id,
            organizations,
        }))
    }

    async fn revoke_api_key(&self, key_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ",
            now!(),
            ") WHERE id = $1"
        ))
        .bind(key_id)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    async fn username(&self, user_id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.db.reader())
            .await?
            .ok_or_else(|| StoreError::InvalidInput(format!("user {user_id} not found")))
    }

    async fn add_organization(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError> {
        let row: OrganizationRow = sqlx::query_as(concat!(
            "INSERT INTO organizations (name, display_name, id) VALUES ($1, $2, $3) RETURNING ",
            organization_columns!()
        ))
        .bind(name)
        .bind(display_name)
        .bind(Uuid::new_v4())
        .fetch_one(self.db.writer())
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

    async fn organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        let row: Option<OrganizationRow> = sqlx::query_as(concat!(
            "SELECT ",
            organization_columns!(),
            " FROM organizations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(row.map(Organization::from))
    }

    async fn list_organizations(
        &self,
        only: Option<&[Uuid]>,
        after_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Organization>, StoreError> {
        // `only` is a caller's few organizations: filtered here, then limited.
        let rows: Vec<OrganizationRow> = sqlx::query_as(concat!(
            "SELECT ",
            organization_columns!(),
            " FROM organizations WHERE ($1 IS NULL OR name > $1) ORDER BY name, id"
        ))
        .bind(after_name)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows
            .into_iter()
            .filter(|r| only.is_none_or(|ids| ids.contains(&r.id)))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(Organization::from)
            .collect())
    }

    async fn add_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (username, email, display_name, role, id) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.role)
        .bind(Uuid::new_v4())
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| user_conflict(err, &user.username, &user.email))?;
        set_memberships(&mut tx, id, &user.organization_ids).await?;
        let created = read_user(&mut tx, id).await?;
        tx.commit().await?;
        created.ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let mut conn = self.db.reader().acquire().await?;
        read_user(&mut conn, id).await
    }

    async fn list_users(&self, query: &UserListQuery) -> Result<Vec<User>, StoreError> {
        let mut conn = self.db.reader().acquire().await?;
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u
              WHERE ($1 IS NULL OR EXISTS (SELECT 1 FROM organization_members m
                                            WHERE m.user_id = u.id AND m.organization_id = $1))
                AND ($2 OR NOT u.suspended)
                AND (u.username LIKE $3 ESCAPE '\\' OR u.email LIKE $3 ESCAPE '\\'
                     OR u.display_name LIKE $3 ESCAPE '\\')
                AND ($4 IS NULL OR u.username > $4)
              ORDER BY u.username LIMIT $5"
        ))
        .bind(query.organization_id)
        .bind(query.include_suspended)
        .bind(like_pattern(query.query.trim()))
        .bind(query.after_username.as_deref())
        .bind(query.limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in rows {
            let organizations = memberships(&mut conn, row.id).await?;
            users.push(row.into_user(organizations));
        }
        Ok(users)
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> Result<User, StoreError> {
        let mut tx = self.db.writer().begin().await?;
        let username: Option<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let username =
            username.ok_or_else(|| StoreError::NotFound(format!("user {id} not found")))?;
        sqlx::query(concat!(
            "UPDATE users SET email = COALESCE($2, email), display_name = COALESCE($3, display_name),
                              role = COALESCE($4, role), suspended = COALESCE($5, suspended),
                              custom_prompt = COALESCE($6, custom_prompt), updated_at = ",
            now!(),
            " WHERE id = $1"
        ))
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

    async fn issue_api_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<(NewApiKey, ApiToken), StoreError> {
        let mut tx = self.db.writer().begin().await?;
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

    async fn api_token(&self, id: Uuid) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(row.map(ApiToken::from))
    }

    async fn list_api_tokens(
        &self,
        user_id: Uuid,
        after: Option<NewestFirstCursor>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_keys
              WHERE user_id = $1 AND revoked_at IS NULL
                AND ($2 IS NULL OR (created_at, id) < ($2, $3))
              ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(user_id)
        .bind(after.map(|(at, _)| stored_time(at)))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }
}
