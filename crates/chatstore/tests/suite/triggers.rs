//! The version triggers of spec/engine.md §7, rule by rule.

use sqlx::{Executor as _, Row as _};
use uuid::Uuid;

use super::support::*;

/// Runs `sql` with `$1` = `id` on `conn` (the pool, or a transaction).
async fn exec<'c, T>(conn: impl sqlx::PgExecutor<'c>, sql: &'static str, id: T)
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    sqlx::query(sql).bind(id).execute(conn).await.unwrap();
}

/// The revision of message `id`.
async fn revision_of(pool: &sqlx::PgPool, id: i64) -> i64 {
    sqlx::query_scalar("SELECT revision FROM chat_messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn insert_message(tx: &mut sqlx::PgConnection, chat: Uuid) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO chat_messages (chat_id, role, content) VALUES ($1, 'user', '[]') RETURNING id",
    )
    .bind(chat)
    .fetch_one(&mut *tx)
    .await
    .unwrap()
}

#[tokio::test]
async fn t1_revision_is_the_snapshot_of_the_writing_transaction() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let mut tx = s.pool().begin().await.unwrap();
    exec(&mut *tx, BUMP, chat).await;
    let id = insert_message(&mut tx, chat).await;
    tx.commit().await.unwrap();
    let revision = revision_of(s.pool(), id).await;
    assert_eq!(revision, 2);

    // A meaningful change in a later transaction takes that transaction's snapshot.
    let mut tx = s.pool().begin().await.unwrap();
    exec(&mut *tx, BUMP, chat).await;
    exec(
        &mut *tx,
        "UPDATE chat_messages SET deleted = true WHERE id = $1",
        id,
    )
    .await;
    tx.commit().await.unwrap();
    let revision = revision_of(s.pool(), id).await;
    assert_eq!(revision, 3);
    s.finish().await;
}

#[tokio::test]
async fn t1_rejects_an_application_supplied_revision_and_chat_moves() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let other = s.chat().await;
    let err =
        sqlx::query("INSERT INTO chat_messages (chat_id, role, revision) VALUES ($1, 'user', 7)")
            .bind(chat)
            .execute(s.pool())
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("revision is maintained by the database"),
        "{err}"
    );

    let mut conn = s.pool().acquire().await.unwrap();
    let id = insert_message(&mut conn, chat).await;
    let err = sqlx::query("UPDATE chat_messages SET revision = 99 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("revision is maintained by the database"),
        "{err}"
    );
    let err = sqlx::query("UPDATE chat_messages SET chat_id = $2 WHERE id = $1")
        .bind(id)
        .bind(other)
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("chat_id cannot change"), "{err}");
    drop(conn);
    s.finish().await;
}

#[tokio::test]
async fn t1_and_t2_skip_no_op_updates() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let mut conn = s.pool().acquire().await.unwrap();
    let id = insert_message(&mut conn, chat).await;
    exec(
        &mut *conn,
        "UPDATE chats SET generation_attempt = 3 WHERE id = $1",
        chat,
    )
    .await;
    exec(&mut *conn, BUMP, chat).await;
    exec(
        &mut *conn,
        "UPDATE chat_messages SET deleted = deleted WHERE id = $1",
        id,
    )
    .await;
    let row = sqlx::query("SELECT revision FROM chat_messages WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        row.get::<i64, _>("revision"),
        1,
        "a no-op update keeps its revision"
    );
    let v = versions(s.pool(), chat).await;
    assert_eq!(
        (v.history_version, v.generation_attempt),
        (1, 3),
        "and does not touch the chat"
    );
    drop(conn);
    s.finish().await;
}

#[tokio::test]
async fn t2_history_changes_reset_the_attempt_and_the_retry_window() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    exec(
        s.pool(),
        "UPDATE chats SET generation_attempt = 4, retry_window_started_at = now() WHERE id = $1",
        chat,
    )
    .await;
    let mut tx = s.pool().begin().await.unwrap();
    exec(&mut *tx, BUMP, chat).await;
    // One statement inserting several rows (statement-level trigger).
    exec(
        &mut *tx,
        "INSERT INTO chat_messages (chat_id, role) SELECT $1, 'tool' FROM generate_series(1, 3)",
        chat,
    )
    .await;
    tx.commit().await.unwrap();
    let v = versions(s.pool(), chat).await;
    assert_eq!(
        (v.snapshot_version, v.history_version, v.generation_attempt),
        (2, 2, 0)
    );
    assert!(!v.window_open);
    s.finish().await;
}

