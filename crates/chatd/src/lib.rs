//! The chatd daemon: the process that serves chatd's gRPC API.
//!
//! Today this crate holds the command line ([`cli`]), the server ([`serve`]): a tonic server with
//! `grpc.health.v1` and gRPC server reflection (v1 and v1alpha) that shuts down cleanly on a signal and, with
//! a database, serves the chat API ([`chats`]), the workspace agents' API ([`agentapi`]),
//! templates ([`templates`]), workspaces ([`workspaces`]) and administration ([`admin`]), runs the provisioner ([`provision`]) and the chat engine
//! ([`engine`]: the worker, its runners and their tasks, with the workspace-connection
//! [`resolver`] and the live [`parts`] buffer); and [`migrate`]. Authentication and the mapping
//! of store errors to gRPC statuses live in [`auth`]; the chat stream loop in [`stream`], the
//! part relay between replicas in [`relay`]. The rules they follow live in the policy crates,
//! not in this one.
//!
//! The daemon is the top of the layer stack: it may depend on every chatd crate, and no chatd
//! crate may depend on it.

pub mod admin;
pub mod agentapi;
pub mod auth;
pub mod builds;
pub mod chats;
pub mod cli;
pub mod closing;
pub mod config;
mod convert;
pub mod engine;
mod error;
pub mod metrics;
mod paging;
pub mod parts;
pub mod provision;
pub mod relay;
pub mod resolver;
pub mod seed;
mod serve;
pub mod stream;
pub mod templates;
pub mod watch;
pub mod workspaces;

pub use error::ChatdError;
pub use serve::{DatabaseConfig, ServeConfig, ShutdownSignals, Timing, serve};

/// `chatd migrate`: applies every pending migration to the database at `url`, waiting up to
/// `connect_timeout` for the database to answer.
pub async fn migrate(url: &str, connect_timeout: std::time::Duration) -> Result<(), ChatdError> {
    let pool = connect_database(url, connect_timeout).await?;
    apply_migrations(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Opens the daemon's connection pool, waiting up to `connect_timeout` for the database.
pub(crate) async fn connect_database(
    url: &str,
    connect_timeout: std::time::Duration,
) -> Result<chatstore::postgres::PgPool, ChatdError> {
    let config = chatstore::postgres::PoolConfig {
        acquire_timeout: connect_timeout,
        ..chatstore::postgres::PoolConfig::default()
    };
    Ok(chatstore::postgres::connect(url, &config).await?)
}

/// Applies pending migrations and logs the result.
pub(crate) async fn apply_migrations(pool: &chatstore::postgres::PgPool) -> Result<(), ChatdError> {
    chatstore::postgres::migrate(pool).await?;
    let known = chatstore::postgres::MIGRATOR.iter().count();
    tracing::info!(migrations = known, "database is up to date");
    Ok(())
}

/// `outer: cause: root cause`, so a log line says why, not only what.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
