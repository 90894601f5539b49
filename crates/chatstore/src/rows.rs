//! Row shapes that both SQL backends read the same way (sqlx's `FromRow` is generic over the
//! database), with the column lists that produce them.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::identity::{ApiToken, Organization};

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

pub(crate) use {organization_columns, token_columns};
