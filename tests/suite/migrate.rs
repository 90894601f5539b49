//! `chatd migrate` against a real, fresh PostgreSQL database.

use chatd_e2e::{Daemon, workspace_binary};
use chatstore::testing::TestDatabase;

/// A fresh database with an empty schema: `TestDatabase` migrates through the library, and
/// these tests check that the binary does it.
pub(super) async fn empty_database() -> TestDatabase {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL must answer at TEST_DATABASE_URL");
    sqlx::query("DROP SCHEMA public CASCADE")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE SCHEMA public")
        .execute(&db.pool)
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn migrate_creates_the_schema_and_is_idempotent() {
    let db = empty_database().await;
    let chatd = workspace_binary("chatd").unwrap();
    for run in 0..2 {
        let output = tokio::process::Command::new(&chatd)
            .arg("migrate")
            .env("CHATD_DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}: {log}");
        assert!(log.contains("database is up to date"), "run {run}: {log}");
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_name IN ('chats', 'chat_messages', 'chat_heartbeats', 'chatd_workers')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 4);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn migrate_creates_the_embedded_file_in_the_data_dir_and_is_idempotent() {
    let dir = chatd_e2e::workspaces::tempdir::Dir::create();
    let chatd = workspace_binary("chatd").unwrap();
    for run in 0..2 {
        let output = tokio::process::Command::new(&chatd)
            .args(["migrate", "--data-dir"])
            .arg(&dir.0)
            .env_remove("CHATD_DATABASE_URL")
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}: {log}");
        assert!(
            log.contains("database is up to date") && log.contains("sqlite://"),
            "run {run}: {log}"
        );
    }
    let file = std::fs::read(dir.0.join("chatd.db")).unwrap();
    assert!(
        file.starts_with(b"SQLite format 3\0"),
        "an SQLite database file"
    );
}

#[tokio::test]
async fn an_unknown_database_url_scheme_is_a_clear_error() {
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(&chatd)
        .args([
            "migrate",
            "--database-url",
            "mysql://root:secret@127.0.0.1/chatd",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("unsupported database URL") && log.contains("sqlite://PATH"),
        "{log}"
    );
    assert!(
        !log.contains("secret"),
        "the password stays out of the log: {log}"
    );
}

#[tokio::test]
async fn a_separate_provisioner_on_an_embedded_file_is_refused_with_the_reason() {
    let dir = chatd_e2e::workspaces::tempdir::Dir::create();
    let url = format!("sqlite://{}", dir.0.join("chatd.db").display());
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(&chatd)
        .args([
            "provisioner",
            "--database-url",
            &url,
            "--control-plane-url",
            "http://127.0.0.1:1",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("PostgreSQL"), "{log}");
    assert!(
        !dir.0.join("chatd.db").exists(),
        "nothing is created for a refused start"
    );
}

#[tokio::test]
async fn migrate_without_a_reachable_database_is_a_clear_error() {
    let chatd = workspace_binary("chatd").unwrap();
    let output = tokio::process::Command::new(&chatd)
        .args([
            "migrate",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "--database-connect-timeout",
            "1s",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("cannot connect to the database"), "{log}");
}

async fn table_count(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'chats'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn serve_applies_migrations_at_start_unless_told_not_to() {
    let db = empty_database().await;

    let skipped = chatd_e2e::Daemon::start(
        &["serve", "--listen", "127.0.0.1:0", "--no-migrate"],
        &[("CHATD_DATABASE_URL", db.url.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(
        table_count(&db).await,
        0,
        "--no-migrate leaves the schema alone"
    );
    let status = skipped
        .stop(
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(status.success());

    let daemon = chatd_e2e::Daemon::start(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("CHATD_DATABASE_URL", db.url.as_str())],
    )
    .await
    .unwrap();
    assert!(
        daemon.log().contains("database is up to date"),
        "{}",
        daemon.log()
    );
    assert_eq!(table_count(&db).await, 1);
    let status = daemon
        .stop(
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(status.success());
    db.drop_database().await.unwrap();
}

/// `chatd migrate` against `url`: whether it succeeded, and its log.
async fn migrate_at(url: &str) -> (bool, String) {
    let output = tokio::process::Command::new(workspace_binary("chatd").unwrap())
        .args(["migrate", "--database-connect-timeout", "5s"])
        .env("CHATD_DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_postgresql_that_requires_tls_is_reached_with_sslmode_in_the_url() {
    use chatd_e2e::private_pg::{PrivatePostgres, TestCerts};
    if chatd_e2e::test_db::skip_on_sqlite("it starts a PostgreSQL server of its own") {
        return;
    }
    let certs = TestCerts::generate();
    let pg = match PrivatePostgres::start(Some(&certs)) {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("skipped: cannot start a private PostgreSQL ({why})");
            return;
        }
    };
    let ca = pg.file("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let other_ca = pg.file("other-ca.pem");
    std::fs::write(&other_ca, TestCerts::generate().ca_pem).unwrap();

    // The server turns plain connections away.
    let (ok, log) = migrate_at(&pg.url("sslmode=disable")).await;
    assert!(!ok, "{log}");
    assert!(log.contains("no encryption"), "{log}");
    // TLS, checking the server's certificate against the CA and its name.
    let verified = pg.url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let (ok, log) = migrate_at(&verified).await;
    assert!(ok, "{log}\n{}", pg.log());
    assert!(log.contains("database is up to date"), "{log}");
    // TLS without checking the certificate.
    let (ok, log) = migrate_at(&pg.url("sslmode=require")).await;
    assert!(ok, "{log}");
    // A certificate from another CA is refused under verify-full.
    let (ok, log) = migrate_at(&pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    )))
    .await;
    assert!(!ok, "{log}");
    assert!(log.to_lowercase().contains("certificate"), "{log}");

    // The daemon serves on it.
    let daemon = Daemon::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &verified,
        ],
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    daemon
        .stop(
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(20),
        )
        .await
        .unwrap();
}
