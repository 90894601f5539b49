//! Test support: a fresh, migrated PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `TEST_DATABASE_URL` (`scripts/test` sets it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each [`TestDatabase`] creates a uniquely
//! named database on it, so tests never see each other's state or that of an earlier run.

use std::str::FromStr as _;

use sqlx::postgres::{PgConnectOptions, PgPool};
// Database names are generated here (a UUID), never taken from input, so formatting them into
// SQL is safe.
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Executor as _};
use uuid::Uuid;

use crate::StoreError;
use crate::postgres::{PoolConfig, connect, migrate};

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
    /// Creates and migrates a new database.
    pub async fn create() -> Result<Self, StoreError> {
        let server_url =
            std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
        let server = PgConnectOptions::from_str(&server_url).map_err(StoreError::InvalidUrl)?;
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
