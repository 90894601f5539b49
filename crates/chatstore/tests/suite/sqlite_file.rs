//! Opening the embedded database file: created and migrated on first use, one daemon per file,
//! and files it must not touch (not a database, written by a newer chatd) refused with a message
//! that names the file, left as they were.

use std::path::Path;

use chatstore::StoreError;
use chatstore::sqlite::{SqliteConfig, SqliteDb};
use sqlx::{Connection as _, SqliteConnection};

use super::support::TempDir as Dir;

async fn open(path: &Path) -> Result<SqliteDb, StoreError> {
    SqliteDb::open(path, &SqliteConfig::default()).await
}

fn message(result: Result<SqliteDb, StoreError>) -> String {
    match result {
        Ok(_) => panic!("the open should have been refused"),
        Err(err @ StoreError::DatabaseFile { .. }) => err.to_string(),
        Err(other) => panic!("expected a DatabaseFile error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_file_is_created_migrated_and_opens_again() {
    let dir = Dir::new();
    let db = open(&dir.db()).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .fetch_all(db.reader())
            .await
            .unwrap();
    for table in [
        "chats",
        "chat_messages",
        "workspaces",
        "workspace_agents",
        "api_keys",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.writer())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.writer())
        .await
        .unwrap();
    assert_eq!(foreign_keys, 1);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.db()).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the file holds secrets: only its owner reads it"
    );
    drop(db);
    open(&dir.db())
        .await
        .expect("a second start on the same file");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_file_is_refused_until_the_first_stops() {
    let dir = Dir::new();
    let first = open(&dir.db()).await.unwrap();
    let refused = message(open(&dir.db()).await);
    assert!(
        refused.contains(&dir.db().display().to_string()),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("pid {}", std::process::id())),
        "{refused}"
    );
    assert!(refused.contains("PostgreSQL"), "{refused}");
    drop(first);
    let second = open(&dir.db())
        .await
        .expect("free again once the first is gone");
    // Closing hands the file over at once, even while a clone (a store) is still around.
    let clone = second.clone();
    second.close().await;
    open(&dir.db())
        .await
        .expect("free again once the second is closed");
    drop(clone);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_as_it_was() {
    let dir = Dir::new();
    let path = dir.db();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let notes = "my notes, not a database\n".repeat(200);
    std::fs::write(&path, &notes).unwrap();
    let refused = message(open(&path).await);
    assert!(refused.contains(&path.display().to_string()), "{refused}");
    assert!(refused.contains("not a database"), "{refused}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), notes);
}

#[tokio::test]
async fn a_database_from_a_newer_chatd_is_refused_and_left_as_it_was() {
    let dir = Dir::new();
    let path = dir.db();
    drop(open(&path).await.unwrap());
    // A newer chatd applied a migration this binary does not have.
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let refused = message(open(&path).await);
    assert!(refused.contains(&path.display().to_string()), "{refused}");
    assert!(refused.contains("newer chatd"), "{refused}");
    assert!(refused.contains("9999"), "{refused}");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 9999")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn the_replica_registry_secrets_and_clock_work_on_the_embedded_file() {
    use chatstore::ReplicaStore as _;
    use chatstore::sqlite::SqliteStore;
    use std::time::Duration;

    let dir = Dir::new();
    let store = SqliteStore::new(open(&dir.db()).await.unwrap());
    let now = store.database_now().await.unwrap();
    assert!((chrono::Utc::now() - now).num_seconds().abs() < 5, "{now}");

    let worker = uuid::Uuid::new_v4();
    store
        .register_worker(worker, "http://127.0.0.1:7421")
        .await
        .unwrap();
    store
        .register_worker(worker, "http://127.0.0.1:7422")
        .await
        .unwrap();
    assert_eq!(
        store
            .worker_address(worker, Duration::from_secs(30))
            .await
            .unwrap()
            .as_deref(),
        Some("http://127.0.0.1:7422")
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store
            .worker_address(worker, Duration::from_millis(10))
            .await
            .unwrap(),
        None,
        "a silent replica is forgotten"
    );

    let secret = store.cluster_secret("relay").await.unwrap();
    assert!(secret.len() >= 64, "{secret:?}");
    assert_eq!(store.cluster_secret("relay").await.unwrap(), secret);
    assert_ne!(store.cluster_secret("other").await.unwrap(), secret);
}

/// A small tmpfs mounted under `dir`, unmounted on drop; `None` (the test skips, saying why)
/// where this process may not mount.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Dir, size: &str) -> Option<Self> {
        let mount = dir.0.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        }
        mounted.then_some(Self(mount))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A read-only file system (as after a disk error remounts it): the start is refused with the
/// file and the cause, and the data stays. Needs root to mount; skipped with a reason otherwise.
#[tokio::test]
async fn a_database_on_a_read_only_file_system_is_refused_with_the_file_named() {
    let dir = Dir::new();
    let Some(tmpfs) = Tmpfs::mount(&dir, "16m") else {
        return;
    };
    let mount = tmpfs.0.clone();
    let path = mount.join("chatd.db");
    let db = open(&path).await.unwrap();
    sqlx::query("INSERT INTO chatd_cluster_secrets (name, secret) VALUES ('kept', 'x')")
        .execute(db.writer())
        .await
        .unwrap();
    db.close().await;
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(remounted.success());
    let text = message(open(&path).await);
    assert!(text.contains(&path.display().to_string()), "{text}");
    let lower = text.to_lowercase();
    assert!(
        lower.contains("not writable") || lower.contains("read-only"),
        "{text}"
    );
    // The data is still there for a start once the file system is writable again.
    std::process::Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&mount)
        .status()
        .unwrap();
    let db = open(&path).await.unwrap();
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatd_cluster_secrets WHERE name = 'kept'")
            .fetch_one(db.reader())
            .await
            .unwrap();
    assert_eq!(kept, 1);
    db.close().await;
}

/// A full disk: the write that does not fit fails as a query error and changes nothing; what
/// was committed before reads back, and writes work again once there is room.
#[tokio::test]
async fn a_full_disk_fails_the_write_that_does_not_fit_and_loses_nothing() {
    let dir = Dir::new();
    let Some(tmpfs) = Tmpfs::mount(&dir, "2m") else {
        return;
    };
    let path = tmpfs.0.join("chatd.db");
    let db = open(&path).await.unwrap();
    let insert = |name: String, size: usize| {
        sqlx::query("INSERT INTO chatd_cluster_secrets (name, secret) VALUES ($1, $2)")
            .bind(name)
            .bind("x".repeat(size))
    };
    insert("committed".into(), 10)
        .execute(db.writer())
        .await
        .unwrap();
    // Fill the rest of the file system.
    let filler = tmpfs.0.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 * 1024 * 1024]);
    let mut failed = None;
    for n in 0..64 {
        if let Err(err) = insert(format!("big-{n}"), 256 * 1024)
            .execute(db.writer())
            .await
        {
            failed = Some(err);
            break;
        }
    }
    let err = failed.expect("a write fails once the disk is full");
    assert!(
        err.to_string().contains("full"),
        "the cause is the full disk: {err}"
    );
    assert!(chatstore::StoreError::from(err).is_disk_full());
    let committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatd_cluster_secrets WHERE name = 'committed'")
            .fetch_one(db.reader())
            .await
            .unwrap();
    assert_eq!(committed, 1, "what was committed before is kept");
    std::fs::remove_file(&filler).unwrap();
    insert("after".into(), 10)
        .execute(db.writer())
        .await
        .expect("writes work again once there is room");
    db.close().await;
}
