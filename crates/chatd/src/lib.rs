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

/// `chatd migrate`: applies every pending migration to the database at `url` (PostgreSQL or
/// an embedded file), waiting up to `connect_timeout` for a server to answer.
pub async fn migrate(url: &str, connect_timeout: std::time::Duration) -> Result<(), ChatdError> {
    let database = open_database(&DatabaseConfig {
        url: url.to_owned(),
        migrate: true,
        connect_timeout,
    })
    .await?;
    database.close().await;
    Ok(())
}

/// The process's database (its URL, password redacted), for the log line of a failed store
/// call: a full disk or a failing file must name the file.
pub(crate) static DATABASE_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Opens the database `config` names, applying migrations as it says, and logs which it is.
pub(crate) async fn open_database(
    config: &DatabaseConfig,
) -> Result<chatstore::OpenDatabase, ChatdError> {
    let url = chatstore::DatabaseUrl::parse(&config.url)?;
    let options = chatstore::OpenOptions {
        connect_timeout: config.connect_timeout,
        migrate: config.migrate,
    };
    let database = chatstore::OpenDatabase::open(&url, &options).await?;
    let _ = DATABASE_NAME.set(url.to_string());
    // An embedded file is always migrated when it is opened.
    if config.migrate || matches!(url, chatstore::DatabaseUrl::Sqlite(_)) {
        tracing::info!(
            database = %url,
            backend = database.backend(),
            migrations = database.known_migrations(),
            "database is up to date"
        );
    } else {
        tracing::info!(database = %url, backend = database.backend(), "database is open (migrations left to `chatd migrate`)");
    }
    Ok(database)
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
