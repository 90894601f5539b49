//! The PostgreSQL backend: connection pool, migrations, `PgStore` (one module per store domain)
//! and LISTEN/NOTIFY pubsub.

mod agents;
mod enums;
mod identity;
mod models;
mod pubsub;
mod replicas;
mod store;
mod templates;
mod workspaces;

pub use pubsub::PgPubsub;
pub use store::PgStore;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The connection pool type of this backend.
pub use sqlx::postgres::PgPool;

use crate::StoreError;

/// The migrations of `migrations/postgres/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Connection settings of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most open connections.
    pub max_connections: u32,
    /// How long to wait for a connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Opens a connection pool to `url` (`postgres://user@host:port/db`).
pub async fn connect(url: &str, config: &PoolConfig) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(StoreError::InvalidUrl)?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(StoreError::Connect)
}

/// Applies every pending migration. Safe to run concurrently from several replicas (sqlx takes
/// an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await.map_err(StoreError::Migrate)
}
