//! The chatd daemon: the process that serves chatd's gRPC API.
//!
//! Today this crate holds the command line ([`cli`]), the server skeleton ([`serve`]): a tonic
//! server with `grpc.health.v1` and gRPC server reflection (v1) that shuts down cleanly on a
//! signal, and [`migrate`]. The chat services, the chat worker, the stream loop and the part relay land
//! here in later issues; the rules they follow live in the policy crates, not in this one.
//!
//! The daemon is the top of the layer stack: it may depend on every chatd crate, and no chatd
//! crate may depend on it.

pub mod cli;
mod error;
mod serve;

pub use error::ChatdError;
pub use serve::{ServeConfig, ShutdownSignals, serve};

/// `chatd migrate`: applies every pending migration to the database at `url`, waiting up to
/// `connect_timeout` for the database to answer.
pub async fn migrate(url: &str, connect_timeout: std::time::Duration) -> Result<(), ChatdError> {
    let config = chatstore::postgres::PoolConfig {
        max_connections: 2,
        acquire_timeout: connect_timeout,
    };
    let pool = chatstore::postgres::connect(url, &config).await?;
    chatstore::postgres::migrate(&pool).await?;
    let applied = chatstore::postgres::MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database is up to date");
    pool.close().await;
    Ok(())
}
