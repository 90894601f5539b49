//! The chatd daemon: the process that serves chatd's gRPC API and runs the chat engine.
//!
//! The binary parses its command line and configuration file ([`cli`], [`config`]) and runs
//! one of three commands: [`serve`] (the tonic server: health, reflection and, on the
//! database, the chat API, the workspace agents' API ([`agentapi`]), templates ([`templates`]),
//! workspaces and administration; the provisioner's workers ([`build_workers`]) and one
//! `chatengine::Engine`), `provisioner` (the workers alone, [`build_workers::run_alone`]) and
//! [`migrate`].
//!
//! Inside, private modules hold the services (`chats`, `admin`, `workspaces`, `watch`), the
//! chat stream loop (`stream`), the part relay between replicas (`relay`), authentication and
//! the mapping of store errors to gRPC statuses (`auth`), the seeding of configured models
//! (`seed`) and the metrics endpoint (`metrics`). The rules they follow live in the policy
//! crates and the engine in `chatengine`, not here.
//!
//! The daemon is the top of the layer stack: it may depend on every chatd crate, and no chatd
//! crate may depend on it.

mod admin;
mod advertise;
pub mod agentapi;
mod auth;
pub mod build_workers;
mod chats;
pub mod cli;
mod closing;
pub mod config;
mod convert;
mod error;
mod limits;
mod metrics;
mod paging;
mod relay;
mod seed;
mod serve;
mod stream;
pub mod telemetry;
pub mod templates;
mod watch;
mod workspaces;

pub use advertise::AdvertiseError;
pub use error::ChatdError;
pub use serve::{DatabaseConfig, ServeConfig, ShutdownSignals, Timing, TlsConfig, serve};

/// `chatd admin token`: mints a new API token for the admin `username`, valid for `lifetime`,
/// straight in the database (no daemon needed): the way back in when the bootstrap token has
/// expired, was lost, or its file could not be written. Only an active admin gets one.
pub async fn mint_admin_token(
    config: &DatabaseConfig,
    username: &str,
    lifetime: std::time::Duration,
) -> Result<String, ChatdError> {
    use chatstore::identity::UserListQuery;
    let database = open_database(config).await?;
    let store = database.store(chatstore::StoreConfig::default());
    let users = store
        .list_users(&UserListQuery {
            organization_id: None,
            query: username.to_owned(),
            include_suspended: true,
            after_username: None,
            limit: 1000,
        })
        .await?;
    let user = users
        .into_iter()
        .find(|u| u.username == username)
        .ok_or_else(|| ChatdError::AdminToken(format!("no user is named {username:?}")))?;
    if user.role != "admin" {
        return Err(ChatdError::AdminToken(format!(
            "{username:?} is not an admin (role {:?})",
            user.role
        )));
    }
    if user.suspended {
        return Err(ChatdError::AdminToken(format!("{username:?} is suspended")));
    }
    let name = format!(
        "admin-token-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
    );
    let (key, _) = store
        .issue_api_token(user.id, &name, Some(lifetime))
        .await?;
    database.close().await;
    Ok(key.token)
}

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

pub use chatengine::error_chain;
