//! The embedded SQLite backend: one database file that one replica owns.
//!
//! [`SqliteDb::open`] takes an exclusive lock on `<file>.lock` (a second daemon on the same file
//! refuses to start and says that several replicas need PostgreSQL), creates the file on first
//! use, and applies `migrations/sqlite/`. Connections run in WAL mode with a busy timeout and
//! foreign keys on. Writes go through one connection, so write transactions run one at a time
//! and never fail on a lock upgrade; reads use a pool of their own, which WAL never blocks.
//! Notifications are published in process, after commit, on the [`Hub`] that the engine, the
//! tools' waits and the streams subscribe to (there is no LISTEN/NOTIFY).
//!
//! Every failure to open names the file and the cause: locked by another daemon, not a
//! database, not writable, written by a newer chatd. Nothing is written before the checks pass.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use crate::pubsub::{AgentUpdate, Hub, JobUpdate, Notification};
use crate::{StoreConfig, StoreError};

/// The database clock as SQL: UTC in the RFC 3339 form sqlx writes, so stored times and `now`
/// compare as text in time order.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"
    };
}

/// `now` moved by the SQLite time modifier bound at `$param` ([`ago`], [`later`]); a NULL
/// modifier gives NULL.
macro_rules! now_shifted {
    ($param:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', ",
            $param,
            ")"
        )
    };
}

/// The ids bound at `$param` (a list that [`id_list`] wrote) as a subquery, for `IN`: SQLite
/// has no arrays.
macro_rules! ids_in {
    ($param:literal) => {
        concat!("(SELECT unhex(value) FROM json_each(", $param, "))")
    };
}

mod agents;
mod enums;
mod identity;
mod models;
mod replicas;
mod store;
mod templates;
mod workspaces;

/// The time modifier that moves `now` back by `d` (bind it where [`now_shifted!`] names it).
fn ago(d: Duration) -> String {
    format!("-{:.6} seconds", d.as_secs_f64())
}

/// The time modifier that moves `now` forward by `d`.
fn later(d: Duration) -> String {
    format!("+{:.6} seconds", d.as_secs_f64())
}

/// A time as the backend writes it: RFC 3339 in UTC with six fractional digits, the form of
/// [`now!`] (whose clock has milliseconds), so stored and bound times compare as text in time
/// order. Rows whose order matters (tokens, messages, model configurations) are stamped from
/// the process clock with this, which has microseconds.
fn stored_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Ids as a list to bind where [`ids_in!`] names it (a JSON array of their hex digits).
fn id_list(ids: &[Uuid]) -> String {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    serde_json::Value::from(hex).to_string()
}

/// The store on an embedded database file: every domain trait, so a [`Database`](crate::Database).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: SqliteDb,
    config: StoreConfig,
}

impl SqliteStore {
    /// A store on an open database, with the default timing.
    pub fn new(db: SqliteDb) -> Self {
        Self::with_config(db, StoreConfig::default())
    }

    /// A store on an open database.
    pub fn with_config(db: SqliteDb, config: StoreConfig) -> Self {
        Self { db, config }
    }

    /// The database.
    pub fn db(&self) -> &SqliteDb {
        &self.db
    }

    /// Tells the job's waiters that it changed; call it after the write's commit.
    fn job_changed(&self, job_id: Uuid) {
        self.db
            .hub()
            .publish(Notification::Job(JobUpdate { job_id }));
    }

    /// Tells the agent's waiters that it changed; call it after the write's commit.
    fn agent_changed(&self, agent_id: Uuid) {
        self.db
            .hub()
            .publish(Notification::Agent(AgentUpdate { agent_id }));
    }
}

/// The migrations of `migrations/sqlite/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Settings of an embedded database.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// How long a statement waits for a lock held by another connection (5 s).
    pub busy_timeout: Duration,
    /// Connections of the read pool (4).
    pub readers: u32,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            readers: 4,
        }
    }
}

/// An open, migrated database file and this process's lock on it.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    writer: SqlitePool,
    reader: SqlitePool,
    hub: Hub,
    path: PathBuf,
    /// The lock file, held until [`SqliteDb::close`] or the last clone is dropped.
    lock: std::sync::Arc<std::sync::Mutex<Option<File>>>,
}

impl SqliteDb {
    /// Opens (creating it if missing) and migrates the database at `path`, locked for this
    /// process until it is closed or every clone of the returned value is dropped.
    pub async fn open(path: &Path, config: &SqliteConfig) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                file_error(
                    path,
                    format!("cannot create its directory {}", dir.display()),
                    e,
                )
            })?;
        }
        let lock = lock(path)?;
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout);
        let unusable = |e: sqlx::Error| file_error(path, "not usable as a database", e);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(unusable)?;
        // A file that is not a database fails here, before anything is written to it.
        sqlx::query("SELECT count(*) FROM sqlite_schema")
            .execute(&writer)
            .await
            .map_err(unusable)?;
        migrate(&writer, path).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(options.read_only(true))
            .await
            .map_err(unusable)?;
        Ok(Self {
            writer,
            reader,
            hub: Hub::default(),
            path: path.to_owned(),
            lock: std::sync::Arc::new(std::sync::Mutex::new(Some(lock))),
        })
    }

    /// Closes the database for every clone of this handle: its connections, then its lock, so
    /// another process may open the file at once.
    pub async fn close(self) {
        self.writer.close().await;
        self.reader.close().await;
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection all writes go through (one at a time).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool reads go through.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The in-process hub notifications are published on after commit; subscribe to it as the
    /// process's [`Pubsub`](crate::pubsub::Pubsub).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

/// Applies every pending migration; a database that records a migration this binary does not
/// have was written by a newer chatd and is left as it is.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    match MIGRATOR.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(version)) => Err(StoreError::DatabaseFile {
            message: format!(
                "database {} was written by a newer chatd (it has schema migration {version}, \
                 this binary knows up to {}); run the newer chatd or restore a backup",
                path.display(),
                MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
            ),
            source: None,
        }),
        Err(MigrateError::Execute(e)) if is_read_only(&e) => {
            Err(file_error(path, "not writable", e))
        }
        Err(other) => Err(StoreError::Migrate(other)),
    }
}

fn is_read_only(err: &sqlx::Error) -> bool {
    // SQLITE_READONLY (8) and its extended codes.
    matches!(err, sqlx::Error::Database(db)
        if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 8))
}

/// Takes the exclusive lock of `<path>.lock`, writing this process's id into it; a lock held
/// by another process is refused with that process's id.
fn lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| {
            file_error(
                path,
                format!("cannot open its lock file {}", lock_path.display()),
                e,
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                "another chatd".to_owned()
            } else {
                format!("another chatd (pid {holder})")
            };
            return Err(StoreError::DatabaseFile {
                message: format!(
                    "database {} is in use by {by}; one embedded database serves one replica \
                     (several replicas need PostgreSQL: --database-url postgres://…)",
                    path.display()
                ),
                source: None,
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(file_error(
                path,
                format!("cannot lock {}", lock_path.display()),
                e,
            ));
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// Creates a missing database file readable by its owner only (it holds token hashes and
/// workspace secrets); SQLite gives its WAL and shared-memory files the same mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(file_error(path, "cannot create it", e)),
    }
}

fn file_error(
    path: &Path,
    what: impl std::fmt::Display,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::DatabaseFile {
        message: format!("database {}: {what}: {source}", path.display()),
        source: Some(Box::new(source)),
    }
}
