//! The database of a daemon under test, on the backend `CHATD_TEST_BACKEND` names:
//! `postgres` (the default: a fresh database on the tests' server) or `sqlite` (a fresh embedded
//! file, the daemon's default store). A test seeds it through the store, then asks for
//! [`DaemonDb::database_url`] and starts the daemon; from then on it talks to the daemon only.
//! An embedded file belongs to one process, so the test's handle is closed at that moment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support panics where it fails

use std::path::PathBuf;
use std::sync::Arc;

use chatstore::testing::{Fixtures as _, TestDatabase};
use chatstore::{Database, DatabaseUrl, OpenDatabase, StoreConfig};
use uuid::Uuid;

use crate::workspaces::tempdir;

/// The backend the end-to-end tests run daemons on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// PostgreSQL at `TEST_DATABASE_URL`.
    Postgres,
    /// An embedded SQLite file.
    Sqlite,
}

impl TestBackend {
    /// From `CHATD_TEST_BACKEND` (`postgres` when unset); anything else is a mistake worth a
    /// clear panic.
    pub fn from_env() -> Self {
        match std::env::var("CHATD_TEST_BACKEND").as_deref() {
            Err(_) | Ok("" | "postgres") => Self::Postgres,
            Ok("sqlite") => Self::Sqlite,
            Ok(other) => panic!("CHATD_TEST_BACKEND={other:?}: use postgres or sqlite"),
        }
    }
}

/// A seeded database (organization `acme`, admin `ada`) and a data dir for one daemon.
#[allow(missing_debug_implementations)] // holds a `dyn Database`
pub struct DaemonDb {
    /// The store, for seeding before the daemon starts.
    pub store: Arc<dyn Database>,
    /// Organization `acme`.
    pub organization: Uuid,
    /// User `ada`, an admin of `acme`.
    pub user: Uuid,
    /// The daemon's data dir (workspaces live here).
    pub data_dir: tempdir::Dir,
    url: String,
    postgres: Option<TestDatabase>,
    open: Option<OpenDatabase>,
}

impl DaemonDb {
    /// A fresh database on the backend of [`TestBackend::from_env`].
    pub async fn create() -> Self {
        let data_dir = tempdir::Dir::create();
        let (url, postgres, open) = match TestBackend::from_env() {
            TestBackend::Postgres => {
                let db = TestDatabase::create()
                    .await
                    .expect("PostgreSQL must answer at TEST_DATABASE_URL");
                let open = OpenDatabase::Postgres(db.pool.clone());
                (db.url.clone(), Some(db), open)
            }
            TestBackend::Sqlite => {
                let path: PathBuf = data_dir.0.join("chatd.db");
                let url = DatabaseUrl::Sqlite(path);
                let open = OpenDatabase::open(&url, &Default::default())
                    .await
                    .expect("a fresh embedded database");
                (url.to_string(), None, open)
            }
        };
        let store = open.store(StoreConfig::default());
        let (organization, user) = acme_and_ada(store.as_ref()).await;
        Self {
            store,
            organization,
            user,
            data_dir,
            url,
            postgres,
            open: Some(open),
        }
    }

    /// The `--database-url` for the daemon. Seed first: on an embedded file this closes the
    /// test's own handle, so the daemon can take the file.
    pub async fn database_url(&mut self) -> String {
        if self.postgres.is_none()
            && let Some(open) = self.open.take()
        {
            open.close().await;
        }
        self.url.clone()
    }

    /// Stops what the daemon left running in the data dir (workspace agents) and drops the
    /// database.
    pub async fn finish(mut self) {
        kill_processes_under(&self.data_dir.0);
        if let Some(open) = self.open.take() {
            open.close().await;
        }
        if let Some(db) = self.postgres.take() {
            db.drop_database().await.unwrap();
        }
    }
}

/// Organization `acme` with admin `ada`, what every end-to-end test starts with: their ids.
pub async fn acme_and_ada(store: &(impl chatstore::IdentityStore + ?Sized)) -> (Uuid, Uuid) {
    let organization = store.fixture_organization("acme").await.unwrap();
    let user = store
        .fixture_user("ada", "admin", organization)
        .await
        .unwrap();
    (organization, user)
}

/// SIGKILLs every process whose working directory is under `dir` (the agents of the
/// workspaces a daemon built there: they outlive a stopped daemon by design).
pub fn kill_processes_under(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