#[tokio::test]
async fn t2_updates_count_only_rows_that_changed() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let quiet = s.chat().await;
    let mut conn = s.pool().acquire().await.unwrap();
    insert_message(&mut conn, chat).await;
    insert_message(&mut conn, quiet).await;
    for c in [chat, quiet] {
        exec(&mut *conn, BUMP, c).await;
    }
    // One statement touching both chats' rows; only `chat`'s row really changes.
    exec(
        &mut *conn,
        "UPDATE chat_messages SET deleted = (chat_id = $1)",
        chat,
    )
    .await;
    assert_eq!(versions(s.pool(), chat).await.history_version, 2);
    assert_eq!(versions(s.pool(), quiet).await.history_version, 1);
    drop(conn);
    s.finish().await;
}

#[tokio::test]
async fn t3_queue_changes_move_the_queue_version() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let pool = s.pool();
    exec(pool, BUMP, chat).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO chat_queued_messages (chat_id, content, created_by) VALUES ($1, '[]', $2) RETURNING id",
    )
    .bind(chat)
    .bind(s.user)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(versions(pool, chat).await.queue_version, 2, "insert");

    exec(pool, BUMP, chat).await;
    exec(
        pool,
        "UPDATE chat_queued_messages SET reasoning_effort = 'high' WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(
        versions(pool, chat).await.queue_version,
        2,
        "an unrelated column does not count"
    );

    exec(
        pool,
        "UPDATE chat_queued_messages SET position = position - 10 WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(versions(pool, chat).await.queue_version, 3, "position");

    exec(pool, BUMP, chat).await;
    exec(pool, "DELETE FROM chat_queued_messages WHERE id = $1", id).await;
    assert_eq!(versions(pool, chat).await.queue_version, 4, "delete");
    s.finish().await;
}

#[tokio::test]
async fn t4_retry_state_version_cannot_be_written() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let err = sqlx::query("UPDATE chats SET retry_state_version = 9 WHERE id = $1")
        .bind(chat)
        .execute(s.pool())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("retry_state_version is maintained by the database"),
        "{err}"
    );
    s.finish().await;
}

#[tokio::test]
async fn t4_retry_state_changes_are_versioned_and_cleared_by_a_new_attempt() {
    let s = Seeded::new().await;
    let chat = s.chat().await;
    let pool = s.pool();
    exec(pool, BUMP, chat).await;
    exec(
        pool,
        "UPDATE chats SET retry_state = '{\"attempt\": 1}' WHERE id = $1",
        chat,
    )
    .await;
    let v = versions(pool, chat).await;
    assert!(v.has_retry_state);
    assert_eq!(v.retry_state_version, 2);

    // Writing the same retry state again does not move the version.
    exec(pool, BUMP, chat).await;
    exec(
        pool,
        "UPDATE chats SET retry_state = '{\"attempt\": 1}' WHERE id = $1",
        chat,
    )
    .await;
    assert_eq!(versions(pool, chat).await.retry_state_version, 2);

    // A new attempt clears it (and that is a retry-state change).
    exec(
        pool,
        "UPDATE chats SET generation_attempt = generation_attempt + 1 WHERE id = $1",
        chat,
    )
    .await;
    let v = versions(pool, chat).await;
    assert!(!v.has_retry_state);
    assert_eq!(v.retry_state_version, 3);

    // So does a history change, through T2.
    exec(
        pool,
        "UPDATE chats SET retry_state = '{\"attempt\": 2}' WHERE id = $1",
        chat,
    )
    .await;
    exec(pool, BUMP, chat).await;
    let mut conn = pool.acquire().await.unwrap();
    insert_message(&mut conn, chat).await;
    drop(conn);
    let v = versions(pool, chat).await;
    assert!(!v.has_retry_state);
    assert_eq!((v.generation_attempt, v.retry_state_version), (0, 4));
    s.finish().await;
}

#[tokio::test]
async fn heartbeats_are_logged_so_leases_survive_a_database_crash() {
    let s = Seeded::new().await;
    let persistence: String = sqlx::query_scalar(
        "SELECT relpersistence::text FROM pg_class WHERE relname = 'chat_heartbeats'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(persistence, "p");
    s.pool().execute("SELECT 1").await.unwrap();
    s.finish().await;
}
