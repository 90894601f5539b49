//! Seeding helpers for schema tests.

use async_trait::async_trait;
use chatstore::postgres::{PgPubsub, PgStore};
use chatstore::pubsub::Pubsub;
use chatstore::sqlite::{SqliteConfig, SqliteDb, SqliteStore};
use chatstore::testing::{Fixtures as _, ModelFixtures as _, TestDatabase};
use chatstore::{Store, StoreConfig};
use sqlx::PgPool;
use uuid::Uuid;

/// The rows every contract test starts with.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    pub org: Uuid,
    pub user: Uuid,
    pub model_config: Uuid,
}

impl Fixture {
    /// A chat of the fixture's user on its model, first message "hi", untitled.
    pub fn new_chat(&self) -> chatstore::types::NewChat {
        chatstore::types::NewChat::new(
            self.org,
            self.user,
            self.model_config,
            vec![chatstore::types::MessagePart::text("hi")],
        )
    }
}

/// Creates `new` and returns the chat's id.
pub async fn created<S: chatstore::Store + ?Sized>(
    store: &S,
    new: chatstore::types::NewChat,
) -> Uuid {
    store.create_chat(new).await.unwrap().chat.id
}

/// What the backend-neutral contract tests need from a storage backend. A second backend
/// implements this and runs the same `contract_tests!` list.
#[async_trait]
pub trait Backend: Sized + Send + Sync {
    /// The store under test.
    type S: Store + Clone + 'static;
    /// A fresh, empty backend with the fixture rows.
    async fn open() -> Self;
    /// The store with the default configuration.
    fn store(&self) -> &Self::S;
    /// A store on the same data with another configuration.
    fn store_with(&self, config: StoreConfig) -> Self::S;
    /// The fixture rows.
    fn fixture(&self) -> Fixture;
    /// Makes every lease of the chat stale, as if its owner died long ago.
    async fn expire_leases(&self, chat: Uuid);
    /// Writes a raw status (e.g. a legacy one), bypassing the state machine.
    async fn force_status(&self, chat: Uuid, status: &str);
    /// The process's notification hub on this backend.
    async fn pubsub(&self) -> std::sync::Arc<dyn Pubsub>;
    /// Releases the backend.
    async fn finish(self);
}

/// The PostgreSQL backend of the contract tests.
pub struct PgBackend {
    seeded: Seeded,
    store: PgStore,
    /// Listening tasks, stopped before the database is dropped.
    listeners: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl Backend for PgBackend {
    type S = PgStore;

    async fn open() -> Self {
        let seeded = Seeded::new().await;
        let store = PgStore::new(seeded.pool().clone(), StoreConfig::default());
        Self {
            seeded,
            store,
            listeners: Default::default(),
        }
    }

    fn store(&self) -> &PgStore {
        &self.store
    }

    fn store_with(&self, config: StoreConfig) -> PgStore {
        PgStore::new(self.seeded.pool().clone(), config)
    }

    fn fixture(&self) -> Fixture {
        Fixture {
            org: self.seeded.org,
            user: self.seeded.user,
            model_config: self.seeded.model_config,
        }
    }

    async fn expire_leases(&self, chat: Uuid) {
        sqlx::query("UPDATE chat_heartbeats SET heartbeat_at = now() - interval '1 hour' WHERE chat_id = $1")
            .bind(chat)
            .execute(self.seeded.pool())
            .await
            .unwrap();
    }

    async fn force_status(&self, chat: Uuid, status: &str) {
        sqlx::query("UPDATE chats SET status = $2::chat_status WHERE id = $1")
            .bind(chat)
            .bind(status)
            .execute(self.seeded.pool())
            .await
            .unwrap();
    }

    async fn pubsub(&self) -> std::sync::Arc<dyn Pubsub> {
        let (hub, task) = PgPubsub::start(self.seeded.pool()).await.unwrap();
        self.listeners.lock().unwrap().push(task);
        std::sync::Arc::new(hub)
    }

    async fn finish(self) {
        for task in self.listeners.into_inner().unwrap() {
            task.abort();
            let _ = task.await;
        }
        drop(self.store);
        self.seeded.finish().await;
    }
}

/// The embedded backend of the contract tests.
pub struct SqliteBackend {
    seeded: SqliteSeeded,
}

#[async_trait]
impl Backend for SqliteBackend {
    type S = SqliteStore;

    async fn open() -> Self {
        Self {
            seeded: SqliteSeeded::new().await,
        }
    }

    fn store(&self) -> &SqliteStore {
        &self.seeded.store
    }

    fn store_with(&self, config: StoreConfig) -> SqliteStore {
        SqliteStore::with_config(self.seeded.store.db().clone(), config)
    }

    fn fixture(&self) -> Fixture {
        Fixture {
            org: self.seeded.org,
            user: self.seeded.user,
            model_config: self.seeded.model_config,
        }
    }

    async fn expire_leases(&self, chat: Uuid) {
        sqlx::query(
            "UPDATE chat_heartbeats SET heartbeat_at = '2000-01-01T00:00:00.000000+00:00'
              WHERE chat_id = $1",
        )
        .bind(chat)
        .execute(self.seeded.store.db().writer())
        .await
        .unwrap();
    }

    async fn force_status(&self, chat: Uuid, status: &str) {
        sqlx::query("UPDATE chats SET status = $2 WHERE id = $1")
            .bind(chat)
            .bind(status)
            .execute(self.seeded.store.db().writer())
            .await
            .unwrap();
    }

    async fn pubsub(&self) -> std::sync::Arc<dyn Pubsub> {
        std::sync::Arc::new(self.seeded.store.db().hub().clone())
    }

