//! The database of a test, on the backend `CHATD_TEST_BACKEND` names: `postgres` (the default:
//! a fresh database on the tests' server) or `sqlite` (a fresh embedded file, the daemon's
//! default store). A test seeds it through the store; an in-process test keeps using the store,
//! a daemon test asks for [`TestDb::database_url`] and from then on talks to the daemon only (an
//! embedded file belongs to one process, so the test's handle is closed at that moment).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support panics where it fails

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chatstore::pubsub::Pubsub;
use chatstore::testing::{Fixtures as _, TestDatabase};
use chatstore::{Database, DatabaseUrl, OpenDatabase, StoreConfig};
use provisioner::WorkspaceUsers;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::workspaces::tempdir;

/// The backend the end-to-end tests run on.
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

/// A range of workspace uids of its own for one test database. Uids are host-wide, so each
/// daemon on a host needs a range of its own, and tests run at once, in one process or in a
/// process each: the range comes from the process id (below 2^22 on Linux) and a counter of
/// this process, 16 uids from 2^30 up, well clear of the system's users and the default range.
pub fn test_workspace_users() -> WorkspaceUsers {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() % (1 << 22);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 16;
    WorkspaceUsers {
        first_uid: (1 << 30) + (pid << 8) + (n << 4),
        count: 16,
        max_processes: 1024,
    }
}

/// `--workspace-uids` for a range.
pub fn uid_range(users: &WorkspaceUsers) -> String {
    format!("{}-{}", users.first_uid, users.first_uid + users.count - 1)
}

/// Whether a test that is PostgreSQL-only by nature must skip on this run's backend; when it
/// must, it says so in one line: `if skip_on_sqlite("two replicas share one database") {
/// return; }`.
pub fn skip_on_sqlite(why: &str) -> bool {
    let skip = TestBackend::from_env() == TestBackend::Sqlite;
    if skip {
        eprintln!("PostgreSQL only by nature: {why}");
    }
    skip
}

/// A connection pool of either backend, for the few reads a test makes beside the store's
/// operations (run them with [`on_pool!`](crate::on_pool)).
#[derive(Debug, Clone)]
pub enum TestPool {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// The embedded file.
    Sqlite(sqlx::SqlitePool),
}

/// Runs one `sqlx` expression on a [`TestPool`] of either backend: `on_pool!(pool, |p| query
/// .fetch_one(p))`. The SQL must be valid on both (`$1` placeholders work on both).
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match &$pool {
            $crate::test_db::TestPool::Postgres($p) => $body,
            $crate::test_db::TestPool::Sqlite($p) => $body,
        }
    };
}

/// A fresh database (seeded with organization `acme` and admin `ada` by [`TestDb::create`])
/// and a data dir.
#[derive(Debug)]
pub struct TestDb {
    /// The store with the default configuration.
    pub store: Arc<dyn Database>,
    /// Organization `acme` (nil in an [`TestDb::empty`] database).
    pub organization: Uuid,
    /// User `ada`, an admin of `acme` (nil in an [`TestDb::empty`] database).
    pub user: Uuid,
    /// The data dir (workspaces live here; so does an embedded file).
    pub data_dir: tempdir::Dir,
    /// The uids this test's workspaces run as when the tests run as root ([`test_workspace_users`]).
    pub workspace_users: WorkspaceUsers,
    backend: TestBackend,
    url: String,
    postgres: Option<TestDatabase>,
    open: Option<OpenDatabase>,
}

impl TestDb {
    /// A fresh, seeded database on the backend of [`TestBackend::from_env`].
    pub async fn create() -> Self {
        Self::seeded(Self::empty().await).await
    }

    async fn seeded(mut db: Self) -> Self {
        (db.organization, db.user) = acme_and_ada(db.store.as_ref()).await;
        db
    }

    /// A fresh, seeded database on the PostgreSQL server at `server_url` (a private server,
    /// say), whatever the run's backend.
    pub async fn create_on(server_url: &str) -> Self {
        let db = TestDatabase::create_on(server_url)
            .await
            .unwrap_or_else(|e| panic!("a database on {server_url}: {e}"));
        Self::seeded(Self::on_postgres(db)).await
    }

    fn on_postgres(db: TestDatabase) -> Self {
        let open = OpenDatabase::Postgres(db.pool.clone());
        Self::with(
            TestBackend::Postgres,
            db.url.clone(),
            Some(db),
            open,
            tempdir::Dir::create(),
        )
    }

    fn with(
        backend: TestBackend,
        url: String,
        postgres: Option<TestDatabase>,
        open: OpenDatabase,
        data_dir: tempdir::Dir,
    ) -> Self {
        Self {
            store: open.store(StoreConfig::default()),
            organization: Uuid::nil(),
            user: Uuid::nil(),
            data_dir,
            workspace_users: test_workspace_users(),
            backend,
            url,
            postgres,
            open: Some(open),
        }
    }

