//! The fault suite: what a production deployment meets besides provider faults, injected into
//! real processes. (Provider faults, a replica killed mid-turn, a killed LISTEN connection and
//! dead agents are in the engine, stream and workspace suites.)

use std::time::Duration;

use chatd_e2e::Daemon;
use chatd_e2e::test_db::{TestDb, skip_on_sqlite};
use chatproto::chatd::v1 as pb;
use chatstore::testing::Fixtures as _;
use chattest::emulator::Emulator;

use super::chat_api::{Client, daemon_with, model};
use super::streams::{View, slow_reply};

#[tokio::test]
async fn three_replicas_starting_at_once_on_an_empty_database_migrate_it_once_and_make_one_admin() {
    if skip_on_sqlite("three replicas share one database") {
        return;
    }
    let db = super::migrate::empty_database().await;
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ];
    let (a, b, c) = tokio::join!(
        Daemon::start(&args, &[]),
        Daemon::start(&args, &[]),
        Daemon::start(&args, &[])
    );
    let replicas = [a.unwrap(), b.unwrap(), c.unwrap()];

    // Every migration applied once, successfully; every replica serves the current schema.
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .filter(|f| {
        f.as_ref()
            .unwrap()
            .path()
            .extension()
            .is_some_and(|e| e == "sql")
    })
    .count();
    assert_eq!(applied.len(), files, "{applied:?}");
    assert!(applied.iter().all(|(_, success)| *success), "{applied:?}");

    // One bootstrap admin, and one replica (the one that made it) wrote its token.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let tokens: Vec<String> = replicas
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.data_dir().join("admin-token")).ok())
        .collect();
    assert_eq!(tokens.len(), 1, "token files: {tokens:?}");

    // The token works on every replica.
    for replica in &replicas {
        let mut client = Client::new(replica, tokens[0].trim()).await;
        let listed = client
            .inner
            .list_chats(client.req(pb::ListChatsRequest::default()))
            .await;
        assert!(listed.is_ok(), "{listed:?}\n{}", replica.log());
    }
}

#[tokio::test]
async fn a_stalled_stream_client_and_one_that_leaves_mid_stream_affect_neither_the_turn_nor_others()
{
    let mut h = TestDb::create().await;
    let (slow, text) = slow_reply(100, Duration::from_millis(20));
    let emulator = Emulator::start(vec![slow]).await.unwrap();
    model(&h, &emulator).await;
    let key = h.store.fixture_token(h.user, "test", None).await.unwrap();
    let daemon = daemon_with(&mut h, &["--stream-subscriber-timeout", "1s"]).await;
    let mut client = Client::new(&daemon, &key.token).await;
    let chat = client.create("stream to three clients").await.unwrap();

    // Stalled: opens the stream and never reads it, with a flow-control window of 1 KiB, so the
    // daemon soon cannot send it anything more.
    let narrow = tonic::transport::Endpoint::from_shared(daemon.url())
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut stalled_client = Client::over(narrow, &key.token);
    let _stalled = stalled_client.stream(&chat.id, None).await.unwrap();
    // Leaving: reads a few parts, then drops the stream and its connection.
    let mut leaving_client = Client::new(&daemon, &key.token).await;
    let mut leaving = leaving_client.stream(&chat.id, None).await.unwrap();
    View::default()
        .follow(&mut leaving, "the first parts", |v| v.parts_seen >= 3)
        .await;
    drop(leaving);
    drop(leaving_client);

    // The reader sees the whole turn, every part in order, to its end.
    let mut reader = client.stream(&chat.id, None).await.unwrap();
    let mut view = View::default();
    view.follow(&mut reader, "the turn to end", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && v.assistant_texts().len() == 1
    })
    .await;
    let texts = view.assistant_texts();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].trim_end(), text.trim_end(), "{}", daemon.log());
    // One model call for this chat (a stray request from another test's engine, on a port
    // reused by this emulator, would carry another text).
    let calls = emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().as_deref() == Some("stream to three clients"))
        .count();
    assert_eq!(calls, 1, "one model call");
    h.finish().await;
}

/// Follows `chat` on `daemon` as a real client does: on a stream error it reconnects and resumes
/// after the last committed message it saw. Returns the view once `done` holds, and how many
/// times it had to reconnect.
async fn follow_resuming(
    client: &mut Client,
    chat_id: &str,
    what: &str,
    done: impl Fn(&View) -> bool,
) -> (View, usize) {
    let mut reconnects = 0;
    let mut committed = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let after = committed.keys().next_back().copied();
        let mut view = View::default();
        if let Ok(mut stream) = client.stream(chat_id, after).await {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(response))) => {
                        for event in response.events {
                            view.apply(event);
                        }
                        committed.extend(view.messages.clone());
                        let mut whole = View::default();
                        whole.messages = committed.clone();
                        whole.status = view.status;
                        if done(&whole) {
                            return (whole, reconnects);
                        }
                    }
                    Ok(Ok(None) | Err(_)) => break,
                    Err(_) => panic!("no event for 30 s waiting for {what}"),
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {reconnects} reconnects"
        );
        reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn postgresql_crashing_mid_stream_the_turn_completes_once_and_the_stream_resumes() {
    use chatd_e2e::private_pg::PrivatePostgres;
    if skip_on_sqlite("the database server restarts") {
        return;
    }
    let pg = PrivatePostgres::start(None)
        .unwrap_or_else(|why| panic!("a private PostgreSQL for this test: {why}"));
    // The reply streams for about 6 s; a second copy answers a retried call, if any.
    let (slow, text) = slow_reply(150, Duration::from_millis(40));
    let emulator = Emulator::start(vec![slow.clone(), slow]).await.unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &pg.url(""),
        "--anthropic-api-key-ref",
        "env:FAULTS_API_KEY",
        "--anthropic-base-url",
        &emulator.base_url(),
        "--anthropic-models",
        "claude-test",
        "--stream-poll-interval",
        "1s",
    ];
    let daemon = Daemon::start(&args, &[("FAULTS_API_KEY", "test-key")])
        .await
        .unwrap();
    let token = std::fs::read_to_string(daemon.data_dir().join("admin-token")).unwrap();
    let mut client = Client::new(&daemon, token.trim()).await;
    let chat = client.create("stream through a crash").await.unwrap();
    let mut stream = client.stream(&chat.id, None).await.unwrap();
    View::default()
        .follow(&mut stream, "the first parts", |v| v.parts_seen >= 10)
        .await;

    // The database crashes and comes back while the reply streams.
    let restarted = tokio::task::spawn_blocking(move || {
        let result = pg.crash_and_restart();
        (pg, result)
    });
    let (pg, result) = restarted.await.unwrap();
    result.unwrap_or_else(|e| panic!("restart: {e}\n{}", pg.log()));
    drop(stream);

    let (view, reconnects) = follow_resuming(&mut client, &chat.id, "the turn to end", |v| {
        v.status == Some(pb::ChatStatus::Waiting) && !v.assistant_texts().is_empty()
    })
    .await;
    let texts = view.assistant_texts();
    assert_eq!(
        texts.len(),
        1,
        "one reply, committed once: {texts:?}\n{}",
        daemon.log()
    );
    assert_eq!(texts[0].trim_end(), text.trim_end());
    // The lease survived the crash: the turn kept streaming, nothing was asked twice.
    let calls = emulator
        .requests()
        .iter()
        .filter(|r| r.last_user_text().as_deref() == Some("stream through a crash"))
        .count();
    assert_eq!(
        calls,
        1,
        "model calls (client reconnects: {reconnects})\n{}",
        daemon.log()
    );
    drop(pg);
}
