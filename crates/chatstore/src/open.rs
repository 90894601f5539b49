//! Opening the store a database URL names, whichever backend it is: `postgres://…` (several
//! replicas, LISTEN/NOTIFY) or `sqlite://PATH` (one embedded file, one replica, notifications in
//! process). A process holds an [`OpenDatabase`] and takes from it the stores and the
//! notification hub it needs, without knowing the backend.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::postgres::{PgPool, PgPubsub, PgStore, PoolConfig};
use crate::pubsub::Pubsub;
use crate::sqlite::{SqliteConfig, SqliteDb, SqliteStore};
use crate::{Database, StoreConfig, StoreError};

/// Where the store lives, as a database URL names it.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres(String),
    /// An embedded database file (`sqlite://PATH`; `sqlite:///abs/path` is absolute).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Reads a URL; an unknown scheme or an empty path is refused with what is accepted.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            // Query options of other tools' SQLite URLs (`?mode=rwc`) are not ours to honour.
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(StoreError::InvalidInput(
                    "a sqlite:// database URL needs a file path, e.g. sqlite:///var/lib/chatd/chatd.db"
                        .into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::InvalidInput(format!(
            "unsupported database URL {:?}: use postgres://USER@HOST:PORT/DB (several replicas) \
             or sqlite://PATH (one embedded file)",
            redact(url)
        )))
    }
}

/// Shown without the password.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => f.write_str(&redact(url)),
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:***@host…` for a URL with a password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// How to open a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How long to wait for a PostgreSQL server to answer (10 s).
    pub connect_timeout: Duration,
    /// Apply PostgreSQL's pending migrations (an embedded file is always brought up to date when
    /// it is opened, under its lock).
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            migrate: true,
        }
    }
}

/// An open database of either backend.
#[derive(Debug, Clone)]
pub enum OpenDatabase {
    /// A PostgreSQL connection pool.
    Postgres(PgPool),
    /// An embedded file, locked by this process.
    Sqlite(SqliteDb),
}

impl OpenDatabase {
    /// Connects to (or opens, creating and migrating) the database at `url`.
    pub async fn open(url: &DatabaseUrl, options: &OpenOptions) -> Result<Self, StoreError> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let config = PoolConfig {
                    acquire_timeout: options.connect_timeout,
                    ..PoolConfig::default()
                };
                let pool = crate::postgres::connect(url, &config).await?;
                if options.migrate {
                    crate::postgres::migrate(&pool).await?;
                }
                Ok(Self::Postgres(pool))
            }
            DatabaseUrl::Sqlite(path) => Ok(Self::Sqlite(
                SqliteDb::open(path, &SqliteConfig::default()).await?,
            )),
        }
    }

    /// Which backend, for logs: `postgresql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// How many schema migrations this binary knows for the backend.
    pub fn known_migrations(&self) -> usize {
        match self {
            Self::Postgres(_) => crate::postgres::MIGRATOR.iter().count(),
            Self::Sqlite(_) => crate::sqlite::MIGRATOR.iter().count(),
        }
    }

    /// The store on this database with `config`.
    pub fn store(&self, config: StoreConfig) -> Arc<dyn Database> {
        match self {
            Self::Postgres(pool) => Arc::new(PgStore::new(pool.clone(), config)),
            Self::Sqlite(db) => Arc::new(SqliteStore::with_config(db.clone(), config)),
        }
    }

    /// The process's change notifications. On PostgreSQL this starts a listening connection
    /// whose task is returned (it runs until aborted); the embedded file's hub needs none.
    pub async fn pubsub(&self) -> Result<(Arc<dyn Pubsub>, Option<JoinHandle<()>>), StoreError> {
        match self {
            Self::Postgres(pool) => {
                let (pubsub, task) = PgPubsub::start(pool).await?;
                Ok((Arc::new(pubsub), Some(task)))
            }
            Self::Sqlite(db) => Ok((Arc::new(db.hub().clone()), None)),
        }
    }

    /// Closes the connections (and an embedded file's lock, for every clone).
    pub async fn close(self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(db) => db.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_hide_passwords() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/chatd/chatd.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/chatd/chatd.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/chatd.db?mode=rwc").unwrap(),
            DatabaseUrl::Sqlite("data/chatd.db".into())
        );
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        let pg = DatabaseUrl::parse("postgres://chatd:hunter2@db:5432/chatd").unwrap();
        assert_eq!(pg.to_string(), "postgres://chatd:***@db:5432/chatd");
        let err = DatabaseUrl::parse("mysql://root:pw@db/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sqlite://PATH") && !err.contains("pw"),
            "{err}"
        );
    }
}