    async fn finish(self) {}
}

/// A migrated database with one organization, user and model config.
pub struct Seeded {
    pub db: TestDatabase,
    pub org: Uuid,
    pub user: Uuid,
    pub model_config: Uuid,
}

impl Seeded {
    pub async fn new() -> Self {
        let db = TestDatabase::create().await.expect(
            "a PostgreSQL server must answer at TEST_DATABASE_URL (scripts/test starts the local one)",
        );
        // Made through the store's own operations, as the API's requests make them.
        let store = PgStore::new(db.pool.clone(), StoreConfig::default());
        let org = store.fixture_organization("acme").await.unwrap();
        let user = store.fixture_user("ada", "member", org).await.unwrap();
        let model_config = store
            .fixture_model(org, "anthropic", "", "claude", 200_000, true)
            .await
            .unwrap();
        Self {
            db,
            org,
            user,
            model_config,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A store on the database with the default configuration.
    pub fn store(&self) -> PgStore {
        PgStore::new(self.pool().clone(), StoreConfig::default())
    }

    /// A running chat (snapshot_version 1, no messages).
    pub async fn chat(&self) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO chats (organization_id, owner_id, last_model_config_id, status)
             VALUES ($1, $2, $3, 'running') RETURNING id",
        )
        .bind(self.org)
        .bind(self.user)
        .bind(self.model_config)
        .fetch_one(self.pool())
        .await
        .unwrap()
    }

    pub async fn finish(self) {
        self.db.drop_database().await.unwrap();
    }
}

/// The version columns of a chat.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Versions {
    pub snapshot_version: i64,
    pub history_version: i64,
    pub queue_version: i64,
    pub generation_attempt: i64,
    pub retry_state_version: i64,
    pub has_retry_state: bool,
    pub window_open: bool,
}

pub async fn versions(pool: &PgPool, chat: Uuid) -> Versions {
    sqlx::query_as(
        "SELECT snapshot_version, history_version, queue_version, generation_attempt, retry_state_version,
                retry_state IS NOT NULL AS has_retry_state, retry_window_started_at IS NOT NULL AS window_open
           FROM chats WHERE id = $1",
    )
    .bind(chat)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The lock-and-bump statement that starts every transition transaction.
pub const BUMP: &str = "UPDATE chats SET snapshot_version = snapshot_version + 1 WHERE id = $1";

/// A directory of its own, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("chatstore-sqlite-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Where a test's database file goes (its directory is created on open).
    pub fn db(&self) -> std::path::PathBuf {
        self.0.join("data").join("chatd.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An embedded database with organization `acme`, member `ada` and model config `claude` (the
/// default), made as the API makes them.
pub struct SqliteSeeded {
    pub store: SqliteStore,
    pub org: Uuid,
    pub user: Uuid,
    pub model_config: Uuid,
    _dir: TempDir,
}

impl SqliteSeeded {
    pub async fn new() -> Self {
        let dir = TempDir::new();
        let db = SqliteDb::open(&dir.db(), &SqliteConfig::default())
            .await
            .unwrap();
        let store = SqliteStore::new(db);
        let org = store.fixture_organization("acme").await.unwrap();
        let user = store.fixture_user("ada", "member", org).await.unwrap();
        let model_config = store
            .fixture_model(org, "anthropic", "", "claude", 200_000, true)
            .await
            .unwrap();
        Self {
            store,
            org,
            user,
            model_config,
            _dir: dir,
        }
    }
}

/// What some tests write or read past the store's operations, on each backend.
#[async_trait]
pub trait Raw {
    /// Inserts a workspace build job of `org` with the given times set to now and `error`.
    async fn raw_job(
        &self,
        org: Uuid,
        started: bool,
        canceled: bool,
        completed: bool,
        error: &str,
    ) -> Uuid;
    /// The startup-log lines stored for an agent.
    async fn agent_log_lines(&self, agent: Uuid) -> i64;
}

#[async_trait]
impl Raw for PgStore {
    async fn raw_job(
        &self,
        org: Uuid,
        started: bool,
        canceled: bool,
        completed: bool,
        error: &str,
    ) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO provisioner_jobs (organization_id, type, started_at, canceled_at, completed_at, error)
             VALUES ($1, 'workspace_build',
                     CASE WHEN $2 THEN now() END, CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END, $5)
             RETURNING id",
        )
        .bind(org)
        .bind(started)
        .bind(canceled)
        .bind(completed)
        .bind(error)
        .fetch_one(self.pool())
        .await
        .unwrap()
    }

    async fn agent_log_lines(&self, agent: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM workspace_agent_logs WHERE agent_id = $1")
            .bind(agent)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

#[async_trait]
impl Raw for SqliteStore {
    async fn raw_job(
        &self,
        org: Uuid,
        started: bool,
        canceled: bool,
        completed: bool,
        error: &str,
    ) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO provisioner_jobs (id, organization_id, type, started_at, canceled_at, completed_at, error)
             VALUES ($1, $2, 'workspace_build',
                     CASE WHEN $3 THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') END,
                     CASE WHEN $4 THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') END,
                     CASE WHEN $5 THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') END, $6)",
        )
        .bind(id)
        .bind(org)
        .bind(started)
        .bind(canceled)
        .bind(completed)
        .bind(error)
        .execute(self.db().writer())
        .await
        .unwrap();
        id
    }

    async fn agent_log_lines(&self, agent: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM workspace_agent_logs WHERE agent_id = $1")
            .bind(agent)
            .fetch_one(self.db().reader())
            .await
            .unwrap()
    }
}
