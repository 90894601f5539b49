//! Test support: a fresh, migrated PostgreSQL database per test, dropped afterwards, and
//! [`Fixtures`] that make test data through the store's public operations.
//!
//! The server comes from `TEST_DATABASE_URL` (`scripts/test` sets it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each [`TestDatabase`] creates a uniquely
//! named database on it, so tests never see each other's state or that of an earlier run.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
// Database names are generated here (a UUID), never taken from input, so formatting them into
// SQL is safe.
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Executor as _};
use uuid::Uuid;

use crate::identity::{NewApiKey, NewUser};
use crate::models::NewModelConfig;
use crate::postgres::{PoolConfig, connect, migrate};
use crate::{IdentityStore, ModelStore, StoreError};

/// The server tests use when `TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test. Call [`TestDatabase::drop_database`] at the end; a
/// database left behind by a crashed test is harmless (its name is unique).
#[derive(Debug)]
pub struct TestDatabase {
    /// A pool on the new database, migrated.
    pub pool: PgPool,
    /// The new database's URL.
    pub url: String,
    name: String,
    server: PgConnectOptions,
}

impl TestDatabase {
    /// Creates and migrates a new database on the server at `TEST_DATABASE_URL` (else
    /// [`DEFAULT_TEST_SERVER`]).
    pub async fn create() -> Result<Self, StoreError> {
        let server_url =
            std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
        Self::create_on(&server_url).await
    }

    /// Creates and migrates a new database on the server at `server_url` (any database of it).
    pub async fn create_on(server_url: &str) -> Result<Self, StoreError> {
        let server = PgConnectOptions::from_str(server_url).map_err(StoreError::InvalidUrl)?;
        let name = format!("chatd_test_{}", Uuid::new_v4().simple());
        let mut admin = server.connect().await.map_err(StoreError::Connect)?;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .map_err(StoreError::Query)?;
        admin.close().await.map_err(StoreError::Query)?;

        let options = server.clone().database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = connect(&url, &PoolConfig::default()).await?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            url,
            name,
            server,
        })
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(self) -> Result<(), StoreError> {
        self.pool.close().await;
        let mut admin = self.server.connect().await.map_err(StoreError::Connect)?;
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .await
            .map_err(StoreError::Query)?;
        admin.close().await.map_err(StoreError::Query)
    }
}

/// Test data made through the same store operations the API's requests use (there are no
/// backend shortcuts): `use chatstore::testing::Fixtures as _` and call them on any store with
/// the identity domain ([`ModelFixtures`] for model configurations).
#[async_trait::async_trait]
pub trait Fixtures: IdentityStore {
    /// A new organization called `name`.
    async fn fixture_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        Ok(self.add_organization(name, "").await?.id)
    }

    /// A new user (`admin` or `member`) in one organization, without email or full name.
    async fn fixture_user(
        &self,
        username: &str,
        role: &str,
        organization_id: Uuid,
    ) -> Result<Uuid, StoreError> {
        let user = self
            .add_user(&NewUser {
                username: username.to_owned(),
                role: role.to_owned(),
                organization_ids: vec![organization_id],
                ..NewUser::default()
            })
            .await?;
        Ok(user.id)
    }

    /// A new API token of `user_id` called `name` (unique among the user's valid tokens).
    async fn fixture_token(
        &self,
        user_id: Uuid,
        name: &str,
        lifetime: Option<Duration>,
    ) -> Result<NewApiKey, StoreError> {
        Ok(self.issue_api_token(user_id, name, lifetime).await?.0)
    }
}

impl<T: IdentityStore + ?Sized> Fixtures for T {}

/// Model configurations for tests, made as `CreateModelConfig` makes them.
#[async_trait::async_trait]
pub trait ModelFixtures: ModelStore {
    /// A new enabled model configuration of `provider` at `base_url` (empty = the provider's
    /// default) with no API key reference; `is_default` makes it the organization's default
    /// (the organization's first one is the default anyway).
    async fn fixture_model(
        &self,
        organization_id: Uuid,
        provider: &str,
        base_url: &str,
        model: &str,
        context_limit: i64,
        is_default: bool,
    ) -> Result<Uuid, StoreError> {
        let config = self
            .add_model_config(&NewModelConfig {
                organization_id,
                provider: provider.to_owned(),
                model: model.to_owned(),
                display_name: String::new(),
                base_url: base_url.to_owned(),
                api_key_ref: String::new(),
                context_limit,
                compression_threshold: 70,
                max_output_tokens: None,
                temperature: None,
                enabled: true,
                is_default,
                options: serde_json::json!({}),
            })
            .await?;
        Ok(config.id)
    }
}

impl<T: ModelStore + ?Sized> ModelFixtures for T {}