    /// A fresh database with nothing in it, as a first start finds it.
    pub async fn empty() -> Self {
        match TestBackend::from_env() {
            TestBackend::Postgres => Self::on_postgres(
                TestDatabase::create()
                    .await
                    .expect("PostgreSQL must answer at TEST_DATABASE_URL"),
            ),
            TestBackend::Sqlite => {
                let data_dir = tempdir::Dir::create();
                let url = DatabaseUrl::Sqlite(data_dir.0.join("chatd.db"));
                let open = OpenDatabase::open(&url, &Default::default())
                    .await
                    .expect("a fresh embedded database");
                Self::with(TestBackend::Sqlite, url.to_string(), None, open, data_dir)
            }
        }
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> TestBackend {
        self.backend
    }

    /// The PostgreSQL database, for tests that are PostgreSQL-only by nature (a proxy in front
    /// of the server, a second process on the same database); `None` on the embedded file.
    pub fn postgres(&self) -> Option<&TestDatabase> {
        self.postgres.as_ref()
    }

    fn open(&self) -> &OpenDatabase {
        self.open
            .as_ref()
            .expect("the test's handle was closed by database_url()")
    }

    /// Another store on the same database, with `config` (short leases, say).
    pub fn store_with(&self, config: StoreConfig) -> Arc<dyn Database> {
        self.open().store(config)
    }

    /// The process's change notifications, and on PostgreSQL the listening task (abort it at
    /// the end).
    pub async fn pubsub(&self) -> (Arc<dyn Pubsub>, Option<JoinHandle<()>>) {
        self.open().pubsub().await.unwrap()
    }

    /// A pool for reads beside the store's operations ([`on_pool!`](crate::on_pool)).
    pub fn pool(&self) -> TestPool {
        match self.open() {
            OpenDatabase::Postgres(pool) => TestPool::Postgres(pool.clone()),
            OpenDatabase::Sqlite(db) => TestPool::Sqlite(db.writer().clone()),
        }
    }

    /// The `--database-url` for a daemon. Seed first: on an embedded file this closes the
    /// test's own handle, so the daemon can take the file.
    pub async fn database_url(&mut self) -> String {
        if self.postgres.is_none()
            && let Some(open) = self.open.take()
        {
            open.close().await;
        }
        self.url.clone()
    }

    /// `chatd serve` arguments for a daemon on this database and data dir, listening on
    /// `listen` (without a provisioner: [`Daemon::start`](crate::Daemon::start) sets none).
    /// Closes the test's handle like [`TestDb::database_url`].
    pub async fn serve_args(&mut self, listen: &str) -> Vec<String> {
        let url = self.database_url().await;
        [
            "serve",
            "--listen",
            listen,
            "--database-url",
            &url,
            "--data-dir",
            &self.data_dir.0.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// [`TestDb::serve_args`] for a daemon that builds workspaces in the data dir with `workers`
    /// embedded provisioner workers, listening on `listen` (a fixed address, so a restarted
    /// daemon is where its agents report).
    pub async fn serve_with_provisioner(&mut self, listen: &str, workers: u32) -> Vec<String> {
        let wsagent = crate::workspace_binary("wsagent").unwrap();
        let mut args = self.serve_args(listen).await;
        args.extend(
            [
                "--agent-binary",
                &wsagent.display().to_string(),
                "--agent-heartbeat-interval",
                "200ms",
                "--workspace-uids",
                &uid_range(&self.workspace_users),
                "--provisioner-poll-interval",
                "1s",
                "--provisioner-workers",
                &workers.to_string(),
            ]
            .map(str::to_owned),
        );
        args
    }

    /// Opens the database again after a daemon on it has stopped (an embedded file is free
    /// again only then), to check what it left.
    pub async fn reopen(&mut self) {
        if self.open.is_none() {
            let url = DatabaseUrl::parse(&self.url).unwrap();
            let open = OpenDatabase::open(&url, &Default::default()).await.unwrap();
            self.store = open.store(StoreConfig::default());
            self.open = Some(open);
        }
    }

    /// Stops what was left running in the data dir (workspace agents) and drops the database.
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

/// The pids, in order, of the processes whose working directory is under `dir` (the agents of
/// the workspaces built there).
pub fn processes_under(dir: &std::path::Path) -> Vec<i32> {
    processes_where(|proc_dir| {
        std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
    })
}

/// The processes whose command line (arguments joined by spaces) contains `needle`.
pub fn processes_running(needle: &str) -> Vec<i32> {
    processes_where(|proc_dir| {
        std::fs::read(proc_dir.join("cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        })
    })
}

/// The pids whose `/proc/<pid>` directory satisfies `matches`, in order.
fn processes_where(matches: impl Fn(&std::path::Path) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            matches(&entry.path()).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// SIGKILLs every process whose working directory is under `dir` (the agents of the
/// workspaces built there: they outlive a stopped daemon by design).
pub fn kill_processes_under(dir: &std::path::Path) {
    for pid in processes_under(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// On drop, SIGKILLs every process whose working directory is under the path
/// ([`kill_processes_under`]): the agents a test's daemon built there, which outlive the daemon
/// by design.
#[derive(Debug)]
pub struct KillUnder(pub std::path::PathBuf);

impl Drop for KillUnder {
    fn drop(&mut self) {
        kill_processes_under(&self.0);
    }
}
